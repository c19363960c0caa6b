/**
 * Prisma Client 7 with `@prisma/adapter-pg`, generated from the example owners' schema
 * (`npm run prisma:generate`): it plays Project A and C (creating rows) and the routing engine
 * (reading them back through the loaders).
 */

import { PrismaPg } from "@prisma/adapter-pg";

import { PrismaClient } from "../../.prisma-client/client/client.js";

export type { PrismaClient };

export function prismaClient(databaseUrl: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
}

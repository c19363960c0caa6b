/**
 * Real PostgreSQL for the tests: a fresh database per test on the local stack's server
 * (`ROUTING_DATABASE_URL`), with Project A's and Project C's tables created exactly as
 * `prisma migrate` creates them from `deploy/prisma/example.schema.prisma`.
 */

import pg from "pg";

import { unique } from "./kafka.js";

/** The local stack's maintenance database URL; a missing stack is a failure, never a skip. */
export function serverUrl(): string {
  const url = process.env["ROUTING_DATABASE_URL"];
  if (!url) throw new Error('ROUTING_DATABASE_URL is not set: run eval "$(deploy/local/stack env)" (make ts-test does)');
  return url.replace("postgresql+asyncpg://", "postgresql://");
}

/**
 * The SQL `prisma migrate` writes for the example schema's two models: `TEXT`, `TIMESTAMP(3)`,
 * `updatedAt` NOT NULL without a default (Prisma's `@updatedAt` is set by the client, never by
 * the database), the `ExecutionRecord_requestId_key` unique index. `withFragment` adds the
 * columns of `deploy/prisma/routing-persistence.prisma` as Prisma maps them; without it these
 * are the tables as the owners had them before routing-persistence (its migration adds them).
 */
export function prismaMigrationSql(withFragment: boolean): string {
  const execution = withFragment
    ? `
    "routingSnapshot" JSONB,
    "routingSnapshotOccurredAt" TIMESTAMPTZ,
    "routingSnapshotEventId" UUID,
    "actualCost" JSONB,
    "actualCostOccurredAt" TIMESTAMPTZ,
    "actualCostEventId" UUID,`
    : "";
  const tenant = withFragment
    ? `
    "routingPolicy" JSONB,
    "routingPolicyOccurredAt" TIMESTAMPTZ,
    "routingPolicyEventId" UUID,`
    : "";
  return `
-- CreateTable
CREATE TABLE "ExecutionRecord" (
    "id" TEXT NOT NULL,
    "requestId" TEXT NOT NULL,
    "tenantId" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "model" TEXT,
    "latencyMs" INTEGER,${execution}

    CONSTRAINT "ExecutionRecord_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Tenant" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "plan" TEXT NOT NULL DEFAULT 'free',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,${tenant}

    CONSTRAINT "Tenant_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "ExecutionRecord_requestId_key" ON "ExecutionRecord"("requestId");

-- CreateIndex
CREATE INDEX "ExecutionRecord_tenantId_idx" ON "ExecutionRecord"("tenantId");

-- AddForeignKey
ALTER TABLE "ExecutionRecord" ADD CONSTRAINT "ExecutionRecord_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE SET NULL ON UPDATE CASCADE;
`;
}

/** One test's own database, dropped by {@link TestDatabase.drop}. */
export class TestDatabase {
  private constructor(
    readonly name: string,
    readonly url: string,
  ) {}

  static async create(): Promise<TestDatabase> {
    const server = serverUrl();
    const name = unique("ts_db").replaceAll("-", "_");
    await TestDatabase.admin(server, `CREATE DATABASE "${name}"`);
    const url = new URL(server);
    url.pathname = `/${name}`;
    return new TestDatabase(name, url.toString());
  }

  private static async admin(server: string, sql: string): Promise<void> {
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  }

  /** Run SQL on this database; returns the rows. */
  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<T[]> {
    const client = new pg.Client({ connectionString: this.url });
    await client.connect();
    try {
      return (await client.query<T>(sql, values)).rows;
    } finally {
      await client.end();
    }
  }

  /** Create the owners' tables as `prisma migrate` would (see {@link prismaMigrationSql}). */
  async createPrismaTables(withFragment = false): Promise<void> {
    await this.query(prismaMigrationSql(withFragment));
  }

  async drop(): Promise<void> {
    await TestDatabase.admin(serverUrl(), `DROP DATABASE IF EXISTS "${this.name}" WITH (FORCE)`);
  }
}

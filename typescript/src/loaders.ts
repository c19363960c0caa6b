/**
 * The loaders that replace B6's `loadRoutingSnapshot`, `loadActualCost` and
 * `loadTenantPolicyFromDb`, on top of the routing engine's own Prisma Client: "always validate
 * JSON on load" with the same generated schemas and rules as the publisher and the service.
 *
 * Exactness: Prisma returns a `Json` column's numbers as JS numbers, already floats (`0.1` is
 * the double nearest 0.1, a 30-digit count has lost digits). So these loaders read the column as
 * text (`"routingSnapshot"::text`, one parameterised raw query) and parse it with this package's
 * parser: every amount comes back as the exact {@link JsonNumber} the service stored. Use
 * {@link validateStoredValue} only when you already hold Prisma's parsed value; its numbers are
 * then judged as the floats they have become.
 *
 * A value that no longer matches the contract (written by an older producer, edited by hand)
 * throws {@link SchemaDriftError}; an absent row or a null value is `null`.
 */

import { EventType } from "./codes.js";
import type { ActualCost, RoutingPlanSnapshot, TenantRoutingPolicy } from "./generated/contract.js";
import { PAYLOADS } from "./generated/contract.js";
import { JsonSyntaxError, parseJson } from "./json.js";
import { toWire } from "./shape.js";
import { type Problem, checkPayload } from "./validate.js";

/**
 * The part of a Prisma Client the loaders use (any `PrismaClient`, or a transaction client):
 * a parameterised raw query. Values are bound parameters, never spliced into the SQL.
 */
export interface PrismaRawQueryClient {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
}

/** A stored value that no longer matches the contract. */
export class SchemaDriftError extends Error {
  override readonly name = "SchemaDriftError";
  constructor(
    /** `"ExecutionRecord"."routingSnapshot"`, `"Tenant"."routingPolicy"`, ... */
    readonly field: string,
    /** The row: its requestId (ExecutionRecord) or id (Tenant). */
    readonly rowKey: string,
    /** What is wrong: the service's reason code, the field inside the value, Zod's issues. */
    readonly problem: Problem | { readonly reason: "invalid_json"; readonly field: null; readonly message: string; readonly issues: readonly [] },
  ) {
    super(`${field} of ${JSON.stringify(rowKey)} no longer matches the contract: ${problem.message}`);
  }

  /** Zod's issues (empty for a broken rule or unreadable JSON). */
  get issues(): Problem["issues"] {
    return this.problem.issues;
  }
}

interface Column {
  readonly table: "ExecutionRecord" | "Tenant";
  readonly column: "routingSnapshot" | "actualCost" | "routingPolicy";
  readonly key: "requestId" | "id";
  readonly type: EventType;
}

const SNAPSHOT: Column = { table: "ExecutionRecord", column: "routingSnapshot", key: "requestId", type: EventType.SNAPSHOT };
const COST: Column = { table: "ExecutionRecord", column: "actualCost", key: "requestId", type: EventType.COST };
const POLICY: Column = { table: "Tenant", column: "routingPolicy", key: "id", type: EventType.POLICY };

async function load(prisma: PrismaRawQueryClient, spec: Column, rowKey: string): Promise<unknown> {
  // Identifiers are constants of this module; the key is a bound parameter.
  const tenant = spec.table === "Tenant" ? `"id"` : `"tenantId"`;
  const rows = await prisma.$queryRawUnsafe<{ value: string | null; tenant: string | null }[]>(
    `SELECT "${spec.column}"::text AS value, ${tenant} AS tenant FROM "${spec.table}" WHERE "${spec.key}" = $1`,
    rowKey,
  );
  const row = rows[0];
  if (row === undefined || row.value === null) return null;
  const field = `"${spec.table}"."${spec.column}"`;
  let value;
  try {
    value = parseJson(row.value);
  } catch (error) {
    if (!(error instanceof JsonSyntaxError)) throw error;
    throw new SchemaDriftError(field, rowKey, { reason: "invalid_json", field: null, message: error.message, issues: [] });
  }
  if (value === null) return null; // a JSON null stored in the column: no value either
  // The row's tenant (null on an ExecutionRecord accepts any tenant, CONTRACT §3).
  const problem = checkPayload(spec.type, value, row.tenant ?? undefined, spec.column);
  if (problem !== null) throw new SchemaDriftError(field, rowKey, problem);
  return value;
}

/** B6's `loadRoutingSnapshot`: the validated snapshot of `requestId`, or null. */
export async function loadRoutingSnapshot(prisma: PrismaRawQueryClient, requestId: string): Promise<RoutingPlanSnapshot | null> {
  return (await load(prisma, SNAPSHOT, requestId)) as RoutingPlanSnapshot | null;
}

/** B6's `loadActualCost`: the validated cost of `requestId`, or null. */
export async function loadActualCost(prisma: PrismaRawQueryClient, requestId: string): Promise<ActualCost | null> {
  return (await load(prisma, COST, requestId)) as ActualCost | null;
}

/** B6's `loadTenantPolicyFromDb`: the validated policy of `tenantId`, or null. */
export async function loadTenantPolicyFromDb(prisma: PrismaRawQueryClient, tenantId: string): Promise<TenantRoutingPolicy | null> {
  return (await load(prisma, POLICY, tenantId)) as TenantRoutingPolicy | null;
}

/**
 * Validate a value Prisma already parsed (`record.routingSnapshot` from `findUnique`): numbers
 * are converted from the floats Prisma made of them (so exactness is whatever survived that).
 * Returns the contract value or throws {@link SchemaDriftError}; `null`/`undefined` give null.
 */
export function validateStoredValue(
  type: EventType,
  value: unknown,
  where: { readonly field: string; readonly rowKey: string; readonly tenantId?: string },
): RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy | null {
  if (value === null || value === undefined) return null;
  let wire;
  try {
    wire = toWire(value, PAYLOADS[type].shape, "");
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new SchemaDriftError(where.field, where.rowKey, { reason: "invalid_json", field: null, message, issues: [] });
  }
  const problem = checkPayload(type, wire, where.tenantId, where.field);
  if (problem !== null) throw new SchemaDriftError(where.field, where.rowKey, problem);
  return wire as unknown as RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy;
}

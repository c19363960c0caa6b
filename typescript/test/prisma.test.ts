/**
 * The Prisma side of the schema: the fragment and the example owners' schema pass Prisma 7's own
 * offline tooling, and the columns the fragment declares are exactly those the service's
 * migration creates, so the owners' `prisma migrate` finds nothing to drop or alter.
 */

import assert from "node:assert/strict";
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { CLIENT_DIR, EXAMPLE, FRAGMENT, fragmentBlocks, prisma } from "../scripts/prisma-client.js";
import { TestDatabase } from "./helpers/database.js";
import { migrate } from "./helpers/service.js";

const SERVICE_COLUMNS = {
  ExecutionRecord: [
    "routingSnapshot",
    "routingSnapshotOccurredAt",
    "routingSnapshotEventId",
    "actualCost",
    "actualCostOccurredAt",
    "actualCostEventId",
  ],
  Tenant: ["routingPolicy", "routingPolicyOccurredAt", "routingPolicyEventId"],
};

test("prisma validate accepts the fragment and the example schema", () => {
  for (const schema of [FRAGMENT, EXAMPLE]) assert.match(prisma("validate", "--schema", schema), /is valid/);
});

test("prisma format leaves the fragment and the example schema unchanged", () => {
  for (const schema of [FRAGMENT, EXAMPLE]) {
    const copy = join(CLIENT_DIR, `format-check-${schema.endsWith("example.schema.prisma") ? "example" : "fragment"}.prisma`);
    copyFileSync(schema, copy);
    prisma("format", "--schema", copy);
    assert.equal(readFileSync(copy, "utf8"), readFileSync(schema, "utf8"), `prisma format changes ${schema}`);
  }
});

test("the fragment declares exactly the service's columns, and the example holds it verbatim", () => {
  const blocks = fragmentBlocks(readFileSync(FRAGMENT, "utf8"));
  assert.deepEqual([...blocks.keys()], ["ExecutionRecord", "Tenant"]);
  const example = readFileSync(EXAMPLE, "utf8");
  for (const [model, block] of blocks) {
    const fields = [...block.matchAll(/^ {2}(\w+) /gm)].map((m) => m[1]);
    assert.deepEqual(fields, SERVICE_COLUMNS[model as keyof typeof SERVICE_COLUMNS]);
    assert.ok(example.includes(block), `example.schema.prisma holds the ${model} block`);
  }
  assert.ok(existsSync(join(CLIENT_DIR, "client", "client.ts")), "npm run prisma:generate made the client");
});

type Column = {
  table: string;
  column: string;
  type: string;
  datetime_precision: number | null;
  nullable: string;
  default: string | null;
};

/**
 * Each column as PostgreSQL's catalog has it (`format_type`: the exact type, precision included)
 * and as Prisma's schema engine reads it when it diffs a database against a schema (its
 * PostgreSQL describer takes `datetime_precision` and nullability and the default from
 * `information_schema.columns`).
 */
async function columns(db: TestDatabase): Promise<Column[]> {
  return db.query<Column>(
    `SELECT c.table_name AS table, c.column_name AS column, format_type(a.atttypid, a.atttypmod) AS type,
            c.datetime_precision, c.is_nullable AS nullable, c.column_default AS default
       FROM information_schema.columns c
       JOIN pg_attribute a ON a.attrelid = format('%I', c.table_name)::regclass AND a.attname = c.column_name
      WHERE c.table_schema = 'public' AND c.table_name IN ('ExecutionRecord', 'Tenant')
      ORDER BY 1, 2`,
  );
}

// Prisma's own diff (not runnable here: it needs the schema-engine binary) reads these columns
// back as Timestamptz(6) (information_schema's datetime_precision) and treats a schema's
// @db.Timestamptz (no argument) as equal to any precision, so it plans no change either way.
test("the service's migration creates the fragment's columns exactly as Prisma maps them", async () => {
  // The owners' tables before routing-persistence, then its migration ...
  const migrated = await TestDatabase.create();
  // ... against the tables prisma migrate makes from the schema with the fragment pasted in.
  const withFragment = await TestDatabase.create();
  try {
    await migrated.createPrismaTables(false);
    await migrate(migrated.url);
    await withFragment.createPrismaTables(true);
    const prismaColumns = await columns(withFragment);
    assert.deepEqual(await columns(migrated), prismaColumns);
    const types = Object.fromEntries(prismaColumns.map((c) => [`${c.table}.${c.column}`, `${c.type} ${c.nullable}`]));
    assert.equal(types["ExecutionRecord.routingSnapshot"], "jsonb YES");
    assert.equal(types["ExecutionRecord.routingSnapshotOccurredAt"], "timestamp with time zone YES");
    assert.equal(types["Tenant.routingPolicyEventId"], "uuid YES");
    assert.equal(types["ExecutionRecord.updatedAt"], "timestamp(3) without time zone NO");
    // And on tables that already have the columns (owners who pasted the fragment first), the
    // service's migration changes nothing.
    await migrate(withFragment.url);
    assert.deepEqual(await columns(withFragment), prismaColumns);
  } finally {
    await migrated.drop();
    await withFragment.drop();
  }
});

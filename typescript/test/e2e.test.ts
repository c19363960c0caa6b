/**
 * End to end, with real services only: the owners' tables as `prisma migrate` creates them, then
 * `routing-persistence migrate`; Project A and C create their rows with Prisma Client; the
 * TypeScript publisher sends events of all three types to Kafka; the real `routing-persistence
 * run` applies them; the loaders read them back through Prisma Client 7 + adapter-pg, equal to
 * what was sent, decimals included.
 *
 * Here the rows are created before publishing; test/held.test.ts publishes before they exist
 * (the service holds the events until Project A creates the rows).
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  type ActualCostInput,
  JsonNumber,
  type JsonValue,
  type RoutingPlanSnapshotInput,
  RoutingEventPublisher,
  type TenantRoutingPolicyInput,
} from "../src/index.js";
import { SchemaDriftError, loadActualCost, loadRoutingSnapshot, loadTenantPolicyFromDb } from "../src/index.js";
import { compareDecimals, toDecimal } from "../src/decimal.js";
import { toWire } from "../src/shape.js";
import { PAYLOADS } from "../src/generated/contract.js";
import { TestDatabase } from "./helpers/database.js";
import { type Topics, freshTopics, kafkaBootstrap } from "./helpers/kafka.js";
import { type PrismaClient, prismaClient } from "./helpers/prisma.js";
import { RunningService, migrate } from "./helpers/service.js";

const bootstrap = kafkaBootstrap();
let db: TestDatabase;
let topics: Topics;
let prisma: PrismaClient;
let service: RunningService;

before(async () => {
  db = await TestDatabase.create();
  await db.createPrismaTables();
  await migrate(db.url);
  topics = await freshTopics(bootstrap);
  service = await RunningService.start({ bootstrap, databaseUrl: db.url, topics });
  prisma = prismaClient(db.url);
});

after(async () => {
  await prisma?.$disconnect();
  const code = await service?.stop();
  await db?.drop();
  assert.equal(code, 0, "routing-persistence run exits 0 on SIGTERM");
});

/** Same JSON: numbers equal as exact decimals (jsonb writes 1E+3 as 1000), key order aside. */
function assertSameJson(actual: unknown, expected: JsonValue, path = "payload"): void {
  if (expected instanceof JsonNumber) {
    assert.ok(actual instanceof JsonNumber, `${path}: ${String(actual)} is not a JSON number`);
    assert.equal(compareDecimals(toDecimal(actual), toDecimal(expected)), 0, `${path}: ${actual.literal} != ${expected.literal}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual) && actual.length === expected.length, `${path}: arrays differ`);
    expected.forEach((item, i) => assertSameJson((actual as unknown[])[i], item, `${path}[${i}]`));
  } else if (expected !== null && typeof expected === "object") {
    assert.ok(actual !== null && typeof actual === "object", `${path}: not an object`);
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${path}: keys differ`);
    for (const [key, value] of Object.entries(expected)) assertSameJson((actual as Record<string, unknown>)[key], value, `${path}.${key}`);
  } else {
    assert.equal(actual, expected, path);
  }
}

async function eventually<T>(read: () => Promise<T | null>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`${what} not there after ${timeoutMs} ms; service log:\n${service.log}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test("published events land in Prisma's tables and load back equal, decimals exact", async () => {
  // Project C creates its tenant, Project A its execution records (as at request time).
  const tenantId = "tenant-東京-😀";
  await prisma.tenant.create({ data: { id: tenantId, name: "Tokyo" } });
  const requests = ["req-e2e-1", "req-e2e-2", "req-e2e-3"];
  const created = new Map<string, Date>();
  for (const requestId of requests) {
    const row = await prisma.executionRecord.create({ data: { requestId, tenantId } });
    created.set(requestId, row.updatedAt);
  }

  const failures: unknown[] = [];
  const publisher = new RoutingEventPublisher({
    bootstrapServers: bootstrap,
    topics: { "routing.snapshot": topics.snapshots, "routing.cost": topics.costs, "tenant.policy": topics.policies },
    onDeliveryFailure: (failure) => failures.push(failure),
  });
  const snapshots = new Map<string, RoutingPlanSnapshotInput>();
  const costs = new Map<string, ActualCostInput>();
  const eventIds = new Map<string, string>();
  try {
    for (const [i, requestId] of requests.entries()) {
      const snapshot: RoutingPlanSnapshotInput = {
        snapshotId: `snap-${i}`,
        strategy: "cost-optimized",
        resolvedAlias: "fast-chat",
        candidateCount: 3,
        timestamp: new Date(Date.UTC(2026, 0, 31, 12, 0, i)),
        costEstimate: { totalCostUsd: "0.0042", breakdown: { inputUsd: "0.0012", outputUsd: 0.003 } },
        tenantId,
        primary: { provider: "openai", model: "gpt-4o-mini" },
        fallbacks: [
          { provider: "anthropic", model: "claude-3-5-haiku", note: "é\u0301 組合せ" },
          { provider: "google", model: "gemini-1.5-flash" },
        ],
        experiment: { arm: "b", weights: ["0.25", 0.75] },
      };
      const cost: ActualCostInput = {
        inputTokens: 1200 + i,
        outputTokens: "123456789012345678901234567890",
        inputCostUsd: "12345678901234567890.123456789012345678901234567890",
        outputCostUsd: "0.1",
        totalCostUsd: "12345678901234567890.223456789012345678901234567890",
        provider: "openai",
        cachedTokens: 0,
      };
      snapshots.set(requestId, snapshot);
      costs.set(requestId, cost);
      eventIds.set(`snapshot:${requestId}`, (await publisher.persistRoutingSnapshot(requestId, snapshot)).eventId);
      eventIds.set(`cost:${requestId}`, (await publisher.persistActualCost(requestId, cost, { tenantId })).eventId);
    }
    const policy: TenantRoutingPolicyInput = {
      tenantId,
      allowedProviders: ["openai", "anthropic"],
      deniedProviders: ["mistral"],
      preferredProvider: "openai",
      maxCostPerRequestUsd: "1E+3",
      defaultStrategy: "cost-optimized",
      limits: { perMinute: 60 },
    };
    eventIds.set("policy", (await publisher.saveTenantPolicy(policy)).eventId);

    for (const requestId of requests) {
      const snapshot = await eventually(() => loadRoutingSnapshot(prisma, requestId), `snapshot of ${requestId}`);
      assertSameJson(snapshot, toWire(snapshots.get(requestId), PAYLOADS["routing.snapshot"].shape, "payload"));
      const cost = await eventually(() => loadActualCost(prisma, requestId), `cost of ${requestId}`);
      assertSameJson(cost, toWire(costs.get(requestId), PAYLOADS["routing.cost"].shape, "payload"));
      // Exact, as stored: not the float Prisma's own Json field would give.
      assert.equal(cost.inputCostUsd.literal, "12345678901234567890.123456789012345678901234567890");
      assert.equal(cost.outputTokens.toBigInt(), 123456789012345678901234567890n);

      // Prisma Client reads the row; the service wrote only its own columns.
      const row = await prisma.executionRecord.findUniqueOrThrow({ where: { requestId } });
      assert.equal(row.status, "pending");
      assert.equal(row.tenantId, tenantId);
      assert.deepEqual(row.updatedAt, created.get(requestId));
      assert.equal(row.routingSnapshotEventId, eventIds.get(`snapshot:${requestId}`));
      assert.equal(row.actualCostEventId, eventIds.get(`cost:${requestId}`));
      assert.ok(row.routingSnapshotOccurredAt instanceof Date && row.actualCostOccurredAt instanceof Date);
    }
    const loadedPolicy = await eventually(() => loadTenantPolicyFromDb(prisma, tenantId), "the policy");
    assertSameJson(loadedPolicy, toWire(policy, PAYLOADS["tenant.policy"].shape, "payload"));
    const tenant = await prisma.tenant.findUniqueOrThrow({ where: { id: tenantId } });
    assert.equal(tenant.name, "Tokyo");
    assert.equal(tenant.routingPolicyEventId, eventIds.get("policy"));

    // Every event applied (the prefix form of this check matched no line: labels come first).
    assert.equal(await service.metricSum("routing_consumer_events_total", { outcome: "dead_lettered" }), 0);
    assert.equal(await service.metricSum("routing_consumer_events_total", { outcome: "applied" }), 7);
    assert.deepEqual(failures, []);
  } finally {
    await publisher.close(5000);
  }
  assert.deepEqual(publisher.counters, { delivered: 7, failed: 0, dropped: 0, buffered: 0 });
});

test("loaders: null for an absent row or value, SchemaDriftError for a stored value that drifted", async () => {
  assert.equal(await loadRoutingSnapshot(prisma, "no-such-request"), null);
  assert.equal(await loadTenantPolicyFromDb(prisma, "no-such-tenant"), null);
  await prisma.tenant.create({ data: { id: "tenant-drift", name: "Drift" } });
  await prisma.executionRecord.create({ data: { requestId: "req-drift", tenantId: "tenant-drift" } });
  assert.equal(await loadActualCost(prisma, "req-drift"), null);

  // Written behind the contract's back (an old producer, a hand edit): a total that no
  // longer adds up, a count stored as a string.
  await prisma.$executeRawUnsafe(
    `UPDATE "ExecutionRecord" SET "actualCost" = $1::jsonb, "routingSnapshot" = $2::jsonb WHERE "requestId" = 'req-drift'`,
    '{"inputTokens":1,"outputTokens":2,"inputCostUsd":0.1,"outputCostUsd":0.2,"totalCostUsd":0.31,"provider":"x"}',
    '{"snapshotId":"s","strategy":"s","resolvedAlias":"a","candidateCount":"3","timestamp":"2026-01-31T12:00:00Z","costEstimate":{"totalCostUsd":0},"tenantId":"tenant-drift","primary":{"provider":"p","model":"m"},"fallbacks":[]}',
  );
  await assert.rejects(loadActualCost(prisma, "req-drift"), (error: unknown) => {
    assert.ok(error instanceof SchemaDriftError);
    assert.equal(error.field, '"ExecutionRecord"."actualCost"');
    assert.equal(error.rowKey, "req-drift");
    assert.equal(error.problem.reason, "rule_violation");
    assert.equal(error.problem.field, "actualCost.totalCostUsd");
    return true;
  });
  await assert.rejects(loadRoutingSnapshot(prisma, "req-drift"), (error: unknown) => {
    assert.ok(error instanceof SchemaDriftError);
    assert.equal(error.problem.reason, "schema_violation");
    assert.equal(error.problem.field, "routingSnapshot.candidateCount");
    assert.equal(error.issues.length, 1);
    assert.deepEqual(error.issues[0]?.path, ["candidateCount"]);
    return true;
  });
  // A policy stored under another tenant's row breaks tenant isolation: drift too.
  await prisma.$executeRawUnsafe(
    `UPDATE "Tenant" SET "routingPolicy" = $1::jsonb WHERE "id" = 'tenant-drift'`,
    '{"tenantId":"someone-else","allowedProviders":[],"deniedProviders":[],"preferredProvider":null,"maxCostPerRequestUsd":null,"defaultStrategy":"s"}',
  );
  await assert.rejects(loadTenantPolicyFromDb(prisma, "tenant-drift"), (error: unknown) => {
    assert.ok(error instanceof SchemaDriftError && error.problem.reason === "rule_violation");
    assert.equal(error.problem.field, "routingPolicy.tenantId");
    return true;
  });
});

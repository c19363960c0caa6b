/**
 * Rows that do not exist yet (issue 14), with a real Prisma Client 7 and the real service:
 * Project A's tables exactly as `prisma migrate` creates them (`updatedAt` NOT NULL without a
 * default, `TIMESTAMP(3)`, `TEXT`), the routing engine publishing before Project A has created
 * its rows, and Project A then creating them with `prisma.executionRecord.create`.
 *
 * The service (ROUTING_MISSING_ROW_POLICY=park, the default) holds those snapshots and costs and
 * writes them once the rows exist: no dead letter, Project A's `create` never fails (no P2002:
 * the service never created the row first), the fields land within seconds, Prisma Client reads
 * every row and the Zod validators accept every stored value. With a TTL of a few seconds, held
 * fields whose row never comes are dead-lettered as `row_missing` with their original bytes.
 */

import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  type ActualCostInput,
  ActualCostSchema,
  type RoutingPlanSnapshotInput,
  RoutingEventPublisher,
  RoutingPlanSnapshotSchema,
  loadActualCost,
  loadRoutingSnapshot,
  validateStoredValue,
} from "../src/index.js";
import { TestDatabase } from "./helpers/database.js";
import { type Topics, freshTopics, kafkaBootstrap, readRecords } from "./helpers/kafka.js";
import { type PrismaClient, prismaClient } from "./helpers/prisma.js";
import { RunningService, migrate } from "./helpers/service.js";

const bootstrap = kafkaBootstrap();
const cleanups: (() => Promise<unknown>)[] = [];

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Setup {
  readonly db: TestDatabase;
  readonly topics: Topics;
  readonly service: RunningService;
  readonly prisma: PrismaClient;
  readonly publisher: RoutingEventPublisher;
}

/** A database with Prisma's tables, migrated; fresh topics; the service; a publisher. */
async function setUp(env: Record<string, string> = {}): Promise<Setup> {
  const db = await TestDatabase.create();
  cleanups.push(() => db.drop());
  await db.createPrismaTables();
  await migrate(db.url);
  const topics = await freshTopics(bootstrap);
  const service = await RunningService.start({ bootstrap, databaseUrl: db.url, topics, env: { ROUTING_HELD_RELEASE_INTERVAL_S: "0.5", ROUTING_LAG_REFRESH_INTERVAL_S: "0.5", ...env } });
  cleanups.push(async () => assert.equal(await service.stop(), 0, "routing-persistence run exits 0 on SIGTERM"));
  const prisma = prismaClient(db.url);
  cleanups.push(() => prisma.$disconnect());
  const publisher = new RoutingEventPublisher({
    bootstrapServers: bootstrap,
    topics: { "routing.snapshot": topics.snapshots, "routing.cost": topics.costs, "tenant.policy": topics.policies },
  });
  cleanups.push(() => publisher.close(5000));
  return { db, topics, service, prisma, publisher };
}

async function eventually<T>(read: () => Promise<T | null>, what: string, service: RunningService, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`${what} not there after ${timeoutMs} ms; service log:\n${service.log}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function snapshotOf(i: number, tenantId: string, alias = "fast-chat"): RoutingPlanSnapshotInput {
  return {
    snapshotId: `snap-held-${i}`,
    strategy: "cost-optimized",
    resolvedAlias: alias,
    candidateCount: 2,
    timestamp: new Date(Date.UTC(2026, 0, 31, 12, 0, i)),
    costEstimate: { totalCostUsd: "0.0042" },
    tenantId,
    primary: { provider: "openai", model: "gpt-4o-mini" },
    fallbacks: [{ provider: "anthropic", model: "claude-3-5-haiku" }],
  };
}

function costOf(i: number): ActualCostInput {
  return {
    inputTokens: 1000 + i,
    outputTokens: 20,
    inputCostUsd: "0.0012",
    outputCostUsd: "0.00003",
    totalCostUsd: "0.00123",
    provider: "openai",
  };
}

test("events published before Project A creates its rows land once Prisma Client creates them", async () => {
  const { service, prisma, publisher } = await setUp();
  const tenantId = "tenant-held";
  await prisma.tenant.create({ data: { id: tenantId, name: "Held" } });
  const requests = Array.from({ length: 6 }, (_, i) => `req-held-${i}`);
  const eventIds = new Map<string, string>();
  for (const [i, requestId] of requests.entries()) {
    // An older version first, then the newest: the newest must be the one stored.
    await publisher.persistRoutingSnapshot(requestId, snapshotOf(i, tenantId, "older"), { occurredAt: new Date(Date.UTC(2026, 0, 31, 11, 0, i)) });
    eventIds.set(`snapshot:${requestId}`, (await publisher.persistRoutingSnapshot(requestId, snapshotOf(i, tenantId))).eventId);
    eventIds.set(`cost:${requestId}`, (await publisher.persistActualCost(requestId, costOf(i), { tenantId })).eventId);
  }
  const sent = 3 * requests.length;
  await eventually(async () => ((await service.metricSum("routing_consumer_events_total", { outcome: "held" })) === sent ? true : null), `${sent} events held`, service);
  assert.equal(await prisma.executionRecord.count(), 0, "the service created no row");

  // Project A creates its rows, with Prisma's own defaults (cuid id, @updatedAt): never a P2002.
  const createdAt = Date.now();
  for (const requestId of requests) await prisma.executionRecord.create({ data: { requestId, tenantId } });

  for (const requestId of requests) {
    const snapshot = await eventually(() => loadRoutingSnapshot(prisma, requestId), `snapshot of ${requestId}`, service);
    assert.equal(snapshot.resolvedAlias, "fast-chat");
    const cost = await eventually(() => loadActualCost(prisma, requestId), `cost of ${requestId}`, service);
    assert.equal(cost.totalCostUsd.literal, "0.00123");
  }
  const landedMs = Date.now() - createdAt;
  assert.ok(landedMs < 15_000, `the fields landed ${landedMs} ms after the rows appeared`);

  // Prisma Client reads every row; Project A's columns are its own; Zod accepts every value.
  const rows = await prisma.executionRecord.findMany({ where: { tenantId }, orderBy: { requestId: "asc" } });
  assert.deepEqual(
    rows.map((r) => r.requestId),
    [...requests].sort(),
  );
  for (const row of rows) {
    assert.equal(row.status, "pending");
    assert.match(row.id, /^c[a-z0-9]{20,}$/, "Prisma's cuid, not an id the service made");
    assert.equal(row.routingSnapshotEventId, eventIds.get(`snapshot:${row.requestId}`));
    assert.equal(row.actualCostEventId, eventIds.get(`cost:${row.requestId}`));
    RoutingPlanSnapshotSchema.parse(validateStoredValue("routing.snapshot", row.routingSnapshot, { field: "routingSnapshot", rowKey: row.requestId, tenantId }));
    ActualCostSchema.parse(validateStoredValue("routing.cost", row.actualCost, { field: "actualCost", rowKey: row.requestId }));
  }

  // Nothing dead-lettered; everything held was released; nothing is held any more.
  assert.equal(await service.metricSum("routing_consumer_events_total", { outcome: "dead_lettered" }), 0);
  assert.equal(await service.metricSum("routing_consumer_dead_letters_total"), 0);
  assert.equal(await service.metricSum("routing_consumer_released_total"), sent);
  await eventually(async () => ((await service.metricSum("routing_consumer_held_fields")) === 0 ? true : null), "the held gauge at 0", service);
});

test("held fields whose row never appears are dead-lettered as row_missing after the TTL", async () => {
  const { topics, service, prisma, publisher } = await setUp({ ROUTING_MISSING_ROW_TTL: "3s" });
  const tenantId = "tenant-ttl";
  const snapshot = await publisher.persistRoutingSnapshot("req-never", snapshotOf(1, tenantId));
  const cost = await publisher.persistActualCost("req-never", costOf(1), { tenantId });

  const letters = await readRecords(bootstrap, [topics.dlq], 2, 60_000);
  const byEvent = new Map(letters.map((letter) => [JSON.parse(letter.value.toString()).eventId as string, letter]));
  for (const [sentEvent, topic] of [
    [snapshot, topics.snapshots],
    [cost, topics.costs],
  ] as const) {
    const letter = byEvent.get(sentEvent.eventId);
    assert.ok(letter, `a dead letter for ${sentEvent.eventId}`);
    assert.equal(letter.key, "req-never");
    assert.equal(letter.headers.get("dlq.reason"), "row_missing");
    assert.equal(letter.headers.get("dlq.topic"), topic);
    assert.match(letter.headers.get("dlq.error") ?? "", /ROUTING_MISSING_ROW_TTL/);
    assert.ok(letter.headers.has("dlq.offset") && letter.headers.has("dlq.timestamp"));
  }
  assert.equal(await service.metricSum("routing_consumer_dead_letters_total", { reason: "row_missing" }), 2);
  assert.equal(await prisma.executionRecord.count(), 0, "no row was created");
});

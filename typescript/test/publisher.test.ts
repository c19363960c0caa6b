/**
 * The publisher against the local Kafka broker: what it sends is the contract's event, byte for
 * byte as the service decodes it, and an invalid event never leaves the caller.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { InvalidEventError, JsonNumber, RoutingEventPublisher, decodeEvent, type DeliveryFailure } from "../src/index.js";
import { type Topics, freshTopics, kafkaBootstrap, readRecords } from "./helpers/kafka.js";

const bootstrap = kafkaBootstrap();
let topics: Topics;
let publisher: RoutingEventPublisher;
const failures: DeliveryFailure[] = [];

before(async () => {
  topics = await freshTopics(bootstrap);
  publisher = new RoutingEventPublisher({
    bootstrapServers: bootstrap,
    topics: { "routing.snapshot": topics.snapshots, "routing.cost": topics.costs, "tenant.policy": topics.policies },
    onDeliveryFailure: (failure) => failures.push(failure),
  });
});

after(async () => {
  await publisher.close(5000);
});

const snapshot = {
  snapshotId: "snap-1",
  strategy: "cost-optimized",
  resolvedAlias: "fast-chat",
  candidateCount: 3,
  timestamp: new Date("2026-01-31T12:00:00.123Z"),
  costEstimate: { totalCostUsd: "0.0042", currency: "USD" },
  tenantId: "tenant-ü-😀",
  primary: { provider: "openai", model: "gpt-4o-mini", region: { name: "eu" } },
  fallbacks: [{ provider: "anthropic", model: "claude-3-5-haiku" }],
  experiment: { arm: "b", weight: 0.25 },
};

test("each event reaches its topic with its key, as the service decodes it, money exact", async () => {
  const sent = [
    await publisher.persistRoutingSnapshot("req-1", snapshot),
    await publisher.persistActualCost(
      "req-1",
      {
        inputTokens: 1200n,
        outputTokens: "123456789012345678901234567890",
        inputCostUsd: "0.1",
        outputCostUsd: 0.2,
        totalCostUsd: new JsonNumber("0.30"),
        provider: "openai",
      },
      { tenantId: "tenant-ü-😀" },
    ),
    await publisher.saveTenantPolicy({
      tenantId: "tenant-ü-😀",
      allowedProviders: ["openai"],
      deniedProviders: [],
      preferredProvider: null,
      maxCostPerRequestUsd: "1E+400",
      defaultStrategy: "cost-optimized",
    }),
  ];
  assert.deepEqual(
    sent.map((s) => [s.topic, s.key, s.accepted]),
    [
      [topics.snapshots, "req-1", true],
      [topics.costs, "req-1", true],
      [topics.policies, "tenant-ü-😀", true],
    ],
  );
  const records = await readRecords(bootstrap, [topics.snapshots, topics.costs, topics.policies], 3);
  const byTopic = new Map(records.map((r) => [r.topic, r]));

  const snap = decodeEvent(byTopic.get(topics.snapshots)!.value);
  assert.ok(snap.ok && snap.type === "routing.snapshot", JSON.stringify(snap));
  assert.equal(byTopic.get(topics.snapshots)!.key, "req-1");
  assert.equal(snap.eventId, sent[0]!.eventId);
  assert.equal(snap.requestId, "req-1");
  assert.equal(snap.payload.timestamp, "2026-01-31T12:00:00.123000Z");
  assert.equal(snap.payload.costEstimate.totalCostUsd.literal, "0.0042");
  assert.deepEqual(snap.payload["experiment"], Object.assign(Object.create(null), { arm: "b", weight: new JsonNumber("0.25") }));
  assert.match(snap.occurredAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

  const costRecord = byTopic.get(topics.costs)!;
  const cost = decodeEvent(costRecord.value);
  assert.ok(cost.ok && cost.type === "routing.cost");
  assert.equal(cost.tenantId, "tenant-ü-😀");
  // The exact literals on the wire: never a float's neighbour, never rounded.
  const text = costRecord.value.toString("utf8");
  for (const literal of ['"inputCostUsd":0.1,', '"outputCostUsd":0.2,', '"totalCostUsd":0.30,', '"outputTokens":123456789012345678901234567890,']) {
    assert.ok(text.includes(literal), `${literal} in ${text}`);
  }

  const policy = decodeEvent(byTopic.get(topics.policies)!.value);
  assert.ok(policy.ok && policy.type === "tenant.policy");
  assert.equal(policy.payload.maxCostPerRequestUsd?.literal, "1E+400");
  assert.equal(policy.requestId, null);

  assert.deepEqual(publisher.counters, { delivered: 3, failed: 0, dropped: 0, buffered: 0 });
  assert.deepEqual(failures, []);
});

test("an invalid event is refused synchronously at the caller, field and reason named, nothing queued", () => {
  const before = publisher.counters;
  const cost = { inputTokens: 1, outputTokens: 2, inputCostUsd: "0.1", outputCostUsd: "0.2", totalCostUsd: "0.3", provider: "x" };
  const cases: [() => unknown, string, string][] = [
    [() => publisher.persistActualCost("req-2", { ...cost, outputTokens: -1 }, { tenantId: "t" }), "schema_violation", "payload.outputTokens"],
    [() => publisher.persistActualCost("req-2", { ...cost, totalCostUsd: "0.31" }, { tenantId: "t" }), "rule_violation", "payload.totalCostUsd"],
    [() => publisher.persistActualCost("req-2", { ...cost, inputTokens: 1.5 }, { tenantId: "t" }), "schema_violation", "payload.inputTokens"],
    [() => publisher.persistActualCost("req-2", { ...cost, inputCostUsd: "ten cents" }, { tenantId: "t" }), "schema_violation", "payload.inputCostUsd"],
    [() => publisher.persistActualCost("req-2", { ...cost, inputTokens: 2 ** 60 }, { tenantId: "t" }), "schema_violation", "payload.inputTokens"],
    [() => publisher.persistActualCost("", cost, { tenantId: "t" }), "schema_violation", "requestId"],
    [() => publisher.persistActualCost("req-2", cost, { tenantId: "t".repeat(129) }), "schema_violation", "tenantId"],
    [() => publisher.persistRoutingSnapshot("req-2", { ...snapshot, candidateCount: 1 }), "rule_violation", "payload.fallbacks"],
    [() => publisher.persistRoutingSnapshot("req-2", { ...snapshot, timestamp: "2026-02-30T00:00:00Z" }), "schema_violation", "payload.timestamp"],
    [
      () =>
        publisher.saveTenantPolicy({
          tenantId: "t",
          allowedProviders: ["a"],
          deniedProviders: ["a"],
          preferredProvider: null,
          maxCostPerRequestUsd: null,
          defaultStrategy: "s",
        }),
      "rule_violation",
      "payload.deniedProviders",
    ],
    [() => publisher.persistActualCost("req-2", { ...cost, note: "\ud800" }, { tenantId: "t" }), "invalid_json", ""],
  ];
  for (const [call, reason, field] of cases) {
    assert.throws(call, (error: unknown) => {
      assert.ok(error instanceof InvalidEventError, String(error));
      assert.equal(error.reason, reason, error.message);
      assert.equal(error.field ?? "", field, error.message);
      return true;
    });
  }
  assert.deepEqual(publisher.counters, before);
});

test("occurredAt is RFC 3339 with microseconds and strictly increases within a publisher", () => {
  const cost = { inputTokens: 1, outputTokens: 2, inputCostUsd: 0, outputCostUsd: 0, totalCostUsd: 0, provider: "x" };
  const times = Array.from({ length: 50 }, () => publisher.prepare("routing.cost", cost, "t", "r", {}).occurredAt);
  for (let i = 1; i < times.length; i++) assert.ok(times[i]! > times[i - 1]!, `${times[i]} after ${times[i - 1]}`);
  assert.equal(publisher.prepare("routing.cost", cost, "t", "r", { occurredAt: "2026-01-31T12:00:00+05:30" }).occurredAt, "2026-01-31T12:00:00+05:30");
});

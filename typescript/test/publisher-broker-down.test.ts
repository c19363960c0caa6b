/**
 * The request path when Kafka is gone: a private broker is stopped under a running publisher.
 * Every `persist*` call still resolves (never throws), the buffer holds at most its bound, the
 * overflow is dropped and reported, the buffered events fail for good after their delivery
 * timeout, and the publisher delivers again once the broker is back. How long each `await`
 * took is printed as a diagnostic (a measurement, not an assertion).
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { type DeliveryFailure, RoutingEventPublisher } from "../src/index.js";
import { createTopics, unique } from "./helpers/kafka.js";
import { PrivateStack } from "./helpers/stack.js";

const BUFFER = 50;
const CALLS = 400;
let stack: PrivateStack;

before(async () => {
  stack = await PrivateStack.create();
  await stack.up("kafka");
});

after(async () => {
  await stack.destroy();
});

async function until(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const cost = { inputTokens: 10, outputTokens: 5, inputCostUsd: "0.001", outputCostUsd: "0.002", totalCostUsd: "0.003", provider: "openai" };

test("broker stopped: calls return at once, the buffer stays bounded, every lost event is reported", async (t) => {
  const topic = unique("down.costs");
  await createTopics(stack.kafkaBootstrap, [topic], 1);
  const failures: DeliveryFailure[] = [];
  const publisher = new RoutingEventPublisher({
    bootstrapServers: stack.kafkaBootstrap,
    topics: { "routing.cost": topic },
    maxBufferedEvents: BUFFER,
    deliveryTimeoutMs: 3000,
    onDeliveryFailure: (failure) => failures.push(failure),
  });
  try {
    await publisher.persistActualCost("req-up", cost, { tenantId: "t" });
    await until(() => publisher.counters.delivered === 1, "the first delivery");

    await stack.down("kafka");
    const durations: number[] = [];
    let accepted = 0;
    let maxBuffered = 0;
    for (let i = 0; i < CALLS; i++) {
      const start = process.hrtime.bigint();
      const result = await publisher.persistActualCost(`req-${i}`, cost, { tenantId: "t" });
      durations.push(Number(process.hrtime.bigint() - start) / 1e6);
      if (result.accepted) accepted++;
      maxBuffered = Math.max(maxBuffered, publisher.counters.buffered);
    }
    assert.ok(maxBuffered <= BUFFER, `buffered ${maxBuffered} > ${BUFFER}`);
    assert.equal(accepted, BUFFER, "the buffer took exactly its bound");
    const dropped = failures.filter((f) => f.reason === "buffer_full");
    assert.equal(dropped.length, CALLS - BUFFER);
    assert.equal(publisher.counters.dropped, CALLS - BUFFER);
    // The dropped events are the ones the calls said were not accepted, each reported once.
    assert.equal(new Set(dropped.map((f) => f.event.eventId)).size, CALLS - BUFFER);

    await until(() => publisher.counters.failed === BUFFER, "the buffered events to fail for good", 60_000);
    assert.deepEqual(publisher.counters, { delivered: 1, failed: BUFFER, dropped: CALLS - BUFFER, buffered: 0 });
    assert.equal(failures.filter((f) => f.reason === "delivery_failed").length, BUFFER);
    assert.ok(failures.every((f) => f.reason !== "delivery_failed" || f.error !== undefined));

    t.diagnostic(`first 5 calls: ${durations.slice(0, 5).map((d) => d.toFixed(3)).join(", ")} ms; calls over 1 ms: ${durations.filter((d) => d > 1).length} of ${CALLS}`);
    durations.sort((a, b) => a - b);
    const at = (q: number): string => (durations[Math.min(durations.length - 1, Math.floor(q * durations.length))] as number).toFixed(3);
    t.diagnostic(`await persistActualCost() with the broker down, ${CALLS} calls: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`);

    await stack.up("kafka");
    await publisher.persistActualCost("req-back", cost, { tenantId: "t" });
    await until(() => publisher.counters.delivered === 2, "a delivery after the broker came back", 120_000);
  } finally {
    const closeStart = Date.now();
    await publisher.close(5000);
    assert.ok(Date.now() - closeStart < 8000, "close() kept its deadline");
  }
});

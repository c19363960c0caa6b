/**
 * The publisher's throughput to a real broker: events/s from the first `persistActualCost()`
 * call until Kafka acknowledged the last one (acks=all, idempotent), and the time each call
 * took. Several runs on fresh topics; the medians are what to quote.
 *
 *   cd typescript && eval "$(../deploy/local/stack env)" && npx tsx bench/publisher-throughput.ts [EVENTS] [RUNS]
 */

import { RoutingEventPublisher } from "../src/index.js";
import { createTopics, kafkaBootstrap, unique } from "../test/helpers/kafka.js";

const events = Number(process.argv[2] ?? 50_000);
const runs = Number(process.argv[3] ?? 5);
const bootstrap = kafkaBootstrap();

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

const rates: number[] = [];
const p50s: number[] = [];
const p99s: number[] = [];
for (let run = 1; run <= runs; run++) {
  const topic = unique("bench.costs");
  await createTopics(bootstrap, [topic], 6);
  const publisher = new RoutingEventPublisher({
    bootstrapServers: bootstrap,
    topics: { "routing.cost": topic },
    maxBufferedEvents: events,
  });
  // Warm the connection and the code paths first (not timed).
  await publisher.persistActualCost("warm", { inputTokens: 1, outputTokens: 1, inputCostUsd: "0", outputCostUsd: "0", totalCostUsd: "0", provider: "p" }, { tenantId: "t" });
  while (publisher.counters.delivered < 1) await new Promise((r) => setTimeout(r, 5));
  const calls: number[] = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < events; i++) {
    const t0 = process.hrtime.bigint();
    await publisher.persistActualCost(
      `req-${run}-${i}`,
      {
        inputTokens: 1200 + (i % 500),
        outputTokens: 350,
        inputCostUsd: "0.0012",
        outputCostUsd: "0.00105",
        totalCostUsd: "0.00225",
        provider: "openai",
      },
      { tenantId: `tenant-${i % 50}` },
    );
    calls.push(Number(process.hrtime.bigint() - t0) / 1e6);
    // Let the delivery loop run now and then, as a server's event loop would between requests.
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
  }
  while (publisher.counters.delivered < events + 1) await new Promise((r) => setTimeout(r, 2));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await publisher.close();
  const rate = events / seconds;
  rates.push(rate);
  p50s.push(median(calls));
  calls.sort((a, b) => a - b);
  p99s.push(calls[Math.floor(calls.length * 0.99)] as number);
  console.log(`run ${run}: ${events} events in ${seconds.toFixed(2)} s = ${Math.round(rate)} events/s; call p50 ${median(calls).toFixed(3)} ms, p99 ${(calls[Math.floor(calls.length * 0.99)] as number).toFixed(3)} ms`);
}
console.log(`median of ${runs} runs: ${Math.round(median(rates))} events/s delivered; persistActualCost() p50 ${median(p50s).toFixed(3)} ms, p99 ${median(p99s).toFixed(3)} ms`);

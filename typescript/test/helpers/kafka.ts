/**
 * Real Kafka for the tests: the broker of the local stack (`ROUTING_KAFKA_BOOTSTRAP_SERVERS`,
 * as `eval "$(deploy/local/stack env)"` sets it; `make ts-test` does). Every test makes its own
 * uniquely named topics, so order never matters.
 */

import { randomUUID } from "node:crypto";

import { Admin, Consumer, MessagesStreamModes } from "@platformatic/kafka";

/** The broker's bootstrap servers; a missing stack is a failure, never a skip. */
export function kafkaBootstrap(): string {
  const servers = process.env["ROUTING_KAFKA_BOOTSTRAP_SERVERS"];
  if (!servers) {
    throw new Error('ROUTING_KAFKA_BOOTSTRAP_SERVERS is not set: run eval "$(deploy/local/stack env)" (make ts-test does)');
  }
  return servers;
}

/** A name no other test uses. */
export function unique(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 12)}`;
}

/** Topics of one test: the three sources and the dead-letter topic. */
export interface Topics {
  readonly snapshots: string;
  readonly costs: string;
  readonly policies: string;
  readonly dlq: string;
}

/** Create `names` (replication 1) and wait until each has a leader for every partition. */
export async function createTopics(bootstrap: string, names: readonly string[], partitions = 3): Promise<void> {
  const admin = new Admin({ clientId: "ts-tests", bootstrapBrokers: bootstrap.split(",") });
  try {
    await admin.createTopics({ topics: [...names], partitions, replicas: 1 });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const metadata = await admin.metadata({ topics: [...names], forceUpdate: true });
      const ready = names.every((name) => {
        const topic = metadata.topics.get(name);
        return topic !== undefined && topic.partitions.length === partitions && topic.partitions.every((p) => p.leader >= 0);
      });
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`topics ${names.join(", ")} not ready after 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await admin.close();
  }
}

/** Fresh topics for one test. */
export async function freshTopics(bootstrap: string, partitions = 3): Promise<Topics> {
  const base = unique("ts");
  const topics = {
    snapshots: `${base}.snapshots`,
    costs: `${base}.costs`,
    policies: `${base}.policies`,
    dlq: `${base}.dlq`,
  };
  await createTopics(bootstrap, Object.values(topics), partitions);
  return topics;
}

/** One record as read back. */
export interface ReadRecord {
  readonly topic: string;
  readonly key: string;
  readonly value: Buffer;
  readonly headers: ReadonlyMap<string, string>;
}

/** Read `count` records of `topics` from the beginning (fails after `timeoutMs`). */
export async function readRecords(bootstrap: string, topics: readonly string[], count: number, timeoutMs = 30_000): Promise<ReadRecord[]> {
  const consumer = new Consumer({
    clientId: "ts-tests-reader",
    groupId: unique("reader"),
    bootstrapBrokers: bootstrap.split(","),
  });
  const out: ReadRecord[] = [];
  try {
    const stream = await consumer.consume({ topics: [...topics], mode: MessagesStreamModes.EARLIEST, autocommit: false });
    const timer = setTimeout(() => void stream.close(), timeoutMs);
    try {
      for await (const message of stream) {
        const headers = new Map<string, string>();
        for (const [k, v] of message.headers) headers.set(k.toString(), v.toString());
        out.push({ topic: message.topic, key: message.key.toString(), value: message.value, headers });
        if (out.length >= count) break;
      }
    } finally {
      clearTimeout(timer);
      await stream.close();
    }
  } finally {
    await consumer.close(true);
  }
  if (out.length < count) throw new Error(`read ${out.length} of ${count} records from ${topics.join(", ")} in ${timeoutMs} ms`);
  return out;
}

/**
 * The publisher that replaces B6's `persistRoutingSnapshot`, `persistActualCost` and
 * `saveTenantPolicy`: it builds the event the contract describes, refuses an invalid one at the
 * caller, and hands the rest to Kafka off the request path.
 *
 * The promise each `persist*` call returns:
 * - an invalid event throws {@link InvalidEventError} synchronously, during the call (the field
 *   and the service's reason code named): a programming error, found where it was made;
 * - otherwise the event is put in a bounded in-memory buffer and the promise is already
 *   resolved: the call never waits for Kafka, and nothing about delivery is ever thrown into
 *   the request. What cannot be delivered (the buffer is full, or Kafka refused the batch until
 *   `deliveryTimeoutMs` ran out, or `close()` gave up) is reported to `onDeliveryFailure` and
 *   counted ({@link PublisherCounters}).
 *
 * Delivery: one background loop sends up to `maxBatchEvents` events per request to Kafka with an
 * idempotent producer and `acks=all`, one batch in flight at a time (so events of one key keep
 * their order), retrying a failed batch with backoff until its deadline. A batch retried after
 * an unacknowledged send may be written twice; the consumer applies an event once whatever the
 * duplicates (same `eventId`, same version).
 *
 * Kafka client: `@platformatic/kafka` 1.x (maintained, typed, pure JS; 2.x needs Node >= 22).
 */

import { randomUUID } from "node:crypto";

import { ProduceAcks, Producer, stringSerializers } from "@platformatic/kafka";
import type { ProducerOptions } from "@platformatic/kafka";

import { DEFAULT_MAX_BYTES, type EventType, ReasonCode } from "./codes.js";
import { decodeEvent } from "./decode.js";
import { formatRfc3339Micros } from "./formats.js";
import type { ActualCostInput, RoutingPlanSnapshotInput, TenantRoutingPolicyInput } from "./generated/contract.js";
import { PAYLOADS } from "./generated/contract.js";
import { type JsonObject, stringifyJson } from "./json.js";
import { ConversionError, toWire } from "./shape.js";

/** Default topics: `docs/contract.md` §4 (`ROUTING_TOPIC_SNAPSHOTS`, `_COSTS`, `_POLICIES`). */
export const DEFAULT_TOPICS = {
  "routing.snapshot": "routing.snapshots",
  "routing.cost": "routing.costs",
  "tenant.policy": "routing.tenant-policies",
} as const satisfies Record<EventType, string>;

/** An event refused before it was sent: the caller's value breaks the contract. */
export class InvalidEventError extends Error {
  override readonly name = "InvalidEventError";
  constructor(
    /** The reason code the service would dead-letter it with. */
    readonly reason: ReasonCode,
    /** The field at fault (`payload.totalCostUsd`), or null for the whole record. */
    readonly field: string | null,
    message: string,
  ) {
    super(message);
  }
}

/** One event ready for Kafka. */
export interface OutgoingEvent {
  readonly eventId: string;
  readonly type: EventType;
  readonly occurredAt: string;
  readonly topic: string;
  /** `requestId` for snapshots and costs, `tenantId` for policies. */
  readonly key: string;
  /** The record value: the envelope's JSON text (UTF-8 on the wire). */
  readonly value: string;
}

/** Why an event was not delivered. */
export type FailureReason =
  /** The buffer held `maxBufferedEvents` events already: this one was dropped at once. */
  | "buffer_full"
  /** Kafka did not take its batch before `deliveryTimeoutMs` ran out. */
  | "delivery_failed"
  /** `close()` reached its deadline with the event still unsent. */
  | "closed";

export interface DeliveryFailure {
  readonly reason: FailureReason;
  readonly event: OutgoingEvent;
  /** The last error from Kafka, for `delivery_failed`. */
  readonly error?: unknown;
}

/** Running totals since the publisher was created. */
export interface PublisherCounters {
  /** Acknowledged by Kafka (acks=all). */
  readonly delivered: number;
  /** Given up after `deliveryTimeoutMs`, or unsent at `close()`'s deadline. */
  readonly failed: number;
  /** Refused because the buffer was full. */
  readonly dropped: number;
  /** Accepted and not yet delivered or failed (in the buffer or in flight). */
  readonly buffered: number;
}

/** What a `persist*` call did with the event (it never says anything about Kafka). */
export interface Enqueued {
  readonly eventId: string;
  readonly topic: string;
  readonly key: string;
  /** False when the buffer was full: the event was dropped (and reported). */
  readonly accepted: boolean;
}

export interface EventOptions {
  /** Event time; default now (microseconds, strictly increasing within this publisher). */
  readonly occurredAt?: Date | string;
}

export interface PublisherOptions {
  /** Kafka bootstrap servers: `"host:port,host:port"` or a list. */
  readonly bootstrapServers: string | readonly string[];
  /** Topic of each event type (defaults: {@link DEFAULT_TOPICS}). */
  readonly topics?: Partial<Record<EventType, string>>;
  readonly clientId?: string;
  /** Events held in memory at most, in flight included (default 10,000). */
  readonly maxBufferedEvents?: number;
  /** Events per produce request at most (default 500). */
  readonly maxBatchEvents?: number;
  /** How long one batch is retried before its events fail for good (default 30 s). */
  readonly deliveryTimeoutMs?: number;
  /** Largest record value, as the service's `ROUTING_MAX_PAYLOAD_BYTES` (default 1 MiB). */
  readonly maxBytes?: number;
  /** Called once per undelivered event; must not throw (what it throws is ignored). */
  readonly onDeliveryFailure?: (failure: DeliveryFailure) => void;
  /** Extra options of the Kafka client (TLS, SASL, timeouts). */
  readonly kafka?: Partial<ProducerOptions<string, string, string, string>>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Publishes routing events without blocking the request path. Create one per process and
 * `close()` it at shutdown.
 */
export class RoutingEventPublisher {
  private readonly topics: Record<EventType, string>;
  private readonly maxBuffered: number;
  private readonly maxBatch: number;
  private readonly deliveryTimeoutMs: number;
  private readonly maxBytes: number;
  private readonly onFailure: (failure: DeliveryFailure) => void;
  private readonly producer: Producer<string, string, string, string>;
  private readonly queue: OutgoingEvent[] = [];
  private inFlight = 0;
  private delivered = 0;
  private failed = 0;
  private dropped = 0;
  private lastMicros = 0n;
  private closing = false;
  /** Set when close() has given up: the loop stops retrying. */
  private abandoned = false;
  private wake: (() => void) | null = null;
  private readonly loop: Promise<void>;

  constructor(options: PublisherOptions) {
    const servers =
      typeof options.bootstrapServers === "string" ? options.bootstrapServers.split(",") : [...options.bootstrapServers];
    this.topics = { ...DEFAULT_TOPICS, ...options.topics };
    this.maxBuffered = options.maxBufferedEvents ?? 10_000;
    this.maxBatch = options.maxBatchEvents ?? 500;
    this.deliveryTimeoutMs = options.deliveryTimeoutMs ?? 30_000;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    const callback = options.onDeliveryFailure;
    this.onFailure = (failure) => {
      try {
        callback?.(failure);
      } catch {
        // A callback's own failure must not stop delivery of the other events.
      }
    };
    this.producer = new Producer<string, string, string, string>({
      clientId: options.clientId ?? "routing-engine",
      bootstrapBrokers: servers.map((s) => s.trim()),
      serializers: stringSerializers,
      idempotent: true,
      acks: ProduceAcks.ALL,
      retries: 2,
      retryDelay: 250,
      timeout: 5000,
      ...options.kafka,
    });
    this.loop = this.deliverLoop();
  }

  /** B6's `persistRoutingSnapshot`: key and envelope `requestId` = `requestId`, tenant = the snapshot's. */
  persistRoutingSnapshot(requestId: string, snapshot: RoutingPlanSnapshotInput, options: EventOptions = {}): Promise<Enqueued> {
    return this.enqueue(this.prepare("routing.snapshot", snapshot, snapshot.tenantId, requestId, options));
  }

  /** B6's `persistActualCost`; the envelope needs the request's tenant (the payload has none). */
  persistActualCost(requestId: string, cost: ActualCostInput, options: EventOptions & { readonly tenantId: string }): Promise<Enqueued> {
    return this.enqueue(this.prepare("routing.cost", cost, options.tenantId, requestId, options));
  }

  /** B6's `saveTenantPolicy`: keyed by the policy's `tenantId`. */
  saveTenantPolicy(policy: TenantRoutingPolicyInput, options: EventOptions = {}): Promise<Enqueued> {
    return this.enqueue(this.prepare("tenant.policy", policy, policy.tenantId, null, options));
  }

  /**
   * The event for `payload` (validated exactly as the service will decode it), not yet queued.
   * Throws {@link InvalidEventError}.
   */
  prepare(
    type: EventType,
    payload: unknown,
    tenantId: string,
    requestId: string | null,
    options: EventOptions = {},
  ): OutgoingEvent {
    let wirePayload;
    try {
      wirePayload = toWire(payload, PAYLOADS[type].shape, "payload");
    } catch (error) {
      if (error instanceof ConversionError) {
        throw new InvalidEventError(ReasonCode.SCHEMA_VIOLATION, error.field, error.message);
      }
      throw error;
    }
    const eventId = randomUUID();
    const occurredAt = this.occurredAt(options.occurredAt);
    const envelope: JsonObject = Object.create(null) as JsonObject;
    Object.assign(envelope, { eventId, type, schemaVersion: 1, occurredAt, tenantId });
    if (requestId !== null) envelope["requestId"] = requestId;
    envelope["payload"] = wirePayload;
    const value = stringifyJson(envelope);
    // The service's own verdict on these exact bytes: what passes here is never dead-lettered
    // for its content.
    const verdict = decodeEvent(Buffer.from(value, "utf8"), { maxBytes: this.maxBytes });
    if (!verdict.ok) throw new InvalidEventError(verdict.reason, verdict.field, verdict.message);
    const key = requestId ?? tenantId;
    return { eventId, type, occurredAt, topic: this.topics[type], key, value };
  }

  /** Running totals (a snapshot). */
  get counters(): PublisherCounters {
    return {
      delivered: this.delivered,
      failed: this.failed,
      dropped: this.dropped,
      buffered: this.queue.length + this.inFlight,
    };
  }

  /**
   * Deliver what is buffered, waiting at most `timeoutMs` (default 10 s), then disconnect.
   * Events still unsent at the deadline fail as `closed`; `persist*` calls made after `close()`
   * drop their event (counted as dropped, reported as `closed`). Never throws.
   */
  async close(timeoutMs = 10_000): Promise<PublisherCounters> {
    this.closing = true;
    this.wake?.();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([this.loop, deadline]);
    clearTimeout(timer);
    this.abandoned = true;
    for (const event of this.queue.splice(0)) this.fail("closed", event);
    try {
      await this.producer.close(true); // also ends a send still waiting for a gone broker
    } catch {
      // Closing a producer that never connected, or whose broker is gone: nothing to release.
    }
    await Promise.race([this.loop, sleep(1000)]);
    return this.counters;
  }

  private occurredAt(given: Date | string | undefined): string {
    if (typeof given === "string") return given;
    if (given instanceof Date) return formatRfc3339Micros(BigInt(given.getTime()) * 1000n);
    // Microseconds, strictly increasing here: two events of one row published in order never
    // share an occurredAt, so the newer one wins the row whatever their random eventIds.
    const now = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
    this.lastMicros = now > this.lastMicros ? now : this.lastMicros + 1n;
    return formatRfc3339Micros(this.lastMicros);
  }

  private enqueue(event: OutgoingEvent): Promise<Enqueued> {
    const accepted = !this.closing && this.queue.length + this.inFlight < this.maxBuffered;
    if (accepted) {
      this.queue.push(event);
      this.wake?.();
    } else {
      this.dropped++;
      this.onFailure({ reason: this.closing ? "closed" : "buffer_full", event });
    }
    return Promise.resolve({ eventId: event.eventId, topic: event.topic, key: event.key, accepted });
  }

  private fail(reason: FailureReason, event: OutgoingEvent, error?: unknown): void {
    this.failed++;
    this.onFailure(error === undefined ? { reason, event } : { reason, event, error });
  }

  private async deliverLoop(): Promise<void> {
    for (;;) {
      if (this.queue.length === 0) {
        if (this.closing) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = null;
        continue;
      }
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight = batch.length;
      try {
        await this.deliver(batch);
      } finally {
        this.inFlight = 0;
      }
    }
  }

  /** Send one batch until Kafka takes it or its deadline passes (then each event fails). */
  private async deliver(batch: OutgoingEvent[]): Promise<void> {
    const deadline = Date.now() + this.deliveryTimeoutMs;
    const messages = batch.map((e) => ({ topic: e.topic, key: e.key, value: e.value }));
    for (let attempt = 0; ; attempt++) {
      try {
        await this.producer.send({ messages });
        this.delivered += batch.length;
        return;
      } catch (error) {
        if (this.abandoned || Date.now() >= deadline) {
          for (const event of batch) this.fail(this.abandoned ? "closed" : "delivery_failed", event, error);
          return;
        }
        const backoff = Math.min(100 * 2 ** attempt, 2000, Math.max(deadline - Date.now(), 0));
        await sleep(backoff);
      }
    }
  }
}

/**
 * One Kafka record value -> a valid event or a rejection with the service's reason code: the
 * same verdict as Python's `schemas.decode_event` for any bytes (the conformance corpus,
 * `schemas/conformance/`, holds both to it).
 *
 * Order of checks, exactly as `schemas/decode.py`: size before parsing (`payload_too_large`);
 * UTF-8, JSON, nesting, number limits (`invalid_json`); an object (`not_an_object`);
 * `schemaVersion` an integer above 1 (`unsupported_schema_version`); `type` a string
 * (`schema_violation`) this version knows (`unsupported_event_type`); then `schemaVersion`,
 * `eventId`, `occurredAt`, `tenantId`, `requestId`, `payload` an object (each
 * `schema_violation`); the payload's own fields (`schema_violation`) before any rule relating
 * fields (`rule_violation`); last, the payload's `tenantId` against the envelope's.
 */

import { DEFAULT_MAX_BYTES, EventType, ReasonCode } from "./codes.js";
import { EVENT_TYPES, EnvelopeFieldSchemas, KEYED_BY_REQUEST } from "./generated/contract.js";
import type { ActualCost, RoutingPlanSnapshot, TenantRoutingPolicy } from "./generated/contract.js";
import { JsonNumber, type JsonObject, JsonSyntaxError, parseJson } from "./json.js";
import { describeIssue, isJsonObject, jsonKind } from "./primitives.js";
import { checkPayload } from "./validate.js";

interface EventBase {
  readonly ok: true;
  /** The envelope's `eventId` as sent. */
  readonly eventId: string;
  /** The envelope's `occurredAt` as sent (RFC 3339 with offset). */
  readonly occurredAt: string;
  readonly tenantId: string;
  /** Set for snapshots and costs; for a policy whatever the envelope carried (usually null). */
  readonly requestId: string | null;
  /** The whole envelope as parsed: unknown fields kept, numbers exact. */
  readonly envelope: JsonObject;
}

/** A valid event; `payload` is the parsed payload itself (unknown fields kept). */
export type DecodedEvent =
  | (EventBase & { readonly type: typeof EventType.SNAPSHOT; readonly payload: RoutingPlanSnapshot })
  | (EventBase & { readonly type: typeof EventType.COST; readonly payload: ActualCost })
  | (EventBase & { readonly type: typeof EventType.POLICY; readonly payload: TenantRoutingPolicy });

/** A record that can never be applied, with the service's reason code. */
export interface Rejection {
  readonly ok: false;
  readonly reason: ReasonCode;
  /** The field at fault (`payload.totalCostUsd`), or null when the whole record is. */
  readonly field: string | null;
  /** A readable message naming the field, at most 500 characters. */
  readonly message: string;
  /** The event type, when the decoder had recognised it before deciding (else null). */
  readonly eventType: EventType | null;
}

export interface DecodeOptions {
  /** Largest record value accepted, in bytes (default 1 MiB, as the service). */
  readonly maxBytes?: number;
}

const MAX_MESSAGE_LENGTH = 500;

function reject(reason: ReasonCode, message: string, field: string | null = null, eventType: EventType | null = null): Rejection {
  const bounded = message.length <= MAX_MESSAGE_LENGTH ? message : `${message.slice(0, MAX_MESSAGE_LENGTH - 3)}...`;
  return { ok: false, reason, field, message: bounded, eventType };
}

function problem(field: string, value: unknown, expected: string, eventType: EventType | null): Rejection {
  const message = value === undefined ? `${field}: Field required` : `${field}: Input should be ${expected}, got ${jsonKind(value)}`;
  return reject(ReasonCode.SCHEMA_VIOLATION, message, field, eventType);
}

/** The first problem of one envelope field judged by its generated schema, or null. */
function fieldProblem(
  name: keyof typeof EnvelopeFieldSchemas,
  document: JsonObject,
  eventType: EventType,
): Rejection | null {
  const value = document[name];
  const result = EnvelopeFieldSchemas[name].safeParse(value);
  if (result.success) return null;
  const issue = describeIssue(result.error.issues[0]!, name);
  const message = Object.hasOwn(document, name) ? `${issue.field}: ${issue.message}` : `${name}: Field required`;
  return reject(ReasonCode.SCHEMA_VIOLATION, message, issue.field, eventType);
}

/**
 * Decode and validate one record value (its bytes exactly as in Kafka). Never throws for any
 * input: every verdict is a {@link DecodedEvent} or a {@link Rejection}.
 */
export function decodeEvent(value: Uint8Array, options: DecodeOptions = {}): DecodedEvent | Rejection {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  if (value.length > maxBytes) {
    return reject(ReasonCode.PAYLOAD_TOO_LARGE, `record value is ${value.length} bytes, over the ${maxBytes} limit`);
  }
  let document: unknown;
  try {
    document = parseJson(value);
  } catch (error) {
    if (error instanceof JsonSyntaxError) return reject(ReasonCode.INVALID_JSON, `not valid JSON: ${error.message}`);
    throw error; // a bug here, never a verdict on the record
  }
  if (!isJsonObject(document)) {
    return reject(ReasonCode.NOT_AN_OBJECT, `top level is a JSON ${jsonKind(document)}, not an object`);
  }

  const version = document["schemaVersion"];
  if (version instanceof JsonNumber && version.isInteger && version.toBigInt() > 1n) {
    return reject(
      ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
      `schemaVersion ${version.literal.slice(0, 40)} is not supported (this consumer reads 1)`,
      "schemaVersion",
    );
  }
  const rawType = document["type"];
  if (typeof rawType !== "string") return problem("type", rawType, "a string", null);
  if (!(EVENT_TYPES as readonly string[]).includes(rawType)) {
    return reject(
      ReasonCode.UNSUPPORTED_EVENT_TYPE,
      `type: ${JSON.stringify(rawType.slice(0, 64))} is not one of ${EVENT_TYPES.join(", ")}`,
      "type",
    );
  }
  const type = rawType as EventType;
  if (!Object.hasOwn(document, "schemaVersion")) {
    return reject(ReasonCode.SCHEMA_VIOLATION, "schemaVersion: Field required", "schemaVersion", type);
  }
  for (const name of ["schemaVersion", "eventId", "occurredAt", "tenantId"] as const) {
    const rejected = fieldProblem(name, document, type);
    if (rejected !== null) return rejected;
  }
  const requestId = document["requestId"];
  if (requestId === undefined || requestId === null) {
    if (KEYED_BY_REQUEST.includes(type)) {
      return reject(ReasonCode.SCHEMA_VIOLATION, `requestId: Field required for ${type}`, "requestId", type);
    }
  } else {
    const rejected = fieldProblem("requestId", document, type);
    if (rejected !== null) return rejected;
  }
  const payload = document["payload"];
  if (!isJsonObject(payload)) return problem("payload", payload, "an object", type);
  const tenantId = document["tenantId"] as string;
  const payloadProblem = checkPayload(type, payload, tenantId);
  if (payloadProblem !== null) return reject(payloadProblem.reason, payloadProblem.message, payloadProblem.field, type);
  return {
    ok: true,
    type,
    eventId: document["eventId"] as string,
    occurredAt: document["occurredAt"] as string,
    tenantId,
    requestId: typeof requestId === "string" ? requestId : null,
    envelope: document,
    payload,
  } as DecodedEvent;
}

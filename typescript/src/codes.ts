/**
 * The contract's closed vocabularies (`docs/contract.md` §1, §3): event types and the dead-letter
 * reason codes that a record's bytes alone decide.
 */

/** The envelope's `type`: each names one payload. */
export const EventType = {
  SNAPSHOT: "routing.snapshot",
  COST: "routing.cost",
  POLICY: "tenant.policy",
} as const;
export type EventType = (typeof EventType)[keyof typeof EventType];

/**
 * Reason codes of a record refused for its bytes, with the service's meaning:
 * `schema_violation` is one field missing, of the wrong type or format, or outside its own
 * bounds; `rule_violation` is a rule relating two or more fields (cost total, candidate count,
 * tenant equality, provider lists).
 */
export const ReasonCode = {
  INVALID_JSON: "invalid_json",
  NOT_AN_OBJECT: "not_an_object",
  SCHEMA_VIOLATION: "schema_violation",
  RULE_VIOLATION: "rule_violation",
  UNSUPPORTED_EVENT_TYPE: "unsupported_event_type",
  UNSUPPORTED_SCHEMA_VERSION: "unsupported_schema_version",
  PAYLOAD_TOO_LARGE: "payload_too_large",
} as const;
export type ReasonCode = (typeof ReasonCode)[keyof typeof ReasonCode];

/** Default limit of a record value: 1 MiB (`ROUTING_MAX_PAYLOAD_BYTES`). */
export const DEFAULT_MAX_BYTES = 1_048_576;

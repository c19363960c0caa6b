/**
 * @routing-persistence/client: the routing engine's side of routing-persistence's contract
 * (`docs/contract.md` §7). Types and Zod validators generated from the exported JSON Schema, the
 * rules relating fields, a decoder giving the service's verdict for any record, a publisher
 * that replaces B6's `persist*` functions and loaders that replace its `load*` functions.
 */

export { DEFAULT_MAX_BYTES, EventType, ReasonCode } from "./codes.js";
export { type DecodeOptions, type DecodedEvent, type Rejection, decodeEvent } from "./decode.js";
export {
  type ActualCost,
  type ActualCostInput,
  ActualCostSchema,
  type CostEstimate,
  type CostEstimateInput,
  CostEstimateSchema,
  EnvelopeFieldSchemas,
  type ProviderModel,
  type ProviderModelInput,
  ProviderModelSchema,
  type RoutingCostEnvelope,
  type RoutingPlanSnapshot,
  type RoutingPlanSnapshotInput,
  RoutingPlanSnapshotSchema,
  type RoutingSnapshotEnvelope,
  type TenantPolicyEnvelope,
  type TenantRoutingPolicy,
  type TenantRoutingPolicyInput,
  TenantRoutingPolicySchema,
} from "./generated/contract.js";
export { JsonNumber, type JsonObject, JsonSyntaxError, type JsonValue, parseJson, stringifyJson } from "./json.js";
export { type RuleProblem, checkCostRules, checkPolicyRules, checkSnapshotRules, checkTenant } from "./rules.js";
export {
  type PrismaRawQueryClient,
  SchemaDriftError,
  loadActualCost,
  loadRoutingSnapshot,
  loadTenantPolicyFromDb,
  validateStoredValue,
} from "./loaders.js";
export {
  DEFAULT_TOPICS,
  type DeliveryFailure,
  type Enqueued,
  type EventOptions,
  type FailureReason,
  InvalidEventError,
  type OutgoingEvent,
  type PublisherCounters,
  type PublisherOptions,
  RoutingEventPublisher,
} from "./publisher.js";
export { type NumberInput } from "./shape.js";
export { type Problem, checkPayload } from "./validate.js";

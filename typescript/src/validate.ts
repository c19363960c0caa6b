/**
 * One verdict on a payload, shared by the decoder, the publisher and the loaders: the generated
 * Zod schema first (every field on its own: `schema_violation`), then the rules relating fields
 * (`rule_violation`), in the Python reference's order.
 */

import type { z } from "zod";

import { ReasonCode, type EventType } from "./codes.js";
import { PAYLOADS } from "./generated/contract.js";
import { describeIssue } from "./primitives.js";
import { PAYLOAD_RULES, checkTenant } from "./rules.js";

/** Why a value is not a valid contract value. */
export interface Problem {
  readonly reason: typeof ReasonCode.SCHEMA_VIOLATION | typeof ReasonCode.RULE_VIOLATION;
  /** The field, as the service names it: `payload.fallbacks[1].model`. */
  readonly field: string;
  /** `field: what is wrong`, at most a few dozen characters of any value. */
  readonly message: string;
  /** Zod's issues, for a `schema_violation` (empty for a rule). */
  readonly issues: readonly z.core.$ZodIssue[];
}

/**
 * The first problem of `payload` as the payload of a `type` event, or null when it is valid.
 * `tenantId`, when given, is the envelope's: the payload's own must equal it.
 */
export function checkPayload(type: EventType, payload: unknown, tenantId?: string, prefix = "payload"): Problem | null {
  const { schema } = PAYLOADS[type];
  const result = schema.safeParse(payload);
  if (!result.success) {
    const issues = result.error.issues;
    const first = describeIssue(issues[0] as z.core.$ZodIssue, prefix);
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : "";
    return {
      reason: ReasonCode.SCHEMA_VIOLATION,
      field: first.field,
      message: `${first.field}: ${first.message}${more}`,
      issues,
    };
  }
  const rule = (PAYLOAD_RULES[type] as (value: unknown) => ReturnType<typeof checkTenant>)(payload);
  const tenant = rule ?? (tenantId === undefined ? null : checkTenant(type, payload as Record<string, unknown>, tenantId));
  if (tenant !== null) {
    const field = prefix === "payload" ? tenant.field : tenant.field.replace(/^payload/, prefix);
    return { reason: tenant.reason, field, message: tenant.message.replace(/^payload/, prefix), issues: [] };
  }
  return null;
}

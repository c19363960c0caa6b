/**
 * The rules JSON Schema cannot say, written once for both the decoder and the publisher: each
 * relates two or more fields, so a broken one is a `rule_violation` (`docs/contract.md` §1, §3). They
 * are checked only on a payload whose every field already passed its own schema, as the Python
 * models do (a field problem, `schema_violation`, is always reported first).
 */

import { ReasonCode, type EventType } from "./codes.js";
import { costTotalMatches } from "./decimal.js";
import type { ActualCost, RoutingPlanSnapshot, TenantRoutingPolicy } from "./generated/contract.js";

/** One broken rule: the field it is reported on (as the service names it) and why. */
export interface RuleProblem {
  readonly reason: typeof ReasonCode.RULE_VIOLATION;
  readonly field: string;
  readonly message: string;
}

function broken(field: string, message: string): RuleProblem {
  return { reason: ReasonCode.RULE_VIOLATION, field, message: `${field}: ${message}` };
}

function short(text: string): string {
  const shown = JSON.stringify(text);
  return shown.length <= 60 ? shown : `${shown.slice(0, 57)}...`;
}

/** `1 + len(fallbacks) <= candidateCount`: the primary and each fallback are candidates. */
export function checkSnapshotRules(snapshot: RoutingPlanSnapshot): RuleProblem | null {
  const fallbacks = BigInt(snapshot.fallbacks.length);
  const count = snapshot.candidateCount.toBigInt();
  if (1n + fallbacks > count) {
    return broken("payload.fallbacks", `1 primary + ${fallbacks} fallbacks exceed candidateCount ${count}`);
  }
  return null;
}

/** `totalCostUsd == inputCostUsd + outputCostUsd` within 0.000001 (exact decimals). */
export function checkCostRules(cost: ActualCost): RuleProblem | null {
  if (!costTotalMatches(cost.totalCostUsd, cost.inputCostUsd, cost.outputCostUsd)) {
    return broken(
      "payload.totalCostUsd",
      `${cost.totalCostUsd.literal.slice(0, 60)} is not inputCostUsd + outputCostUsd ` +
        `(${cost.inputCostUsd.literal.slice(0, 60)} + ${cost.outputCostUsd.literal.slice(0, 60)}) within 0.000001`,
    );
  }
  return null;
}

/**
 * Allowed and denied lists are disjoint; `preferredProvider` is never denied, and is in
 * `allowedProviders` when that list is not empty (an empty list allows every provider).
 */
export function checkPolicyRules(policy: TenantRoutingPolicy): RuleProblem | null {
  const denied = new Set(policy.deniedProviders);
  const both = policy.allowedProviders.filter((p) => denied.has(p)).sort();
  if (both.length > 0) return broken("payload.deniedProviders", `${short(both[0] as string)} is both allowed and denied`);
  const preferred = policy.preferredProvider;
  if (preferred !== null) {
    if (denied.has(preferred)) return broken("payload.preferredProvider", `${short(preferred)} is denied`);
    if (policy.allowedProviders.length > 0 && !policy.allowedProviders.includes(preferred)) {
      return broken("payload.preferredProvider", `${short(preferred)} is not in allowedProviders`);
    }
  }
  return null;
}

/** The payload's `tenantId`, where it has one, equals the envelope's. */
export function checkTenant(type: EventType, payload: { readonly [field: string]: unknown }, tenantId: string): RuleProblem | null {
  if (type === "routing.cost") return null;
  const own = payload["tenantId"];
  if (own !== tenantId) {
    return broken("payload.tenantId", `${short(String(own))} differs from the envelope's tenantId ${short(tenantId)}`);
  }
  return null;
}

/** The rules of each payload type (the tenant rule aside: it needs the envelope). */
export const PAYLOAD_RULES = {
  "routing.snapshot": checkSnapshotRules,
  "routing.cost": checkCostRules,
  "tenant.policy": checkPolicyRules,
} as const satisfies Record<EventType, (payload: never) => RuleProblem | null>;

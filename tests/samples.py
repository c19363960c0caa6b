"""Sample records of the contract tests: valid variants, broken ones with the expected reason,
and byte strings that are not an event. Shared by the schema tests and the fast decoder's
differential tests (which check that both decoders give the same result on every one)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from schemas import EventType, ReasonCode
from tests.schemas_helpers import EVENT_ID

Change = Callable[[dict[str, Any]], object]

#: (change of a snapshot envelope whose tenant is "t", why it stays valid).
VALID_SNAPSHOT_VARIANTS: list[tuple[Change, str]] = [
    (lambda d: d.__setitem__("occurredAt", "2026-01-31t12:00:00z"), "lower-case t and z"),
    (lambda d: d.__setitem__("occurredAt", "2026-01-31T12:00:00.123456789-05:30"), "ns"),
    (lambda d: d.__setitem__("eventId", EVENT_ID.upper()), "upper-case uuid"),
    (lambda d: d.__setitem__("tenantId", "t" * 128), "128 chars"),
    (lambda d: d["payload"].__setitem__("tenantId", "t" * 128), "128 chars"),
    (lambda d: d.__setitem__("tenantId", "t"), "1 char"),
    (lambda d: d["payload"].__setitem__("tenantId", "t"), "1 char"),
    (lambda d: d.__setitem__("extraEnvelopeField", {"x": 1}), "unknown envelope field"),
    (lambda d: d["payload"].__setitem__("fallbacks", []), "no fallbacks"),
    (lambda d: d["payload"].__setitem__("candidateCount", 2), "1 + 1 == 2"),
    (lambda d: d["payload"]["costEstimate"].__setitem__("totalCostUsd", 0), "int money"),
    (lambda d: d["payload"].__setitem__("strategy", ""), "strategy has no bound"),
    (lambda d: d["payload"].__setitem__("note", "\u0000"), "NUL: the database decides"),
]

#: (change of a cost payload, why it stays valid).
VALID_COST_VARIANTS: list[tuple[Change, str]] = [
    (lambda p: p.__setitem__("totalCostUsd", Decimal("0.300001")), "off by exactly 1e-6"),
    (lambda p: p.__setitem__("totalCostUsd", Decimal("0.299999")), "off by exactly -1e-6"),
    (lambda p: p.update(inputCostUsd=0, outputCostUsd=0, totalCostUsd=0), "free"),
    (lambda p: p.update(inputTokens=0, outputTokens=0), "no tokens"),
    (
        lambda p: p.update(
            inputCostUsd=Decimal("1E+30"),
            totalCostUsd=Decimal("1000000000000000000000000000000.2"),
        ),
        "huge: exact beyond 28 digits",
    ),
    (lambda p: p.__setitem__("tenantId", False), "an unknown field that a policy knows"),
]

#: (change of a policy payload, why it stays valid).
VALID_POLICY_VARIANTS: list[tuple[Change, str]] = [
    (lambda p: p.update(allowedProviders=[], preferredProvider="anyone"), "empty = all"),
    (lambda p: p.update(preferredProvider=None, maxCostPerRequestUsd=None), "nulls"),
    (lambda p: p.update(allowedProviders=[], deniedProviders=[]), "no lists"),
]

S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
SCHEMA, RULE = ReasonCode.SCHEMA_VIOLATION, ReasonCode.RULE_VIOLATION


def _set(path: str, value: object) -> Change:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Change:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in parents:
            target = target[part]
        del target[last]

    return change


#: (id, type, change of its sample envelope, reason, text the message must contain).
REJECTIONS: list[tuple[str, EventType, Change, ReasonCode, str]] = [
    # envelope, one field
    ("type-not-string", S, _set("type", 1), SCHEMA, "type: "),
    ("type-missing", S, _drop("type"), SCHEMA, "type: Field required"),
    ("type-unknown", S, _set("type", "routing.other"), ReasonCode.UNSUPPORTED_EVENT_TYPE, "type"),
    ("version-2", S, _set("schemaVersion", 2), ReasonCode.UNSUPPORTED_SCHEMA_VERSION, "2"),
    (
        "version-2-unknown-type",
        S,
        lambda d: d.update(type="routing.future", schemaVersion=2),
        ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
        "schemaVersion 2",
    ),
    ("version-string", S, _set("schemaVersion", "1"), SCHEMA, "schemaVersion"),
    ("version-true", S, _set("schemaVersion", True), SCHEMA, "schemaVersion"),
    ("version-float", S, _set("schemaVersion", Decimal("1.0")), SCHEMA, "schemaVersion"),
    ("version-0", S, _set("schemaVersion", 0), SCHEMA, "schemaVersion"),
    ("version-missing", S, _drop("schemaVersion"), SCHEMA, "schemaVersion: Field required"),
    ("event-id-missing", S, _drop("eventId"), SCHEMA, "eventId: Field required"),
    ("event-id-not-uuid", S, _set("eventId", "not-a-uuid"), SCHEMA, "eventId"),
    (
        "event-id-hex-only",
        S,
        _set("eventId", "0b8a3f9c52a44c1e9d0f2f1e4e6b7a10"),
        SCHEMA,
        "eventId",
    ),
    ("event-id-number", S, _set("eventId", 12), SCHEMA, "eventId"),
    ("occurred-naive", S, _set("occurredAt", "2026-01-31T12:00:00"), SCHEMA, "occurredAt"),
    ("occurred-date", S, _set("occurredAt", "2026-01-31"), SCHEMA, "occurredAt"),
    ("occurred-space", S, _set("occurredAt", "2026-01-31 12:00:00Z"), SCHEMA, "occurredAt"),
    ("occurred-number", S, _set("occurredAt", 1767225600), SCHEMA, "occurredAt"),
    ("occurred-feb-30", S, _set("occurredAt", "2026-02-30T12:00:00Z"), SCHEMA, "occurredAt"),
    ("occurred-offset-80-min", S, _set("occurredAt", "2026-01-31T12:00:00+00:80"), SCHEMA, "occ"),
    ("occurred-offset-24", S, _set("occurredAt", "2026-01-31T12:00:00+24:00"), SCHEMA, "occ"),
    ("occurred-overflow", S, _set("occurredAt", "9999-12-31T23:30:00-01:00"), SCHEMA, "occ"),
    ("occurred-missing", S, _drop("occurredAt"), SCHEMA, "occurredAt: Field required"),
    ("tenant-missing", S, _drop("tenantId"), SCHEMA, "tenantId: Field required"),
    ("tenant-empty", P, _set("tenantId", ""), SCHEMA, "tenantId"),
    ("tenant-129", P, _set("tenantId", "t" * 129), SCHEMA, "tenantId"),
    ("tenant-number", P, _set("tenantId", 7), SCHEMA, "tenantId"),
    ("request-missing-snapshot", S, _drop("requestId"), SCHEMA, "requestId: Field required"),
    ("request-missing-cost", C, _drop("requestId"), SCHEMA, "requestId: Field required"),
    ("request-null-cost", C, _set("requestId", None), SCHEMA, "requestId"),
    ("request-empty", C, _set("requestId", ""), SCHEMA, "requestId"),
    ("request-129", C, _set("requestId", "r" * 129), SCHEMA, "requestId"),
    ("request-number", S, _set("requestId", 5), SCHEMA, "requestId"),
    ("request-empty-policy", P, _set("requestId", ""), SCHEMA, "requestId"),
    ("payload-missing", C, _drop("payload"), SCHEMA, "payload: Field required"),
    ("payload-list", C, _set("payload", []), SCHEMA, "payload"),
    ("payload-string", C, _set("payload", "{}"), SCHEMA, "payload"),
    # snapshot payload, one field
    ("snap-id-missing", S, _drop("payload.snapshotId"), SCHEMA, "payload.snapshotId: Field"),
    ("snap-id-number", S, _set("payload.snapshotId", 1), SCHEMA, "payload.snapshotId"),
    ("count-string", S, _set("payload.candidateCount", "3"), SCHEMA, "payload.candidateCount"),
    ("count-bool", S, _set("payload.candidateCount", True), SCHEMA, "payload.candidateCount"),
    ("count-float", S, _set("payload.candidateCount", Decimal("3.0")), SCHEMA, "candidateCount"),
    ("count-zero", S, _set("payload.candidateCount", 0), SCHEMA, "payload.candidateCount"),
    ("timestamp-naive", S, _set("payload.timestamp", "2026-01-31T12:00:00"), SCHEMA, "timestamp"),
    ("estimate-missing", S, _drop("payload.costEstimate"), SCHEMA, "payload.costEstimate"),
    ("estimate-total-str", S, _set("payload.costEstimate.totalCostUsd", "1"), SCHEMA, "totalCost"),
    (
        "estimate-negative",
        S,
        _set("payload.costEstimate.totalCostUsd", Decimal("-0.01")),
        SCHEMA,
        "payload.costEstimate.totalCostUsd",
    ),
    ("primary-string", S, _set("payload.primary", "openai/gpt"), SCHEMA, "payload.primary"),
    ("primary-model-empty", S, _set("payload.primary.model", ""), SCHEMA, "payload.primary.model"),
    ("fallbacks-object", S, _set("payload.fallbacks", {}), SCHEMA, "payload.fallbacks"),
    (
        "fallback-provider-missing",
        S,
        _drop("payload.fallbacks.0.provider")
        if False
        else _set("payload.fallbacks.0", {"model": "m"}),
        SCHEMA,
        "payload.fallbacks[0].provider",
    ),
    ("payload-tenant-missing", S, _drop("payload.tenantId"), SCHEMA, "payload.tenantId"),
    # cost payload, one field
    ("tokens-negative", C, _set("payload.inputTokens", -1), SCHEMA, "payload.inputTokens"),
    ("tokens-float", C, _set("payload.outputTokens", Decimal("1.5")), SCHEMA, "outputTokens"),
    ("money-string", C, _set("payload.inputCostUsd", "0.1"), SCHEMA, "payload.inputCostUsd"),
    ("money-bool", C, _set("payload.inputCostUsd", False), SCHEMA, "payload.inputCostUsd"),
    ("money-null", C, _set("payload.totalCostUsd", None), SCHEMA, "payload.totalCostUsd"),
    ("provider-empty", C, _set("payload.provider", ""), SCHEMA, "payload.provider"),
    ("provider-number", C, _set("payload.provider", 1), SCHEMA, "payload.provider"),
    # policy payload, one field
    ("allowed-duplicates", P, _set("payload.allowedProviders", ["a", "a"]), SCHEMA, "allowedProv"),
    ("denied-not-list", P, _set("payload.deniedProviders", "x"), SCHEMA, "deniedProviders"),
    ("denied-number-item", P, _set("payload.deniedProviders", [1]), SCHEMA, "deniedProviders[0]"),
    ("max-cost-zero", P, _set("payload.maxCostPerRequestUsd", 0), SCHEMA, "maxCostPerRequestUsd"),
    ("preferred-missing", P, _drop("payload.preferredProvider"), SCHEMA, "preferredProvider"),
    ("strategy-null", P, _set("payload.defaultStrategy", None), SCHEMA, "defaultStrategy"),
    # rules relating fields
    ("too-many-fallbacks", S, _set("payload.candidateCount", 1), RULE, "payload.fallbacks"),
    ("snapshot-tenant", S, _set("payload.tenantId", "tenant-b"), RULE, "payload.tenantId"),
    ("policy-tenant", P, _set("payload.tenantId", "tenant-b"), RULE, "payload.tenantId"),
    ("total-off", C, _set("payload.totalCostUsd", Decimal("0.3000011")), RULE, "totalCostUsd"),
    ("total-low", C, _set("payload.totalCostUsd", Decimal("0.2999989")), RULE, "totalCostUsd"),
    (
        "allowed-and-denied",
        P,
        _set("payload.deniedProviders", ["anthropic"]),
        RULE,
        "payload.deniedProviders",
    ),
    ("preferred-denied", P, _set("payload.preferredProvider", "mistral"), RULE, "preferredProv"),
    ("preferred-not-allowed", P, _set("payload.preferredProvider", "x"), RULE, "preferredProv"),
]


#: (bytes, reason, text the message must contain): records that are not an event object.
NOT_AN_EVENT: list[tuple[bytes, ReasonCode, str]] = [
    (b"", ReasonCode.INVALID_JSON, "JSON"),
    (b"\x00\x01", ReasonCode.INVALID_JSON, "JSON"),
    (b'{"eventId": "x"', ReasonCode.INVALID_JSON, "JSON"),
    (b'{"a": NaN}', ReasonCode.INVALID_JSON, "NaN"),
    (b"\xc3\x28{}", ReasonCode.INVALID_JSON, "utf-8"),
    (b"[" * 50_000, ReasonCode.INVALID_JSON, "JSON"),
    (b"[1, 2]", ReasonCode.NOT_AN_OBJECT, "array"),
    (b'"event"', ReasonCode.NOT_AN_OBJECT, "string"),
    (b"null", ReasonCode.NOT_AN_OBJECT, "null"),
    (b"{}", ReasonCode.SCHEMA_VIOLATION, "type: Field required"),
]

#: (id, bytes) that :func:`schemas.loads` refuses: not strict UTF-8 JSON.
NOT_STRICT_JSON: list[tuple[str, bytes]] = [
    ("nan", b"NaN"),
    ("infinity", b'{"a": Infinity}'),
    ("minus-infinity", b"[-Infinity]"),
    ("not-utf8", b"\xff\xfe{}"),
    ("lone-surrogate", b'"\\ud800"'),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000),
    ("int-beyond-digit-limit", b"1" * 5000),
    ("deeper-than-64", b"[" * 65 + b"]" * 65),
    ("deeper-than-64-objects", b'{"a":' * 65 + b"1" + b"}" * 65),
    ("int-4301-digits", b"1" * 4301),
    ("negative-int-4301-digits", b"-" + b"1" * 4301),
    ("leading-zero", b"01"),
    ("trailing-comma", b'{"a": 1,}'),
    ("single-quotes", b"{'a': 1}"),
    ("empty", b""),
    ("utf16", '{"a": 1}'.encode("utf-16")),
]

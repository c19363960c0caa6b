"""The event contract in code: exact JSON, decoding with reason codes, models, the producer side."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ActualCost,
    DecodedEvent,
    Envelope,
    EventType,
    ReasonCode,
    Rejection,
    RoutingPlanSnapshot,
    TenantRoutingPolicy,
    build_event,
    decode_event,
    dumps,
    loads,
)
from schemas.models import RULE_ERROR_TYPE, format_error
from tests.schemas_helpers import EVENT_ID, REQUEST, TENANT, envelope, mutated, record

# --- jsoncodec ---------------------------------------------------------------------------------


def test_loads_reads_every_fraction_as_an_exact_decimal_and_integers_as_int() -> None:
    value = loads(b'{"a": 0.1, "b": 1, "c": 1e5, "d": [1.0, -0.0, 2.50], "e": 1E-7}')
    assert value == {
        "a": Decimal("0.1"),
        "b": 1,
        "c": Decimal("1E+5"),
        "d": [Decimal("1.0"), Decimal("-0.0"), Decimal("2.50")],
        "e": Decimal("1E-7"),
    }
    assert type(value["b"]) is int
    assert str(value["d"][2]) == "2.50"  # the trailing zero is kept


def test_dumps_writes_decimals_exactly_and_compactly() -> None:
    out = dumps({"a": Decimal("0.1"), "b": [Decimal("2.50"), Decimal("1E+5"), 3, True, None]})
    assert out == b'{"a":0.1,"b":[2.50,1E+5,3,true,null]}'
    assert dumps({"s": 'é\n"', "t": ("x",)}) == '{"s":"é\\n\\"","t":["x"]}'.encode()


def test_dumps_then_loads_is_exact() -> None:
    value = {"x": [Decimal("0.30000000000000000000000000000000001"), Decimal("-0.0"), 10**40]}
    again = loads(dumps(value))
    assert [str(v) for v in again["x"]] == [
        "0.30000000000000000000000000000000001",
        "-0.0",
        str(10**40),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"NaN",
        b'{"a": Infinity}',
        b"[-Infinity]",
        b"\xff\xfe{}",
        b'"\\ud800"',
        b"[" * 100_000 + b"]" * 100_000,
        b"1" * 5000,
        b"01",
        b'{"a": 1,}',
        b"{'a': 1}",
        b"",
        '{"a": 1}'.encode("utf-16"),
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "not-utf8",
        "lone-surrogate",
        "deep-nesting",
        "int-beyond-digit-limit",
        "leading-zero",
        "trailing-comma",
        "single-quotes",
        "empty",
        "utf16",
    ],
)
def test_loads_refuses_what_is_not_strict_utf8_json(data: bytes) -> None:
    with pytest.raises(ValueError):
        loads(data)


def test_dumps_refuses_non_finite_numbers_and_unknown_types() -> None:
    with pytest.raises(TypeError):
        dumps({"a": Decimal("NaN")})
    with pytest.raises(TypeError):
        dumps([Decimal("Infinity")])
    with pytest.raises(ValueError):
        dumps(float("nan"))
    with pytest.raises(TypeError):
        dumps({1: "non-string key"})
    with pytest.raises(TypeError):
        dumps({"when": datetime.now(UTC)})


# --- decoding: valid events ----------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EventType))
def test_a_valid_event_decodes_with_payload_kept_as_received(event_type: EventType) -> None:
    doc = envelope(event_type)
    decoded = decode_event(record(doc))
    assert isinstance(decoded, DecodedEvent), decoded
    assert decoded.event_id == uuid.UUID(EVENT_ID)
    assert decoded.type is event_type
    assert decoded.tenant_id == TENANT
    assert decoded.occurred_at == datetime(2026, 1, 31, 11, 0, 1, 1, tzinfo=UTC)
    assert decoded.occurred_at.utcoffset() == timedelta(0)
    assert decoded.version == (decoded.occurred_at, decoded.event_id)
    assert decoded.payload == doc["payload"]  # unknown fields included
    assert dumps(decoded.payload) == dumps(doc["payload"])  # every decimal as written
    if event_type is EventType.POLICY:
        assert decoded.request_id is None
        assert decoded.row_key == TENANT
    else:
        assert decoded.request_id == REQUEST
        assert decoded.row_key == REQUEST


@pytest.mark.parametrize(
    ("change", "why"),
    [
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
    ],
)
def test_valid_variants_of_a_snapshot(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.SNAPSHOT)
    doc["payload"]["tenantId"] = doc["tenantId"] = "t"
    doc = mutated(doc, change)
    doc["payload"]["tenantId"] = doc["tenantId"]
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


@pytest.mark.parametrize(
    ("change", "why"),
    [
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
    ],
)
def test_valid_variants_of_a_cost(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.COST)
    change(doc["payload"])
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p.update(allowedProviders=[], preferredProvider="anyone"), "empty = all"),
        (lambda p: p.update(preferredProvider=None, maxCostPerRequestUsd=None), "nulls"),
        (lambda p: p.update(allowedProviders=[], deniedProviders=[]), "no lists"),
    ],
)
def test_valid_variants_of_a_policy(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.POLICY)
    change(doc["payload"])
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


# --- decoding: rejections ------------------------------------------------------------------

S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
SCHEMA, RULE = ReasonCode.SCHEMA_VIOLATION, ReasonCode.RULE_VIOLATION

_Mut = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> _Mut:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> _Mut:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in parents:
            target = target[part]
        del target[last]

    return change


REJECTIONS: list[tuple[str, EventType, _Mut, ReasonCode, str]] = [
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


@pytest.mark.parametrize(
    ("event_type", "change", "reason", "names"),
    [pytest.param(t, c, r, n, id=i) for i, t, c, r, n in REJECTIONS],
)
def test_a_broken_event_is_rejected_with_its_reason_and_field(
    event_type: EventType, change: _Mut, reason: ReasonCode, names: str
) -> None:
    doc = mutated(envelope(event_type), change)
    result = decode_event(record(doc))
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert names in result.message, result.message


@pytest.mark.parametrize(
    ("value", "reason", "names"),
    [
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
    ],
)
def test_bytes_that_are_not_an_event_object(value: bytes, reason: ReasonCode, names: str) -> None:
    result = decode_event(value)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert names in result.message


def test_size_is_checked_before_parsing() -> None:
    value = b"{" * 2000  # not even JSON: the size alone decides
    result = decode_event(value, max_bytes=1999)
    assert result == Rejection(
        ReasonCode.PAYLOAD_TOO_LARGE, "record value is 2000 bytes, over the 1999 limit"
    )
    good = record(envelope(EventType.COST))
    assert isinstance(decode_event(good, max_bytes=len(good)), DecodedEvent)
    rejected = decode_event(good, max_bytes=len(good) - 1)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is ReasonCode.PAYLOAD_TOO_LARGE


def test_the_default_limit_is_one_mebibyte() -> None:
    doc = envelope(EventType.COST)
    doc["payload"]["padding"] = ""
    base = len(record(doc))
    doc["payload"]["padding"] = "x" * (1_048_576 - base)
    assert len(record(doc)) == 1_048_576
    assert isinstance(decode_event(record(doc)), DecodedEvent)
    doc["payload"]["padding"] += "x"
    rejected = decode_event(record(doc))
    assert isinstance(rejected, Rejection)
    assert rejected.reason is ReasonCode.PAYLOAD_TOO_LARGE


def test_messages_are_bounded_and_never_echo_the_payload() -> None:
    secret = "s3cr3t-" * 100
    doc = envelope(EventType.POLICY)
    doc["payload"]["allowedProviders"] = [secret, secret]
    doc["payload"]["preferredProvider"] = secret
    result = decode_event(record(doc))
    assert isinstance(result, Rejection)
    assert len(result.message) <= 500
    assert secret not in result.message
    doc = envelope(EventType.SNAPSHOT)
    doc["type"] = secret
    result = decode_event(record(doc))
    assert isinstance(result, Rejection)
    assert result.reason is ReasonCode.UNSUPPORTED_EVENT_TYPE
    assert len(result.message) <= 500
    assert secret not in result.message


def test_several_errors_report_the_first_and_count_the_rest() -> None:
    doc = envelope(EventType.COST)
    doc["payload"].update(inputTokens="1", outputTokens="2", provider=3)
    result = decode_event(record(doc))
    assert isinstance(result, Rejection)
    assert result.message == (
        "payload.inputTokens: Input should be a valid integer, got string (and 2 more)"
    )


def test_decode_never_raises_on_odd_inputs() -> None:
    doc = envelope(EventType.COST)
    doc["payload"]["inputCostUsd"] = Decimal("1E+999999999")
    doc["payload"]["totalCostUsd"] = Decimal("1E-999999999")
    result = decode_event(record(doc))
    assert isinstance(result, Rejection)
    assert result.reason is ReasonCode.RULE_VIOLATION
    for value in (bytearray(record(envelope(EventType.COST))), memoryview(b"{}")):
        assert isinstance(decode_event(value), DecodedEvent | Rejection)  # type: ignore[arg-type]


# --- models ----------------------------------------------------------------------------------


def test_models_keep_unknown_fields_and_exact_decimals() -> None:
    snap = RoutingPlanSnapshot.model_validate(envelope(EventType.SNAPSHOT)["payload"])
    assert snap.model_extra == {
        "routerBuild": {"sha": "abc123", "flags": [1, Decimal("2.50"), None, True]}
    }
    assert snap.fallbacks[0].model_extra == {"weight": Decimal("0.5")}
    assert snap.costEstimate.totalCostUsd == Decimal("0.0012")
    assert snap.timestamp == datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)


def test_models_refuse_floats_for_money() -> None:
    with pytest.raises(ValidationError, match="never float"):
        ActualCost(
            inputTokens=1,
            outputTokens=1,
            inputCostUsd=0.1,
            outputCostUsd=Decimal("0.2"),
            totalCostUsd=Decimal("0.3"),
            provider="p",
        )


def test_a_rule_error_has_its_own_error_type() -> None:
    with pytest.raises(ValidationError) as caught:
        TenantRoutingPolicy.model_validate(
            {
                "tenantId": "t",
                "allowedProviders": ["a"],
                "deniedProviders": ["a"],
                "preferredProvider": None,
                "maxCostPerRequestUsd": None,
                "defaultStrategy": "cost",
            }
        )
    assert [e["type"] for e in caught.value.errors()] == [RULE_ERROR_TYPE]


@pytest.mark.parametrize(
    ("event_type", "change", "reason", "names"),
    [pytest.param(t, c, r, n, id=i) for i, t, c, r, n in REJECTIONS if r in (SCHEMA, RULE)],
)
def test_the_envelope_model_agrees_with_the_decoder(
    event_type: EventType, change: _Mut, reason: ReasonCode, names: str
) -> None:
    doc = mutated(envelope(event_type), change)
    with pytest.raises(ValidationError) as caught:
        Envelope.model_validate(doc)
    errors = caught.value.errors()
    assert ([e["type"] for e in errors] == [RULE_ERROR_TYPE]) == (reason is RULE), caught.value
    messages = [": ".join(format_error(e)[1:]) for e in errors]
    assert any(names in message for message in messages), messages


@pytest.mark.parametrize("event_type", list(EventType))
def test_the_envelope_model_accepts_valid_events(event_type: EventType) -> None:
    doc = envelope(event_type)
    model = Envelope.model_validate(doc)
    assert model.payload == doc["payload"]
    assert (
        type(model.payload_model).__name__
        == {
            S: "RoutingPlanSnapshot",
            C: "ActualCost",
            P: "TenantRoutingPolicy",
        }[event_type]
    )


# --- producer side -----------------------------------------------------------------------------


def test_build_event_keys_and_stamps_the_envelope() -> None:
    before = datetime.now(UTC)
    event = build_event(
        EventType.COST, envelope(EventType.COST)["payload"], tenant_id="t", request_id="r-9"
    )
    assert event.key == b"r-9"
    assert event.type is EventType.COST
    body = loads(event.value)
    assert body["schemaVersion"] == 1
    assert body["eventId"] == str(event.event_id)
    assert event.event_id.version == 4
    assert before <= event.occurred_at <= datetime.now(UTC)
    assert body["occurredAt"] == event.occurred_at.isoformat(timespec="microseconds")
    assert body["payload"]["totalCostUsd"] == Decimal("0.3")
    assert b'"totalCostUsd":0.3' in event.value


def test_build_event_for_a_policy_is_keyed_by_tenant_and_accepts_a_model() -> None:
    policy = TenantRoutingPolicy.model_validate(envelope(EventType.POLICY)["payload"])
    when = datetime(2026, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5)))
    event_id = uuid.UUID(EVENT_ID)
    event = build_event(
        EventType.POLICY, policy, tenant_id=TENANT, occurred_at=when, event_id=event_id
    )
    assert event.key == TENANT.encode()
    decoded = decode_event(event.value)
    assert isinstance(decoded, DecodedEvent)
    assert decoded.version == (when, event_id)
    assert decoded.payload == envelope(EventType.POLICY)["payload"]  # unknown "notes" kept
    assert b'"maxCostPerRequestUsd":0.50' in event.value


def test_build_event_with_a_snapshot_model_round_trips_the_timestamp() -> None:
    snap = RoutingPlanSnapshot.model_validate(envelope(EventType.SNAPSHOT)["payload"])
    event = build_event(EventType.SNAPSHOT, snap, tenant_id=TENANT, request_id=REQUEST)
    decoded = decode_event(event.value)
    assert isinstance(decoded, DecodedEvent)
    assert decoded.payload["timestamp"] == "2026-01-31T12:00:00.250000+00:00"


def test_build_event_refuses_what_the_consumer_would_reject() -> None:
    payload = envelope(EventType.COST)["payload"]
    payload["totalCostUsd"] = Decimal("1")
    with pytest.raises(ValueError, match=r"rule_violation: payload\.totalCostUsd"):
        build_event(EventType.COST, payload, tenant_id="t", request_id="r")
    with pytest.raises(ValueError, match="request_id is required"):
        build_event(EventType.SNAPSHOT, envelope(EventType.SNAPSHOT)["payload"], tenant_id=TENANT)
    with pytest.raises(ValueError, match="timezone"):
        build_event(
            EventType.POLICY,
            envelope(EventType.POLICY)["payload"],
            tenant_id=TENANT,
            occurred_at=datetime(2026, 1, 1),  # naive on purpose
        )
    unchecked = build_event(EventType.COST, payload, tenant_id="t", request_id="r", validate=False)
    rejected = decode_event(unchecked.value)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is ReasonCode.RULE_VIOLATION

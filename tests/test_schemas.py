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
from schemas.jsoncodec import nesting_depth
from schemas.models import RULE_ERROR_TYPE, format_error
from tests.samples import (
    NOT_AN_EVENT,
    NOT_STRICT_JSON,
    REJECTIONS,
    VALID_COST_VARIANTS,
    VALID_POLICY_VARIANTS,
    VALID_SNAPSHOT_VARIANTS,
    Change,
)
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
    "data", [v for _, v in NOT_STRICT_JSON], ids=[i for i, _ in NOT_STRICT_JSON]
)
def test_loads_refuses_what_is_not_strict_utf8_json(data: bytes) -> None:
    with pytest.raises(ValueError):
        loads(data)


def test_loads_reads_up_to_the_contracts_limits() -> None:
    assert loads(b"[" * 64 + b"]" * 64) is not None
    assert loads(b'{"a":' * 64 + b"1" + b"}" * 64) is not None
    assert loads(b"9" * 4300) == int("9" * 4300)
    assert loads(b"-" + b"9" * 4300) == -int("9" * 4300)
    assert loads(b'["' + b"[" * 100 + b'"]') == ["[" * 100]  # brackets in strings do not nest


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("{}", 1),
        ('{"a": []}', 2),
        ('{"a": "[[["}', 1),
        ('{"a\\"[": [[]]}', 3),
        ("[[]][[[]]]", 3),
        ('["unterminated [[', 1),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


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


@pytest.mark.parametrize(("change", "why"), VALID_SNAPSHOT_VARIANTS)
def test_valid_variants_of_a_snapshot(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.SNAPSHOT)
    doc["payload"]["tenantId"] = doc["tenantId"] = "t"
    doc = mutated(doc, change)
    doc["payload"]["tenantId"] = doc["tenantId"]
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


@pytest.mark.parametrize(("change", "why"), VALID_COST_VARIANTS)
def test_valid_variants_of_a_cost(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.COST)
    change(doc["payload"])
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


@pytest.mark.parametrize(("change", "why"), VALID_POLICY_VARIANTS)
def test_valid_variants_of_a_policy(change: Callable[[dict[str, Any]], object], why: str) -> None:
    doc = envelope(EventType.POLICY)
    change(doc["payload"])
    assert isinstance(decode_event(record(doc)), DecodedEvent), why


# --- decoding: rejections ------------------------------------------------------------------

S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
SCHEMA, RULE = ReasonCode.SCHEMA_VIOLATION, ReasonCode.RULE_VIOLATION


@pytest.mark.parametrize(
    ("event_type", "change", "reason", "names"),
    [pytest.param(t, c, r, n, id=i) for i, t, c, r, n in REJECTIONS],
)
def test_a_broken_event_is_rejected_with_its_reason_and_field(
    event_type: EventType, change: Change, reason: ReasonCode, names: str
) -> None:
    doc = mutated(envelope(event_type), change)
    result = decode_event(record(doc))
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert names in result.message, result.message


@pytest.mark.parametrize(("value", "reason", "names"), NOT_AN_EVENT)
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


DEEPER = "not valid JSON: nests deeper than 64 levels of arrays and objects"


def _nested(levels: int, kind: str) -> Any:
    value: Any = "leaf"
    for level in range(levels):
        as_list = kind == "array" or (kind == "mixed" and level % 2)
        value = [value, 1] if as_list else {"k": value, "n": 1}
    return value


@pytest.mark.parametrize("kind", ["object", "array", "mixed"])
@pytest.mark.parametrize("where", ["payload", "fallback"])
def test_a_record_nests_at_most_64_levels(kind: str, where: str) -> None:
    """Unknown fields are kept at any depth up to the limit: the envelope is level 1."""

    def at_depth(depth: int) -> bytes:
        doc = envelope(EventType.SNAPSHOT)
        if where == "payload":
            doc["payload"]["x"] = _nested(depth - 2, kind)  # envelope, payload
        else:
            doc["payload"]["fallbacks"][0]["x"] = _nested(depth - 4, kind)  # ..., list, item
        return record(doc)

    assert nesting_depth(at_depth(64).decode()) == 64
    assert isinstance(decode_event(at_depth(64)), DecodedEvent)
    assert decode_event(at_depth(65)) == Rejection(ReasonCode.INVALID_JSON, DEEPER)
    assert decode_event(at_depth(900)) == Rejection(ReasonCode.INVALID_JSON, DEEPER)


def test_the_depth_limit_comes_before_the_json_grammar() -> None:
    # Deterministic whatever else is wrong with the text, and whatever the stack depth.
    assert decode_event(b"[" * 65) == Rejection(ReasonCode.INVALID_JSON, DEEPER)
    assert decode_event(b'{"a": ' + b"[" * 70 + b"x") == Rejection(ReasonCode.INVALID_JSON, DEEPER)
    shallow = decode_event(b'{"a": "' + b"[" * 70 + b'"}')
    assert isinstance(shallow, Rejection)
    assert shallow.reason is ReasonCode.SCHEMA_VIOLATION  # a string of brackets is flat


def test_an_integer_literal_has_at_most_4300_digits() -> None:
    doc = envelope(EventType.COST)
    doc["payload"]["x"] = int("7" * 4300)
    assert isinstance(decode_event(record(doc)), DecodedEvent)
    doc["payload"]["x"] = "@"
    too_long = record(doc).replace(b'"@"', b"-" + b"7" * 4301)
    assert decode_event(too_long) == Rejection(
        ReasonCode.INVALID_JSON,
        "not valid JSON: an integer literal has 4301 digits, over the limit of 4300",
    )
    doc["payload"]["x"] = Decimal("7" * 5000 + ".5")  # not an integer literal: no limit
    assert isinstance(decode_event(record(doc)), DecodedEvent)


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
    event_type: EventType, change: Change, reason: ReasonCode, names: str
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


@pytest.mark.parametrize(
    ("event_type", "change"),
    [(EventType.COST, c) for c, _ in VALID_COST_VARIANTS]
    + [(EventType.POLICY, c) for c, _ in VALID_POLICY_VARIANTS],
)
def test_the_envelope_model_accepts_the_valid_variants(
    event_type: EventType, change: Change
) -> None:
    # A cost payload's unknown "tenantId" field is not the tenant rule's (it was mistaken for it).
    doc = envelope(event_type)
    change(doc["payload"])
    assert Envelope.model_validate(doc).payload == doc["payload"]


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

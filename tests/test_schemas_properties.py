"""Properties of the contract over generated events (hypothesis).

* Every generated valid event decodes, and its payload model re-encodes to the same JSON: every
  field (unknown ones included, nested too) and every decimal digit for digit.
* Every mutation that breaks exactly one rule is rejected with that rule's reason code, and the
  pydantic :class:`~schemas.Envelope` model agrees with ``decode_event``. Each decode reason code
  is covered by at least one mutation kind (checked below).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    DECODE_REASONS,
    PAYLOAD_MODELS,
    DecodedEvent,
    Envelope,
    EventType,
    ReasonCode,
    Rejection,
    decode_event,
    dumps,
    loads,
    parse_rfc3339,
)
from schemas.build import to_json_value
from schemas.models import RULE_ERROR_TYPE
from schemas.rules import check_cost
from tests.mutations import MUTATIONS
from tests.strategies import EXACT, events, instants

FAST = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
R = ReasonCode


def _assert_same_json(actual: Any, expected: Any, path: str) -> None:
    """Equal as JSON text, value by value: Decimal("0.10") is not Decimal("0.1") here."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_same_json(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same_json(a, e, f"{path}[{index}]")
    else:
        assert dumps(actual) == dumps(expected), path


@settings(FAST, max_examples=60)
@given(doc=events())
def test_valid_events_decode_and_re_encode_every_field_exactly(doc: dict[str, Any]) -> None:
    decoded = decode_event(dumps(doc))
    assert isinstance(decoded, DecodedEvent), decoded
    assert str(decoded.event_id) == doc["eventId"]
    assert decoded.occurred_at == parse_rfc3339(doc["occurredAt"])
    assert (decoded.tenant_id, decoded.request_id) == (doc["tenantId"], doc.get("requestId"))
    _assert_same_json(decoded.payload, doc["payload"], "payload")

    model = PAYLOAD_MODELS[decoded.type].model_validate(decoded.payload)
    again = to_json_value(model.model_dump(mode="python"))
    expected = copy.deepcopy(doc["payload"])
    if decoded.type is EventType.SNAPSHOT:
        # A timestamp is re-encoded in one canonical RFC 3339 form: the same instant.
        assert parse_rfc3339(again.pop("timestamp")) == parse_rfc3339(expected.pop("timestamp"))
    _assert_same_json(again, expected, "payload")


@FAST
@given(doc=events())
def test_the_envelope_model_accepts_every_valid_event(doc: dict[str, Any]) -> None:
    model = Envelope.model_validate(doc)
    assert model.payload == doc["payload"]


@FAST
@given(
    moment=instants,
    fraction_digits=st.integers(0, 9),
    zulu=st.booleans(),
    lower=st.booleans(),
)
def test_rfc3339_reads_every_form_as_the_instant_and_offset_written(
    moment: datetime, fraction_digits: int, zulu: bool, lower: bool
) -> None:
    """Upper or lower case, Z or an offset, 0-9 fraction digits (truncated to microseconds)."""
    written = moment.astimezone(UTC) if zulu else moment
    digits = (f"{moment.microsecond:06d}" + "987")[:fraction_digits]
    text = written.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "")
    offset = written.strftime("%z")
    text += "Z" if zulu else f"{offset[:3]}:{offset[3:]}"
    if lower:
        text = text.lower()
    expected = written.replace(microsecond=int(digits[:6].ljust(6, "0")) if digits else 0)
    parsed = parse_rfc3339(text)
    assert parsed == expected, text
    assert parsed.utcoffset() == expected.utcoffset(), text


# Amounts as producers write them, and totals within a few 1e-9 of the tolerance either side.
amounts = st.builds(
    lambda m, e: Decimal(m).scaleb(e, EXACT), st.integers(0, 10**17), st.integers(-18, 0)
)
near_tolerance = st.builds(
    lambda sign, n: sign * (Decimal("0.000001") + Decimal(n).scaleb(-12)),
    st.sampled_from([1, -1]),
    st.integers(-3_000, 3_000),  # within 3e-9 of the tolerance, by steps of 1e-12
)


@settings(FAST, max_examples=400)
@given(cost_in=amounts, cost_out=amounts, off=near_tolerance | amounts)
def test_the_cost_rule_on_binary_floats_proves_only_what_holds_exactly(
    cost_in: Decimal, cost_out: Decimal, off: Decimal
) -> None:
    """check_cost on the nearest floats (how the consumer's fast decoder reads JSON numbers)
    is sound: when it finds no problem, the exact rule finds none either."""
    total = EXACT.add(EXACT.add(cost_in, cost_out), off)
    exact = SimpleNamespace(inputCostUsd=cost_in, outputCostUsd=cost_out, totalCostUsd=total)
    floats = SimpleNamespace(**{k: float(v) for k, v in vars(exact).items()})
    if check_cost(floats) is None:
        assert check_cost(exact) is None, (cost_in, cost_out, total)
    if abs(off) <= Decimal("0.000000998") and max(cost_in, cost_out, total) <= 10**5:
        assert check_cost(floats) is None  # and it decides the everyday amounts


def test_every_decode_reason_code_has_a_mutation() -> None:
    assert {reason for _, reason, _ in MUTATIONS.values()} == set(DECODE_REASONS)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@FAST
@given(data=st.data())
def test_a_single_broken_rule_is_rejected_with_its_reason(name: str, data: st.DataObject) -> None:
    types, reason, mutate = MUTATIONS[name]
    doc = data.draw(events(data.draw(st.sampled_from(types))))
    out = mutate(data.draw, doc)
    value, max_bytes = out if isinstance(out, tuple) else (out, 1_048_576)
    result = decode_event(value, max_bytes=max_bytes)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert len(result.message) <= 500
    if reason in (R.SCHEMA_VIOLATION, R.RULE_VIOLATION):
        # The pydantic Envelope model, the slow reference, says the same.
        with pytest.raises(ValidationError) as caught:
            Envelope.model_validate(loads(value))
        is_rule = [e["type"] for e in caught.value.errors()] == [RULE_ERROR_TYPE]
        assert is_rule == (reason is R.RULE_VIOLATION), caught.value

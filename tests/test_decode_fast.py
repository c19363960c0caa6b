"""The consumer's fast decoder is the reference: ``pipeline.decode.decode_event(v)`` accepts
exactly what ``schemas.decode_event(v)`` accepts, with the same envelope and, when it gives the
payload's text, a text that is in the record as written and loads to the reference's payload,
for valid records (which must take the fast path) and for every kind of invalid one (which the
reference then decides, with its own rejection).

"Exactly" is :func:`tests.checks.result_differences`: the same rejection reason and message, or
the same envelope field by field and the payload's values type for type (int is not Decimal,
bool is not int), Decimals digit for digit (``0.10`` is not ``0.1``) and keys in the same order.
Sources: the hypothesis generators of valid events (tests/strategies.py) and the single-rule
mutations (tests/mutations.py), every sample record of the schema tests (tests/samples.py),
hand-written edges where msgspec's grammar and the stdlib's could part (duplicate keys, UUID and
RFC 3339 forms, numbers, UTF-8, nesting), and 20,000 inputs of the fuzz generator
(tests/generators.py; the 1,000,000-input run checks the same on every input).
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consumer.pipeline.batch
from consumer.pipeline import decode as fastdecode
from consumer.pipeline.decode import FAST_MAX_BYTES, ConsumerEvent, fast_path
from schemas import MAX_DEPTH, DecodedEvent, EventType, Rejection, decode_event, dumps
from tests.bounds import boundary_records
from tests.checks import result_differences
from tests.edges import (
    EDGES,
    VALID_SNAPSHOT,
    json_literal,
    prefixed,
    suffixed,
    valid_doc,
    with_value,
)
from tests.fuzzing import run_fuzz
from tests.generators import hostile_inputs, mutated_inputs
from tests.generators import valid_envelopes as fuzz_envelopes
from tests.mutations import MUTATIONS
from tests.samples import (
    NOT_AN_EVENT,
    NOT_STRICT_JSON,
    REJECTIONS,
    VALID_COST_VARIANTS,
    VALID_POLICY_VARIANTS,
    VALID_SNAPSHOT_VARIANTS,
)
from tests.schemas_helpers import envelope, mutated, record
from tests.strategies import events

MAX_BYTES = 1_048_576
DIFFERENTIAL = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, max_examples=150
)


def assert_identical(value: Any, max_bytes: int = MAX_BYTES) -> DecodedEvent | Rejection:
    """The fast decoder's result is the reference's; so is its fast path's, when it takes it."""
    reference = decode_event(value, max_bytes=max_bytes)
    fast = fastdecode.decode_event(value, max_bytes=max_bytes)
    assert result_differences(fast, reference, value) == [], repr(value)[:300]
    quick = fast_path(value, max_bytes)
    if quick is not None:
        assert isinstance(reference, DecodedEvent), repr(value)[:300]
        assert result_differences(quick, reference, value) == [], repr(value)[:300]
    elif isinstance(fast, ConsumerEvent):
        assert fast.payload_json is None, "the reference's events keep the whole record"
    return reference


def test_the_consumer_decodes_with_the_fast_decoder() -> None:
    assert vars(consumer.pipeline.batch)["decode_event"] is fastdecode.decode_event


# --- generated: valid events and single-rule mutations ----------------------------------------


@DIFFERENTIAL
@given(doc=events())
def test_every_generated_valid_event_takes_the_fast_path_with_the_reference_result(
    doc: dict[str, Any],
) -> None:
    value = dumps(doc)
    assert isinstance(assert_identical(value), DecodedEvent)
    brackets = value.count(b"[") + value.count(b"{")  # the fast path's bound on the depth
    if len(value) <= FAST_MAX_BYTES and brackets <= MAX_DEPTH and floats_decide(doc["payload"]):
        assert fast_path(value, MAX_BYTES) is not None, value[:300]


FLOAT_MARGIN = Decimal("0.000000001")


def floats_decide(payload: dict[str, Any]) -> bool:
    """Whether the fast path's binary floats can prove this valid payload's money rules.

    Not when a money literal with a fraction or exponent equals its bound (``0.0`` is not read
    as a float above 0, though valid), and not for a cost whose amounts exceed 1e6 or whose
    total is within 1e-9 of the tolerance: those valid records are the reference's to decide.
    """
    names = ("inputCostUsd", "outputCostUsd", "totalCostUsd", "maxCostPerRequestUsd")
    money = [payload.get(k) for k in names] + [payload.get("costEstimate", {}).get("totalCostUsd")]
    if any(type(v) is Decimal and v == 0 and not str(v).lstrip("-").isdigit() for v in money):
        return False  # a zero written with a fraction or an exponent: a float, not above 0
    if "totalCostUsd" not in payload:
        return True
    cost_in, cost_out, total = (Decimal(payload[k]) for k in names[:3])
    if max(abs(total), abs(cost_in), abs(cost_out)) > 10**6:
        return False
    return abs(total - cost_in - cost_out) <= Decimal("0.000001") - FLOAT_MARGIN


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@settings(DIFFERENTIAL, max_examples=40)
@given(data=st.data())
def test_every_single_rule_mutation_gets_the_reference_rejection(
    name: str, data: st.DataObject
) -> None:
    types, reason, mutate = MUTATIONS[name]
    doc = data.draw(events(data.draw(st.sampled_from(types))))
    out = mutate(data.draw, doc)
    value, max_bytes = out if isinstance(out, tuple) else (out, MAX_BYTES)
    result = assert_identical(value, max_bytes)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result


@settings(DIFFERENTIAL, max_examples=300)
@given(st.binary(max_size=512))
def test_random_bytes_get_the_reference_result(value: bytes) -> None:
    assert_identical(value)


@settings(DIFFERENTIAL, max_examples=500)
@given(
    mantissa=st.integers(0, 10**20),
    exponent=st.integers(-30, 30),
    form=st.sampled_from(["{}", "{:E}", "{:f}"]),
)
def test_msgspec_reads_a_json_number_as_the_nearest_float(
    mantissa: int, exponent: int, form: str
) -> None:
    """The premise of the fast path's money checks (schemas.rules.check_cost on floats, bounds
    as float comparisons): msgspec rounds a JSON number to the nearest binary64 value."""
    literal = form.format(Decimal(mantissa).scaleb(exponent))
    if not any(c in literal for c in ".Ee"):
        literal += ".0"  # an integer literal is read as an int, exactly: not this premise's case
    assert msgspec.json.decode(literal.encode(), type=float) == float(Decimal(literal)), literal


# --- every bound of the JSON Schema (tests/bounds.py) ----------------------------------------

BOUNDS = boundary_records()


@pytest.mark.parametrize(("name", "kind", "value"), BOUNDS, ids=[n for n, _, _ in BOUNDS])
def test_records_at_every_bound_of_the_contract_get_the_reference_result(
    name: str, kind: str, value: bytes
) -> None:
    """The bounds are read from schemas/ at test time: whatever the fast path derives its types
    from, it must agree with the reference at the contract's bounds of the day."""
    result = assert_identical(value)
    if kind in ("string", "integer", "array") and isinstance(result, DecodedEvent):
        assert fast_path(value, MAX_BYTES) is not None, name  # msgspec checks these in C


def test_the_bounds_cover_every_constrained_field() -> None:
    kinds = {kind for _, kind, _ in BOUNDS}
    assert kinds >= {"string", "integer", "number", "array", "date-time", "uuid"}
    valid = [n for n, _, v in BOUNDS if isinstance(decode_event(v), DecodedEvent)]
    invalid = len(BOUNDS) - len(valid)
    assert len(valid) > 50, len(valid)  # both sides of the bounds, well covered
    assert invalid > 50, invalid


# --- every sample record of the schema tests (tests/samples.py) -----------------------------


def _schema_test_samples() -> list[tuple[str, bytes]]:
    samples: list[tuple[str, bytes]] = []
    for event_type in EventType:
        samples.append((f"valid-{event_type}", record(envelope(event_type))))
    for change, why in VALID_SNAPSHOT_VARIANTS:
        doc = envelope(EventType.SNAPSHOT)
        doc["payload"]["tenantId"] = doc["tenantId"] = "t"
        doc = mutated(doc, change)
        doc["payload"]["tenantId"] = doc["tenantId"]
        samples.append((f"snapshot-{why}", record(doc)))
    for event_type, variants in (
        (EventType.COST, VALID_COST_VARIANTS),
        (EventType.POLICY, VALID_POLICY_VARIANTS),
    ):
        for change, why in variants:
            doc = envelope(event_type)
            change(doc["payload"])
            samples.append((f"{event_type}-{why}", record(doc)))
    for name, event_type, change, _, _ in REJECTIONS:
        samples.append((f"rejection-{name}", record(mutated(envelope(event_type), change))))
    for value, _, _ in NOT_AN_EVENT:
        samples.append(("not-an-event", value))
    for _, value in NOT_STRICT_JSON:
        samples.append(("not-strict-json", value))
    return samples


SCHEMA_SAMPLES = _schema_test_samples()


def test_the_schema_tests_samples_are_all_here() -> None:
    assert len(SCHEMA_SAMPLES) >= len(REJECTIONS) + 30


@pytest.mark.parametrize(("name", "value"), SCHEMA_SAMPLES, ids=[n for n, _ in SCHEMA_SAMPLES])
def test_every_sample_of_the_schema_tests_gets_the_reference_result(
    name: str, value: bytes
) -> None:
    assert_identical(value)


def test_the_schema_tests_valid_variants_take_the_fast_path() -> None:
    valid = {n: v for n, v in SCHEMA_SAMPLES if isinstance(decode_event(v), DecodedEvent)}
    assert len(valid) >= 20
    # Nanoseconds: msgspec rounds them, the reference truncates, so the reference decides. An
    # unknown envelope field: the typed view refuses it (the payload text might not stand alone).
    # A total 1e-6 off, or amounts of 1e30: binary floats cannot prove the cost rule.
    slow = {n for n, v in valid.items() if fast_path(v, MAX_BYTES) is None}
    assert slow == {
        "snapshot-ns",
        "snapshot-unknown envelope field",
        "routing.cost-off by exactly 1e-6",
        "routing.cost-off by exactly -1e-6",
        "routing.cost-huge: exact beyond 28 digits",
    }


@pytest.mark.parametrize(("name", "value"), EDGES, ids=[n for n, _ in EDGES])
def test_edge_records_get_the_reference_result(name: str, value: bytes) -> None:
    assert_identical(value)


@pytest.mark.parametrize(
    "name",
    [
        "dup-tenant-first-other",
        "dup-count-first-1",
        "dup-extra-keys",
        "uuid-upper",
        "occurred-lower-t-z",
        "occurred-offset-minus-zero",
        "occurred-fraction-6",
        "occurred-fraction-1",
        "timestamp-lower-t-z",
        "count-huge",
        "money-exponent",
        "extra-int64-edges",
        "extra-float-forms",
        "extra-long-int-2000",
        "cost-int-amounts",
        "policy-request-given",
        "policy-max-cost-int",
        "tenant-128-non-ascii",
        "tenant-astral",
        "tenant-escaped",
        "tenant-escaped-pair",
        "nul-escaped",
        "whitespace-json",
        "deep-56-objects-payload",
        "at-fast-limit",
        "long-string-1k",
    ],
)
def test_valid_edges_take_the_fast_path(name: str) -> None:
    value = dict(EDGES)[name]
    assert isinstance(decode_event(value), DecodedEvent)
    assert fast_path(value, MAX_BYTES) is not None


@pytest.mark.parametrize(
    "name", ["money-minus-zero", "cost-total-off-1e-6", "cost-int-amounts", "policy-max-cost-tiny"]
)
def test_valid_money_that_binary_floats_cannot_prove_is_the_references(name: str) -> None:
    """Money is read as an int or a binary float, checked in C: ``-0.0``, a total off by exactly
    the tolerance or a positive amount under the smallest float are valid, yet not provable
    there (``cost-int-amounts`` is: ints are exact)."""
    value = dict(EDGES)[name]
    assert isinstance(assert_identical(value), DecodedEvent)
    assert (fast_path(value, MAX_BYTES) is None) is (name != "cost-int-amounts")


def test_the_size_limits_are_the_callers_and_the_fast_paths() -> None:
    value = VALID_SNAPSHOT
    assert isinstance(assert_identical(value, max_bytes=len(value)), DecodedEvent)
    rejected = assert_identical(value, max_bytes=len(value) - 1)
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "payload_too_large"
    assert fast_path(dict(EDGES)["over-fast-limit"], MAX_BYTES) is None
    wide = dict(EDGES)["many-brackets-wide"]
    assert wide.count(b"[") > MAX_DEPTH
    assert fast_path(wide, MAX_BYTES) is None
    assert isinstance(assert_identical(wide), DecodedEvent)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("depth-64-payload", True),
        ("depth-65-payload", False),
        ("depth-64-fallback", True),
        ("depth-65-fallback", False),
        ("depth-65-skipped", False),
        ("depth-65-dup-event-id", False),
        ("depth-65-dup-payload", False),
        ("int-4300-digits", True),
        ("int-4301-digits", False),
    ],
)
def test_the_depth_and_digit_limits_are_the_references(name: str, valid: bool) -> None:
    result = assert_identical(dict(EDGES)[name])
    assert isinstance(result, DecodedEvent) is valid, result
    if not valid:
        assert isinstance(result, Rejection)
        assert result.reason == "invalid_json"


def test_inputs_that_are_not_bytes_get_the_reference_result() -> None:
    for value in (None, bytearray(VALID_SNAPSHOT), memoryview(b"{}"), VALID_SNAPSHOT.decode()):
        assert_identical(value)


# --- the fuzz generator ----------------------------------------------------------------------


def test_twenty_thousand_fuzz_inputs_get_the_reference_result() -> None:
    report = run_fuzz(20_000, seed=20_261_125, differential=True)
    assert report.inputs == 20_000
    assert report.mismatches == 0, report.examples
    assert report.crashes == 0, report.examples
    assert report.fast_accepted > 1_000, "valid records took the fast path"
    assert report.payload_texts > 0.9 * report.fast_accepted, "with the payload's text alone"
    assert len(report.reasons) >= 6, report.reasons


def test_the_fuzz_runs_hostile_shapes_and_mutations_agree() -> None:
    for value in hostile_inputs():
        assert_identical(value)
    rng = random.Random(11)
    corpus = fuzz_envelopes(rng, 60)
    source = mutated_inputs(rng, corpus)
    for _ in range(2_000):
        assert_identical(next(source))


def test_the_differences_checker_can_fail() -> None:
    """result_differences sees what ``==`` does not: Decimal digits, int vs Decimal, key order."""
    a = decode_event(with_value("payload.x", Decimal("1.0")))
    b = decode_event(with_value("payload.x", Decimal("1.00")))
    c = decode_event(with_value("payload.x", 1))
    assert isinstance(a, DecodedEvent)
    assert isinstance(b, DecodedEvent)
    assert a == b
    assert result_differences(a, b)
    assert a == c
    assert result_differences(a, c)
    doc = valid_doc()
    reordered = json.loads(dumps(doc), parse_float=Decimal)
    reordered["payload"] = dict(reversed(list(reordered["payload"].items())))
    d = decode_event(dumps(reordered))
    assert d == decode_event(dumps(doc))
    assert result_differences(d, decode_event(dumps(doc)))


# --- the payload's text: alone when it provably stores (and fails) as the whole record ---------


@pytest.mark.parametrize(
    "name",
    [n for n, _ in SCHEMA_SAMPLES if n.startswith(("valid-", "snapshot-", "routing.", "tenant."))]
    + ["dup-extra-keys", "extra-float-forms", "extra-long-int-2000", "nul-escaped"]
    + ["whitespace-json", "dup-count-last-1", "payload-first"],
)
def test_fast_events_carry_the_payloads_text_as_written(name: str) -> None:
    value = dict(SCHEMA_SAMPLES + EDGES + [("payload-first", _payload_first())])[name]
    reference = decode_event(value)
    if not isinstance(reference, DecodedEvent) or fast_path(value, MAX_BYTES) is None:
        return  # invalid or left to the reference: the tests above cover those
    event = fastdecode.decode_event(value)
    assert isinstance(event, ConsumerEvent)
    assert event.payload_json is not None
    start = value.index(b'"payload":') + len(b'"payload":')
    assert value[start:].lstrip().startswith(event.payload_json)
    assert result_differences(event, reference, value) == []


def test_the_sample_events_take_the_fast_path_with_the_payloads_text() -> None:
    for event_type in EventType:
        event = fast_path(record(envelope(event_type)), MAX_BYTES)
        assert event is not None
        assert event.payload_json is not None
        assert event.payload_json.startswith(b"{")
        assert event.payload_json.endswith(b"}")


def _payload_first() -> bytes:
    """A valid snapshot whose payload is its first member (the others follow)."""
    doc = valid_doc()
    return dumps({"payload": doc.pop("payload"), **doc})


def test_a_payload_first_record_carries_its_payloads_text() -> None:
    event = fast_path(_payload_first(), MAX_BYTES)
    assert event is not None
    assert event.payload_json is not None


def _duplicate_payload(first: str) -> bytes:
    doc = valid_doc()
    payload = dict(doc["payload"], x="@")
    return prefixed('"payload":' + dumps(payload).decode().replace('"@"', first))


WHOLE_RECORD: list[tuple[str, bytes]] = [
    # outside the payload, an escape PostgreSQL may refuse (it refuses \u0000)
    ("envelope-tenant-escaped", dict(EDGES)["tenant-escaped"]),
    ("envelope-request-nul", json_literal("requestId", '"r\\u0000"', EventType.COST)),
    # a second payload key: PostgreSQL parses (and may refuse) the first one too
    ("duplicate-payload", _duplicate_payload('"fine"')),
    ("duplicate-payload-nul", _duplicate_payload('"\\u0000"')),
    # an unknown envelope field: any JSON, a number out of numeric's range too (the reference)
    ("unknown-envelope-field", suffixed('"x":1E+999999')),
]


@pytest.mark.parametrize(("name", "value"), WHOLE_RECORD, ids=[n for n, _ in WHOLE_RECORD])
def test_events_whose_payload_text_might_not_stand_alone_keep_the_whole_record(
    name: str, value: bytes
) -> None:
    reference = assert_identical(value)
    assert isinstance(reference, DecodedEvent), reference
    event = fastdecode.decode_event(value)
    assert isinstance(event, ConsumerEvent)
    assert event.payload_json is None

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
    if len(value) <= FAST_MAX_BYTES and floats_decide(doc["payload"]):
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


# --- hand-written edges: where msgspec's grammar and the stdlib's could part ----------------


def _doc(event_type: EventType = EventType.SNAPSHOT) -> dict[str, Any]:
    doc = envelope(event_type)
    if "tenantId" in doc["payload"]:
        doc["payload"]["tenantId"] = doc["tenantId"]
    return doc


def _with(path: str, value: object, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    doc = _doc(event_type)
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return dumps(doc)


def _json_literal(path: str, literal: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """A record whose field at ``path`` is the JSON text ``literal`` exactly."""
    return _with(path, "@@literal@@", event_type).replace(b'"@@literal@@"', literal.encode())


def _prefix(fields: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """``fields`` (JSON members) written before the record's own: duplicates come first."""
    return b"{" + fields.encode() + b"," + dumps(_doc(event_type))[1:]


def _suffix(fields: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """``fields`` written after the record's own: duplicates come last (they win)."""
    return dumps(_doc(event_type))[:-1] + b"," + fields.encode() + b"}"


def _in_payload(fields: str, *, last: bool, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    value = dumps(_doc(event_type))
    start = value.index(b'"payload":{') + len(b'"payload":{')
    if not last:
        return value[:start] + fields.encode() + b"," + value[start:]
    end = value.rindex(b"}", 0, len(value) - 1)
    return value[:end] + b"," + fields.encode() + value[end:]


def _tenant(tenant: str) -> bytes:
    """A snapshot of ``tenant`` (envelope and payload)."""
    doc = _doc()
    doc["tenantId"] = doc["payload"]["tenantId"] = tenant
    return dumps(doc)


def _two_types(first: EventType, last: EventType, **changes: Any) -> bytes:
    """A record with two "type" keys and a payload with the fields of both types."""
    doc = _doc(EventType.POLICY)
    doc["payload"] = {**_doc(EventType.COST)["payload"], **doc["payload"], **changes}
    doc.pop("requestId", None)
    value = dumps(doc).replace(b'"type":"tenant.policy",', b"")
    return (
        b'{"type":"%s",' % first.value.encode()
        + value[1:-1]
        + b',"type":"%s"}' % (last.value.encode())
    )


S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
_VALID_SNAPSHOT = dumps(_doc())

EDGES: list[tuple[str, bytes]] = [
    # duplicate keys: the reference keeps the last
    ("dup-tenant-first-other", _prefix('"tenantId":"other"')),
    ("dup-tenant-last-other", _suffix('"tenantId":"other"')),
    ("dup-tenant-first-number", _prefix('"tenantId":7')),
    ("dup-tenant-last-number", _suffix('"tenantId":7')),
    ("dup-type-first-cost", _prefix('"type":"routing.cost"')),
    ("dup-type-last-cost", _suffix('"type":"routing.cost"')),
    ("dup-type-last-policy", _suffix('"type":"tenant.policy"')),
    ("dup-type-first-unknown", _prefix('"type":"routing.x"')),
    ("dup-type-policy-then-cost", _two_types(P, C)),
    ("dup-type-cost-then-policy", _two_types(C, P)),
    ("dup-type-policy-then-cost-tokens", _two_types(P, C, inputTokens=-1)),
    ("dup-type-cost-then-policy-tokens", _two_types(C, P, inputTokens=-1)),
    ("dup-version-first-2", _prefix('"schemaVersion":2')),
    ("dup-version-last-2", _suffix('"schemaVersion":2')),
    ("dup-event-id-first-bad", _prefix('"eventId":"x"')),
    ("dup-event-id-last-hex", _suffix('"eventId":"0b8a3f9c52a44c1e9d0f2f1e4e6b7a10"')),
    ("dup-occurred-last-space", _suffix('"occurredAt":"2026-01-31 12:00:00Z"')),
    ("dup-payload-first-cost", _prefix('"payload":' + dumps(_doc(C)["payload"]).decode())),
    ("dup-payload-last-cost", _suffix('"payload":' + dumps(_doc(C)["payload"]).decode())),
    ("dup-request-last-null", _suffix('"requestId":null')),
    ("dup-count-first-1", _in_payload('"candidateCount":1', last=False)),
    ("dup-count-last-1", _in_payload('"candidateCount":1', last=True)),
    (
        "dup-fallbacks-last-many",
        _in_payload('"fallbacks":' + '[{"provider":"p","model":"m"}]' * 1, last=True),
    ),
    ("dup-timestamp-last-bad", _in_payload('"timestamp":"2026-01-31T12:00:00+0000"', last=True)),
    ("dup-money-last-string", _in_payload('"costEstimate":{"totalCostUsd":"1"}', last=True)),
    ("dup-extra-keys", _in_payload('"k":1,"k":2.50,"k":[1]', last=True)),
    # eventId forms
    ("uuid-upper", _with("eventId", "0B8A3F9C-52A4-4C1E-9D0F-2F1E4E6B7A10")),
    ("uuid-hex-only", _with("eventId", "0b8a3f9c52a44c1e9d0f2f1e4e6b7a10")),
    ("uuid-braces", _with("eventId", "{0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a1}")),
    ("uuid-urn", _with("eventId", "urn:uuid:0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10")),
    ("uuid-hyphen-moved", _with("eventId", "0b8a3f9c5-2a4-4c1e-9d0f-2f1e4e6b7a10")),
    ("uuid-escaped", _json_literal("eventId", '"\\u0030b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10"')),
    ("uuid-non-ascii", _with("eventId", "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a1\u0661")),
    # RFC 3339 forms, in occurredAt and in the snapshot's timestamp
    *(
        (f"{field}-{why}", _with(path, text))
        for field, path in (("occurred", "occurredAt"), ("timestamp", "payload.timestamp"))
        for why, text in (
            ("lower-t-z", "2026-01-31t12:00:00z"),
            ("space", "2026-01-31 12:00:00Z"),
            ("no-colon-offset", "2026-01-31T12:00:00+0100"),
            ("offset-hours-only", "2026-01-31T12:00:00+01"),
            ("offset-minus-zero", "2026-01-31T12:00:00-00:00"),
            ("offset-80-minutes", "2026-01-31T12:00:00+00:80"),
            ("offset-24", "2026-01-31T12:00:00+24:00"),
            ("fraction-7-round-up", "2026-01-31T23:59:59.9999995Z"),
            ("fraction-7-down", "2026-01-31T12:00:00.1234561Z"),
            ("fraction-6", "2026-01-31T12:00:00.123456Z"),
            ("fraction-1", "2026-01-31T12:00:00.5Z"),
            ("fraction-empty", "2026-01-31T12:00:00.Z"),
            ("fraction-comma", "2026-01-31T12:00:00,5Z"),
            ("no-seconds", "2026-01-31T12:00Z"),
            ("naive", "2026-01-31T12:00:00"),
            ("leap-second", "2016-12-31T23:59:60Z"),
            ("feb-29-2024", "2024-02-29T00:00:00Z"),
            ("feb-29-2026", "2026-02-29T00:00:00Z"),
            ("year-0", "0000-01-01T00:00:00Z"),
            ("year-1-plus-1h", "0001-01-01T00:30:00+01:00"),
            ("year-1-z", "0001-01-01T00:00:00Z"),
            ("year-9999-minus", "9999-12-31T23:30:00-01:00"),
            ("year-9999-z", "9999-12-31T23:59:59.999999Z"),
            ("hour-24", "2026-01-31T24:00:00Z"),
            ("trailing-space", "2026-01-31T12:00:00Z "),
            ("basic-format", "20260131T120000Z"),
            ("arabic-digit", "2026-01-31T12:00:0\u0661Z"),
        )
    ),
    # integers, numbers, money
    ("count-1.0", _json_literal("payload.candidateCount", "3.0")),
    ("count-true", _json_literal("payload.candidateCount", "true")),
    ("count-huge", _json_literal("payload.candidateCount", "1" + "0" * 30)),
    ("count-3e0", _json_literal("payload.candidateCount", "3e0")),
    ("version-1.0", _json_literal("schemaVersion", "1.0")),
    ("version-true", _json_literal("schemaVersion", "true")),
    ("version-1e0", _json_literal("schemaVersion", "1e0")),
    ("version-huge", _json_literal("schemaVersion", "9" * 40)),
    ("version-minus-0", _json_literal("schemaVersion", "-0")),
    ("money-string", _with("payload.costEstimate.totalCostUsd", "0.1")),
    ("money-minus-zero", _json_literal("payload.costEstimate.totalCostUsd", "-0.0")),
    ("money-minus-zero-int", _json_literal("payload.costEstimate.totalCostUsd", "-0")),
    ("money-tiny-negative", _json_literal("payload.costEstimate.totalCostUsd", "-1E-400")),
    ("money-huge", _json_literal("payload.costEstimate.totalCostUsd", "1E+400")),
    ("money-exponent", _json_literal("payload.costEstimate.totalCostUsd", "12E-4")),
    ("money-null", _json_literal("payload.costEstimate.totalCostUsd", "null")),
    ("money-true", _json_literal("payload.costEstimate.totalCostUsd", "true")),
    ("money-big-int", _json_literal("payload.costEstimate.totalCostUsd", "9" * 30)),
    ("money-nan", _json_literal("payload.costEstimate.totalCostUsd", "NaN")),
    ("money-missing", _with("payload.costEstimate", {"currency": "USD"})),
    (
        "extra-int64-edges",
        _json_literal(
            "payload.x",
            "[9223372036854775807,-9223372036854775808,18446744073709551615,18446744073709551616,-9223372036854775809]",
        ),
    ),
    (
        "extra-float-forms",
        _json_literal(
            "payload.x", "[0.1,1.10,1e5,1E-5,-0.0,0e0,1.5e+3,123456789012345678901234567890.5]"
        ),
    ),
    ("extra-long-int-2000", _json_literal("payload.x", "7" * 2000)),
    (
        "cost-int-amounts",
        _with("payload.inputCostUsd", 0, C).replace(b'"totalCostUsd":0.3', b'"totalCostUsd":0.2'),
    ),
    ("cost-huge-exponents", _json_literal("payload.inputCostUsd", "1E+999999", C)),
    ("cost-tokens-1.0", _json_literal("payload.inputTokens", "1.0", C)),
    ("cost-tokens-negative", _json_literal("payload.inputTokens", "-1", C)),
    ("cost-total-off-1e-6", _with("payload.totalCostUsd", Decimal("0.300001"), C)),
    ("cost-total-off-more", _with("payload.totalCostUsd", Decimal("0.3000011"), C)),
    ("cost-request-null", _json_literal("requestId", "null", C)),
    ("policy-request-null", _json_literal("requestId", "null", P)),
    ("policy-request-given", _with("requestId", "r-1", P)),
    ("policy-request-empty", _with("requestId", "", P)),
    ("policy-max-cost-zero", _with("payload.maxCostPerRequestUsd", 0, P)),
    ("policy-max-cost-int", _with("payload.maxCostPerRequestUsd", 2, P)),
    ("policy-max-cost-minus-zero", _json_literal("payload.maxCostPerRequestUsd", "-0.0", P)),
    ("policy-max-cost-tiny", _json_literal("payload.maxCostPerRequestUsd", "1E-400", P)),
    (
        "policy-preferred-missing",
        dumps(mutated(_doc(P), lambda d: d["payload"].pop("preferredProvider"))),
    ),
    (
        "policy-max-cost-missing",
        dumps(mutated(_doc(P), lambda d: d["payload"].pop("maxCostPerRequestUsd"))),
    ),
    ("policy-denied-duplicate", _with("payload.deniedProviders", ["x", "x"], P)),
    (
        "policy-unicode-lists",
        _with("payload.allowedProviders", ["é", "e\u0301"], P).replace(
            b'"preferredProvider":"openai"', b'"preferredProvider":null'
        ),
    ),
    # strings: lengths in code points, escapes, UTF-8
    ("tenant-128-non-ascii", _tenant("é" * 128)),
    ("tenant-129-non-ascii", _tenant("é" * 129)),
    ("tenant-astral", _tenant("😀" * 128)),
    ("tenant-escaped", _json_literal("tenantId", '"tenant\\u002da"')),
    ("tenant-escaped-pair", _json_literal("payload.x", '"\\ud83d\\ude00"')),
    ("lone-high-surrogate-payload", _json_literal("payload.x", '"\\ud800"')),
    ("lone-low-surrogate-payload", _json_literal("payload.x", '"\\udc00"')),
    ("lone-surrogate-skipped", _suffix('"x":"\\udc00"')),
    ("lone-surrogate-then-text", _suffix('"x":"\\ud800abc"')),
    ("reversed-pair", _suffix('"x":"\\udc00\\ud800"')),
    ("nul-escaped", _json_literal("payload.x", '"\\u0000"')),
    ("raw-control-char", _json_literal("payload.x", '"a\tb"')),
    ("raw-del-char", _json_literal("payload.x", '"a\x7fb"')),
    ("invalid-utf8-skipped", _suffix('"x":"@"').replace(b'"@"', b'"\xff"')),
    ("invalid-utf8-payload", _json_literal("payload.x", '"@"').replace(b'"@"', b'"\xc3\x28"')),
    ("encoded-surrogate-skipped", _suffix('"x":"@"').replace(b'"@"', b'"\xed\xa0\x80"')),
    # msgspec checks UTF-8 only in the strings it decodes: not in a raw field, nor in a
    # duplicate it replaces
    ("invalid-utf8-dup-occurred", _prefix('"occurredAt":"@"').replace(b'"@"', b'"2\xec026"')),
    ("invalid-utf8-dup-event-id", _prefix('"eventId":"@"').replace(b'"@"', b'"\xff"')),
    (
        "invalid-utf8-dup-payload",
        _prefix('"payload":' + dumps({**_doc()["payload"], "x": "@"}).decode()).replace(
            b'"@"', b'"\xc3\x28"'
        ),
    ),
    ("overlong-utf8", _suffix('"x":"@"').replace(b'"@"', b'"\xc0\xaf"')),
    ("bom", b"\xef\xbb\xbf" + _VALID_SNAPSHOT),
    ("whitespace-json", b" \t\r\n" + _VALID_SNAPSHOT.replace(b",", b" ,\n\t") + b"\r\n "),
    ("whitespace-form-feed", _VALID_SNAPSHOT + b"\x0c"),
    ("whitespace-nbsp", _VALID_SNAPSHOT.replace(b",", b"\xc2\xa0,", 1)),
    ("trailing-nul", _VALID_SNAPSHOT + b"\x00"),
    ("trailing-data", _VALID_SNAPSHOT + b"{}"),
    ("two-objects", _VALID_SNAPSHOT + _VALID_SNAPSHOT),
    ("nan-skipped", _suffix('"x":NaN')),
    ("infinity-skipped", _suffix('"x":-Infinity')),
    ("big-int-skipped-4000", _suffix('"x":' + "9" * 3800)),
    ("big-int-skipped-5000", _suffix('"x":' + "9" * 5000)),
    ("single-quotes", _VALID_SNAPSHOT.replace(b'"strategy"', b"'strategy'")),
    ("trailing-comma", _suffix('"x":[1,]')),
    # nesting
    ("deep-300-skipped", _suffix('"x":' + "[" * 300 + "]" * 300)),
    ("deep-400-payload", _json_literal("payload.x", "[" * 400 + "]" * 400)),
    ("deep-objects-payload", _json_literal("payload.x", '{"a":' * 150 + "1" + "}" * 150)),
    # the limit, 64 levels (envelope 1, payload 2); with the sample snapshot's own 8 brackets, a
    # record of at most 64 brackets surely nests within it, and may take the fast path
    ("deep-56-objects-payload", _json_literal("payload.x", '{"a":' * 56 + "1" + "}" * 56)),
    ("depth-64-payload", _json_literal("payload.x", '{"a":' * 61 + "[]" + "}" * 61)),
    ("depth-65-payload", _json_literal("payload.x", '{"a":' * 62 + "[]" + "}" * 62)),
    (
        "depth-64-fallback",
        _json_literal(
            "payload.fallbacks", '[{"provider":"p","model":"m","x":' + "[" * 60 + "]" * 60 + "}]"
        ),
    ),
    (
        "depth-65-fallback",
        _json_literal(
            "payload.fallbacks", '[{"provider":"p","model":"m","x":' + "[" * 61 + "]" * 61 + "}]"
        ),
    ),
    ("depth-65-skipped", _suffix('"x":' + "[" * 64 + "]" * 64)),
    ("depth-65-dup-event-id", _prefix('"eventId":' + "[" * 64 + "]" * 64)),
    (
        "depth-65-dup-payload",
        _prefix('"payload":' + dumps({**_doc()["payload"], "x": "@"}).decode()).replace(
            b'"@"', b"[" * 63 + b"]" * 63
        ),
    ),
    ("brackets-in-strings", _json_literal("payload.x", '"' + "[{" * 100 + '"')),
    ("int-4300-digits", _json_literal("payload.x", "7" * 4300)),
    ("int-4301-digits", _json_literal("payload.x", "7" * 4301)),
    ("deep-5000-skipped", _suffix('"x":' + "[" * 5000 + "]" * 5000)),
    ("many-brackets-wide", _json_literal("payload.x", "[" + ",".join(["[]"] * 400) + "]")),
    # sizes
    (
        "at-fast-limit",
        _json_literal("payload.x", '"' + "x" * (FAST_MAX_BYTES - len(_VALID_SNAPSHOT) - 8) + '"'),
    ),
    ("over-fast-limit", _json_literal("payload.x", '"' + "x" * FAST_MAX_BYTES + '"')),
    ("long-string-1k", _json_literal("payload.x", '"' + "x" * 1024 + '"')),
]


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
    value = _VALID_SNAPSHOT
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
    for value in (None, bytearray(_VALID_SNAPSHOT), memoryview(b"{}"), _VALID_SNAPSHOT.decode()):
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
    a = decode_event(_with("payload.x", Decimal("1.0")))
    b = decode_event(_with("payload.x", Decimal("1.00")))
    c = decode_event(_with("payload.x", 1))
    assert isinstance(a, DecodedEvent)
    assert isinstance(b, DecodedEvent)
    assert a == b
    assert result_differences(a, b)
    assert a == c
    assert result_differences(a, c)
    doc = _doc()
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
    assert value[start:].lstrip().startswith(event.payload_json.encode())
    assert result_differences(event, reference, value) == []


def test_the_sample_events_take_the_fast_path_with_the_payloads_text() -> None:
    for event_type in EventType:
        event = fast_path(record(envelope(event_type)), MAX_BYTES)
        assert event is not None
        assert event.payload_json is not None
        assert event.payload_json.startswith("{")
        assert event.payload_json.endswith("}")


def _payload_first() -> bytes:
    """A valid snapshot whose payload is its first member (the others follow)."""
    doc = _doc()
    return dumps({"payload": doc.pop("payload"), **doc})


def test_a_payload_first_record_carries_its_payloads_text() -> None:
    event = fast_path(_payload_first(), MAX_BYTES)
    assert event is not None
    assert event.payload_json is not None


def _duplicate_payload(first: str) -> bytes:
    doc = _doc()
    payload = dict(doc["payload"], x="@")
    return _prefix('"payload":' + dumps(payload).decode().replace('"@"', first))


WHOLE_RECORD: list[tuple[str, bytes]] = [
    # outside the payload, an escape PostgreSQL may refuse (it refuses \u0000)
    ("envelope-tenant-escaped", dict(EDGES)["tenant-escaped"]),
    ("envelope-request-nul", _json_literal("requestId", '"r\\u0000"', C)),
    # a second payload key: PostgreSQL parses (and may refuse) the first one too
    ("duplicate-payload", _duplicate_payload('"fine"')),
    ("duplicate-payload-nul", _duplicate_payload('"\\u0000"')),
    # an unknown envelope field: any JSON, a number out of numeric's range too (the reference)
    ("unknown-envelope-field", _suffix('"x":1E+999999')),
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

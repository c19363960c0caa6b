"""Hostile input, the short CI run (``python -m bench.fuzz --inputs 1000000`` is the long one).

``decode_event`` must never raise, never accept a record that breaks a rule of the contract
(``docs/contract.md`` §1, re-checked by :func:`tests.checks.contract_problems`, which shares no
code with ``schemas``), and keep memory bounded on deeply nested JSON, huge numbers, huge strings
and invalid UTF-8.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodedEvent, Rejection, decode_event
from tests.checks import MAX_BYTES, contract_problems
from tests.fuzzing import FuzzReport, run_fuzz
from tests.generators import hostile_inputs, mutated_inputs, valid_envelopes

CORPUS = valid_envelopes(random.Random(7), 60)


def test_short_fuzz_run_finds_no_crash_and_no_breach() -> None:
    report = run_fuzz(20_000, seed=20_260_101)
    assert report.inputs == 20_000
    assert report.crashes == 0, report.examples
    assert report.breaches == 0, report.examples
    assert report.accepted > 500, "the acceptance path was exercised and checked"
    assert len(report.reasons) >= 6, report.reasons  # most rejection codes were reached


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_or_slip_through(value: bytes) -> None:
    result = decode_event(value)
    if isinstance(result, DecodedEvent):
        assert contract_problems(value, result) == []
    else:
        assert isinstance(result, Rejection)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.decimals(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(CORPUS),
    path=st.lists(
        st.sampled_from(
            [
                "eventId",
                "type",
                "schemaVersion",
                "occurredAt",
                "tenantId",
                "requestId",
                "payload",
                "payload.tenantId",
                "payload.candidateCount",
                "payload.fallbacks",
                "payload.primary",
                "payload.totalCostUsd",
                "payload.inputCostUsd",
                "payload.inputTokens",
                "payload.provider",
                "payload.allowedProviders",
                "payload.deniedProviders",
                "payload.preferredProvider",
                "payload.maxCostPerRequestUsd",
                "payload.costEstimate",
                "payload.timestamp",
            ]
        ),
        min_size=1,
        max_size=3,
    ),
    values=st.lists(_json_values(), min_size=3, max_size=3),
)
def test_structure_aware_mutations_never_slip_through(
    base: bytes, path: list[str], values: list[Any]
) -> None:
    """Replace fields of a valid envelope by arbitrary JSON values: accepted only if still valid."""
    doc = json.loads(base, parse_float=Decimal)
    for field, value in zip(path, values, strict=False):
        target = doc
        *parents, leaf = field.split(".")
        for parent in parents:
            target = target[parent] if isinstance(target.get(parent), dict) else target
        target[leaf] = value
    encoded = _dumps(doc)
    result = decode_event(encoded)
    if isinstance(result, DecodedEvent):
        assert contract_problems(encoded, result) == []


def _dumps(o: Any) -> bytes:
    def text(v: Any) -> str:
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(k) + ":" + text(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(text(x) for x in v) + "]"
        return json.dumps(v)

    return text(o).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("index", range(len(hostile_inputs())))
def test_hostile_shapes_are_rejected_in_bounded_memory(index: int) -> None:
    """Deep nesting, huge numbers and strings, bad UTF-8: a rejection, and memory bounded."""
    value = hostile_inputs()[index]
    tracemalloc.start()
    try:
        result = decode_event(value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if isinstance(result, DecodedEvent):
        assert contract_problems(value, result) == []
    else:
        assert isinstance(result, Rejection)
        assert len(result.message) <= 500
    # A 1 MiB record may cost a few copies of itself while parsed; never unbounded growth.
    assert peak < 32 * MAX_BYTES, f"peak {peak / 2**20:.1f} MiB"


def test_over_size_records_are_refused_before_parsing() -> None:
    value = b"[" * (MAX_BYTES + 1)
    result = decode_event(value)
    assert isinstance(result, Rejection)
    assert result.reason == "payload_too_large"


def test_the_checker_flags_every_kind_of_breach() -> None:
    """Guard: the independent checker fails on broken records (else the fuzz proves little)."""
    valid = next(v for v in CORPUS if b'"routing.cost"' in v)
    decoded = decode_event(valid)
    assert isinstance(decoded, DecodedEvent)
    assert contract_problems(valid, decoded) == []
    doc = json.loads(valid, parse_float=Decimal)

    def broken(**changes: Any) -> bytes:
        copy = json.loads(valid, parse_float=Decimal)
        for dotted, value in changes.items():
            target = copy
            *parents, leaf = dotted.split("__")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return _dumps(copy)

    cases = [
        broken(payload__totalCostUsd=doc["payload"]["totalCostUsd"] + Decimal("0.00001")),
        broken(payload__inputTokens=True),
        broken(payload__inputTokens=-1),
        broken(payload__provider=""),
        broken(schemaVersion=2),
        broken(tenantId="x" * 129),
        broken(occurredAt="2026-01-01T00:00:00"),
        broken(eventId="nope"),
        broken(payload__extra=1),  # not a breach itself, but the decoded payload now differs
        b'{"a": NaN}',
        b"\xff",
        b"[]",
        valid[:-1] + b',"x":' + b"[" * 64 + b"]" * 64 + b"}",  # 65 levels
        valid[:-1] + b',"x":' + b"1" * 4301 + b"}",
    ]
    for case in cases:
        assert contract_problems(case, decoded), case


def test_generator_is_deterministic_per_seed() -> None:
    def first(seed: int) -> list[bytes]:
        stream = mutated_inputs(random.Random(seed), CORPUS)
        return [next(stream) for _ in range(200)]

    assert first(3) == first(3)
    assert first(3) != first(4)
    report = run_fuzz(50, seed=1)
    assert isinstance(report, FuzzReport)
    assert report.inputs == 50

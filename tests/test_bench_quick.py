"""The benchmark's own parts that its figures rest on: the workload and the expected-rows oracle.

No speed is asserted (``make test`` runs ``python -m bench.run --quick`` once for the harness as a
whole); these check that the workload is what ``bench/RESULTS.md`` says it is and that the oracle
computes the contract's convergence rule, since every system's rows are judged against it.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.oracle import Oracle
from bench.report import ratios
from bench.workload import WORKLOADS, Workload, generate, tenant_ids
from schemas import EventType, Rejection, decode_event, loads, parse_rfc3339

TENANTS = tenant_ids(50)


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    first = [e.value for e in generate(500, seed=3, tenants=TENANTS)]
    again = [e.value for e in generate(500, seed=3, tenants=TENANTS)]
    other = [e.value for e in generate(500, seed=4, tenants=TENANTS)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_workload_event_is_valid_for_the_consumer(workload: Workload) -> None:
    for event in generate(2_000, seed=11, tenants=TENANTS, workload=workload):
        decoded = decode_event(event.value)
        assert not isinstance(decoded, Rejection), decoded
        assert decoded.version == event.version
        assert decoded.tenant_id == event.tenant_id


def test_the_realistic_workload_has_the_traits_it_claims() -> None:
    events = list(generate(5_000, seed=5, tenants=TENANTS, workload="realistic"))
    sizes, fallbacks, offsets = [], Counter[int](), Counter[str]()
    for event in events:
        doc = loads(event.value)
        payload = event.value[event.value.index(b'"payload":') + 10 : -1]
        sizes.append(len(payload))
        if event.type is EventType.SNAPSHOT:
            fallbacks[len(doc["payload"]["fallbacks"])] += 1
        offsets[doc["occurredAt"][23:]] += 1
        assert len(doc["occurredAt"]) in (24, 29), doc["occurredAt"]  # milliseconds
        assert parse_rfc3339(doc["occurredAt"]) == event.occurred_at
    assert min(sizes) >= 300
    assert max(sizes) <= 1_500
    assert set(fallbacks) == {0, 1, 2, 3, 4}
    assert offsets["Z"] < 0.5 * len(events)
    assert {"+05:30", "-08:00"} <= set(offsets)
    non_ascii = sum(not e.value.isascii() for e in events)
    escaped = sum(b"\\n" in e.value for e in events)
    assert non_ascii > 0.5 * len(events)
    assert escaped > 0.02 * len(events)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_mix_duplicates_and_late_versions_match_the_description(workload: Workload) -> None:
    events = list(generate(20_000, seed=5, tenants=TENANTS, workload=workload))
    kinds = Counter(e.type for e in events)
    assert 0.40 < kinds[EventType.SNAPSHOT] / len(events) < 0.50
    assert 0.40 < kinds[EventType.COST] / len(events) < 0.50
    assert 0.07 < kinds[EventType.POLICY] / len(events) < 0.13
    seen_ids: set[object] = set()
    duplicates = 0
    for event in events:
        duplicates += event.event_id in seen_ids
        seen_ids.add(event.event_id)
    assert 0.08 < duplicates / len(events) < 0.12
    newest: dict[tuple[EventType, str], object] = {}
    late = 0
    for event in events:
        key = (event.type, event.row_key)
        current = newest.get(key)
        if current is not None and event.version < current:  # type: ignore[operator]
            late += 1
        else:
            newest[key] = event.version
    # Late versions plus duplicates re-sent after a newer version of their row.
    assert 0.08 < late / len(events) < 0.25


def test_oracle_keeps_the_newest_version_whatever_the_order() -> None:
    events = list(generate(3_000, seed=9, tenants=TENANTS))
    in_order = Oracle()
    in_order.add_all(events)
    shuffled = events[:]
    random.Random(1).shuffle(shuffled)
    mixed = Oracle()
    mixed.add_all(shuffled)
    for field in ("snapshots", "costs", "policies"):
        a, b = getattr(in_order, field), getattr(mixed, field)
        assert {k: e.event_id for k, e in a.items()} == {k: e.event_id for k, e in b.items()}
        for key, event in a.items():
            rivals = [e for e in events if e.row_key == key and e.type is event.type]
            assert event.version == max(e.version for e in rivals)
    assert sorted(in_order.execution_rows()) == sorted(mixed.execution_rows())


def test_a_system_with_wrong_rows_gets_no_ratio() -> None:
    def system(eps: float, ok: bool) -> dict[str, object]:
        return {"events_per_s": eps, "counts": ok}

    results = {
        "systems": {
            "service": system(10_000, True),
            "naive": system(100, True),
            "debezium": system(20_000, False),
            "kafka_ceiling": system(100_000, True),
            "pg_ceiling": system(40_000, True),
        },
        "latency": {"50%": {"p99_ms": 120.0}},
    }
    got = ratios(results)
    assert got["service_vs_naive"]["value"] == 100.0
    assert got["service_vs_naive"]["met"] is True
    assert got["service_vs_debezium"]["value"] is None
    assert got["service_vs_lower_ceiling"]["value"] == 0.25
    assert got["service_vs_lower_ceiling"]["met"] is False
    assert got["p99_ms_at_50pct"]["met"] is True

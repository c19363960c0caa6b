"""The benchmark's own parts that its figures rest on: the workload, the oracle, L, the summaries.

No speed is asserted (``make test`` runs ``python -m bench.run --quick`` once for the harness as a
whole); these check that the workload is what ``bench/RESULTS.md`` says it is, that the oracle
computes the contract's convergence rule (every system's rows are judged against it), that L
writes what a correct consumer must at a batch boundary, and that medians and ratios are taken
as the method says (within each round, leaving out runs with wrong rows).
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.growth import EventMix
from bench.latency import template_events
from bench.limit import final_versions
from bench.oracle import Oracle
from bench.peer import flatten
from bench.report import _headline, ratios
from bench.summary import summarise
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


def _run(eps: float, ok: bool = True, stack_us: float | None = None) -> dict[str, object]:
    return {"events_per_s": eps, "counts": ok, "cpu": {"stack_us_per_event": stack_us}}


def test_ratios_are_taken_within_each_round_and_a_run_with_wrong_rows_gets_none() -> None:
    results = {
        "runs": {
            # Round 2 is slow for everyone: the paired ratio does not move.
            "service": [_run(10_000, stack_us=20.0), _run(5_000, stack_us=40.0), None],
            "baseline": [_run(10_000), _run(5_000), _run(9_000)],
            "limit": [_run(40_000), _run(20_000, ok=False), _run(30_000)],
            "debezium1": [_run(5_000, stack_us=50.0), _run(2_500, stack_us=100.0), None],
        },
        "latency": {"50%": {"systems": {"service": {"p99_ms": {"median": 120.0}}}}},
    }
    got = ratios(results)
    assert got["service_vs_baseline"]["value"] == 1.0
    assert got["service_vs_baseline"]["rounds"] == [1.0, 1.0]
    assert got["service_vs_baseline"]["met"] is False
    # The round in which L's rows were wrong is left out.
    assert got["service_fraction_of_limit"]["rounds"] == [0.25]
    assert got["service_vs_debezium1"]["value"] == 2.0
    assert got["service_vs_debezium1_per_cpu"]["value"] == 2.5
    assert got["service_vs_debezium1_per_cpu"]["met"] is True
    assert got["p99_ms_at_50pct"]["met"] is False  # < 100 ms
    assert "service2_vs_debezium2" not in got  # not measured: no row


def test_the_headline_shows_ratios_as_ratios_and_milliseconds_as_milliseconds() -> None:
    results = {
        "runs": {"service": [_run(12_000)], "baseline": [_run(10_000)]},
        "latency": {
            "50%": {"systems": {s: {"p99_ms": {"median": 385.5}} for s in ("service", "baseline")}}
        },
    }
    rows = {
        line.split(" | ")[0]: line.split(" | ")[1]
        for line in _headline({"ratios": ratios(results)})[2:]  # after the table's header
    }
    assert rows["| one process vs the baseline checkout (today's main), events/s"] == "1.20x"
    assert (
        rows["| baseline checkout live p99 (ms) at the same 50 % rate (this one's maximum)"]
        == "386"
    )


def test_summaries_are_medians_with_their_spread_of_the_runs_that_count() -> None:
    runs: list[dict[str, Any] | None] = [
        {"name": "x", "events": 100, "events_per_s": v, "counts": ok, "notes": []}
        for v, ok in ((3.0, True), (1.0, True), (2.0, True), (99.0, False))
    ]
    summary = summarise([*runs, None])
    assert summary is not None
    assert summary["events_per_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert summary["counts"] is False
    assert (summary["runs"], summary["counted_runs"]) == (4, 3)


def test_the_limit_writes_the_newest_version_of_each_row_and_field_of_a_batch() -> None:
    events = list(generate(3_000, seed=9, tenants=TENANTS, workload="realistic"))
    batch = final_versions([e.value for e in events])
    oracle = Oracle()
    oracle.add_all(events)
    assert batch.records == len(events)
    assert set(batch.execution) == set(oracle.request_tenants)
    for request, (tenant, snap, cost) in batch.execution.items():
        assert tenant == oracle.request_tenants[request]
        for candidate, newest in ((snap, oracle.snapshots), (cost, oracle.costs)):
            expected = newest.get(request)
            if expected is None:
                assert candidate is None
            else:
                assert candidate[0] == expected.version
                assert loads(candidate[1].encode()) == loads(expected.value)["payload"]
    assert {t: v for t, (v, _) in batch.policies.items()} == {
        t: e.version for t, e in oracle.policies.items()
    }
    arrays = batch.er_arrays()
    assert len(arrays) == 8
    assert all(len(column) == len(batch.execution) for column in arrays)


def test_live_records_of_the_realistic_workload_are_valid_once_stamped() -> None:
    events = template_events(300, TENANTS, seed=4, prefix="t", workload="realistic")
    now = datetime.now(UTC)
    for event in events:
        assert event.value.count(b"1999-12-31T23:59:59.999999+00:00") == 1
        value = event.value.replace(
            b"1999-12-31T23:59:59.999999", now.strftime("%Y-%m-%dT%H:%M:%S.%f").encode()
        )
        decoded = decode_event(value)
        assert not isinstance(decoded, Rejection), decoded
        assert decoded.version[0] == now
    flat = loads(flatten(events[0]))
    column = {"routing.snapshot": "routingSnapshot", "routing.cost": "actualCost"}.get(
        events[0].type.value, "routingPolicy"
    )
    assert flat["payload"][f"{column}EventId"] == str(events[0].event_id)
    assert flat["payload"][f"{column}OccurredAt"] == "1999-12-31T23:59:59.999999+00:00"


def test_the_event_mix_by_tenth_is_what_the_workload_description_says() -> None:
    events = list(generate(10_000, seed=2, tenants=TENANTS, workload="realistic"))
    mix = EventMix(len(events))
    for event in events:
        mix.add(event)
    tenths = mix.as_list()
    assert len(tenths) == 10
    assert sum(t["events"] for t in tenths) == len(events)
    for tenth in tenths[1:]:  # the first fills the window late versions are drawn from
        assert 0.07 < tenth["duplicate"] < 0.13
        assert 0.05 < tenth["stale"] < 0.2
        new_or_newer = tenth["new_row"] + tenth["newer"]
        assert abs(new_or_newer + tenth["stale"] + tenth["duplicate"] - 1) < 1e-3

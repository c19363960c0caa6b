"""The metrics registry and the HTTP endpoint (probes' rules, exposition, protocol edges)."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka.structs import TopicPartition

from consumer import __version__
from consumer.outcomes import Outcome
from consumer.service.health import HealthServer, HealthState
from consumer.service.metrics import CONTENT_TYPE, ServiceMetrics
from tests.service_helpers import http_get, metric_sum, parse_metrics


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ready_state(clock: _Clock) -> HealthState:
    state = HealthState(liveness_window_s=30.0, clock=clock)
    state.is_in_group = True
    state.is_broker_reachable = True
    state.is_database_writable = True
    return state


def test_liveness_follows_the_last_tick() -> None:
    clock = _Clock()
    state = HealthState(liveness_window_s=30.0, clock=clock)
    assert state.is_alive()
    clock.now += 30.5
    assert not state.is_alive()
    state.tick()
    assert state.is_alive()


def test_readiness_needs_group_broker_and_database() -> None:
    clock = _Clock()
    state = _ready_state(clock)
    assert state.is_ready()
    for flag in ("is_in_group", "is_broker_reachable", "is_database_writable"):
        setattr(state, flag, False)
        assert not state.is_ready(), flag
        setattr(state, flag, True)
    state.is_stopping = True
    assert not state.is_ready()
    # Readiness does not depend on liveness' clock: a stalled loop is the liveness probe's job.
    clock.now += 1000
    state.is_stopping = False
    assert state.is_ready()


def test_revoked_partitions_lose_their_series() -> None:
    metrics = ServiceMetrics()
    kept, revoked = TopicPartition("t", 0), TopicPartition("t", 1)
    for tp in (kept, revoked):
        metrics.set_partition(tp, end_offset=10, committed=7, lag=3, lag_seconds=1.5)
    metrics.remove_partitions([revoked, TopicPartition("never-seen", 0)])
    samples = parse_metrics(metrics.render().decode())
    for name in (
        "routing_consumer_lag_records",
        "routing_consumer_lag_seconds",
        "routing_consumer_committed_offset",
        "routing_consumer_log_end_offset",
    ):
        assert metric_sum(samples, name, topic="t", partition="0") > 0
        assert not any(n == name and ("partition", "1") in labels for n, labels in samples), name


def test_outcomes_latency_and_build_info() -> None:
    metrics = ServiceMetrics()
    metrics.count_outcomes(
        Counter(
            {("a", "routing.cost", Outcome.APPLIED): 3, ("a", "routing.cost", Outcome.STALE): 0}
        )
    )
    metrics.count_outcomes(Counter({("a", "routing.cost", Outcome.APPLIED): 2}))
    samples = parse_metrics(metrics.render().decode())
    events = "routing_consumer_events_total"
    assert metric_sum(samples, events, outcome="applied") == 5
    # A zero count creates no series: a dashboard sees only outcomes that happened.
    assert not any(n == events and ("outcome", "stale") in ls for n, ls in samples)
    assert metric_sum(samples, "routing_build_info", version=__version__) == 1
    buckets = [
        dict(ls)["le"] for n, ls in samples if n == "routing_consumer_batch_duration_seconds_bucket"
    ]
    assert "30.0" in buckets


async def test_endpoint_serves_probes_and_metrics() -> None:
    clock = _Clock()
    state = _ready_state(clock)
    metrics = ServiceMetrics()
    metrics.db_retries.inc()
    server = HealthServer(state, lambda: (metrics.render(), CONTENT_TYPE), port=0)
    port = await server.start()
    try:
        assert (await http_get(port, "/readyz"))[0] == 200
        assert (await http_get(port, "/healthz"))[0] == 200
        state.is_database_writable = False
        status, body = await http_get(port, "/readyz")
        assert status == 503
        assert '"database_writable": false' in body
        clock.now += 31
        assert (await http_get(port, "/healthz"))[0] == 503
        status, body = await http_get(port, "/metrics?x=1")
        assert status == 200
        assert metric_sum(parse_metrics(body), "routing_consumer_db_retries_total") == 1
        assert (await http_get(port, "/nope"))[0] == 404
        assert await _raw(port, b"POST /metrics HTTP/1.1\r\n\r\n") == b"405"
        assert await _raw(port, b"GARBAGE\r\n\r\n") == b"400"
        head = await _raw(port, b"HEAD /metrics HTTP/1.1\r\n\r\n", whole=True)
        assert head.endswith(b"\r\n\r\n")
        assert b"Content-Type: text/plain; version=0.0.4" in head
        # A client that connects and says nothing does not block the others.
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        assert (await http_get(port, "/healthz"))[0] == 503
        idle.close()
    finally:
        await server.close()


async def _raw(port: int, request: bytes, *, whole: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response if whole else response.split(b" ", 2)[1]


def test_batch_histogram_exposes_what_a_histogram_would() -> None:
    # The same values through prometheus_client's Histogram and through BatchHistogram, in
    # batches, render the same _bucket, _count and _sum samples.
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from consumer.service.metrics import BatchHistogram

    buckets = (0.01, 0.1, 1.0, 10.0)
    values = [0.0, 0.01, 0.010001, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 11.0, 1e9, 0.25]
    reference, batched = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("h_seconds", "doc", buckets=buckets, registry=reference)
    for value in values:
        plain.observe(value)
    histogram = BatchHistogram("h_seconds", "doc", buckets, batched)
    histogram.observe_many(values[:5])
    histogram.observe_many([])
    histogram.observe_many(values[5:])

    def series(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        text = generate_latest(registry).decode()
        return sorted(
            (name, labels, value)
            for name, labels, value in (
                (n, tuple(sorted(ls)), v) for n, ls, v in parse_samples(text)
            )
            if not name.endswith("_created")
        )

    assert series(batched) == series(reference)


def parse_samples(text: str) -> list[tuple[str, list[tuple[str, str]], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, list(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]

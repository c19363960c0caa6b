"""End-to-end latency of the service at a fixed produce rate, observed from PostgreSQL.

Definition: from an event's ``occurredAt`` (set to the wall clock at the moment the benchmark
hands the record to its producer) to the moment a reader of PostgreSQL can see the row carrying
that version (i.e. the transaction that wrote it has committed). Producer batching (linger 5 ms),
the broker, the consumer's fetch, decoding, the database write and its commit are all inside.

How it is observed: a poller queries the rows of the events still pending every 10 ms by their
unique keys (``"requestId"`` / ``"Tenant".id``, both indexed) and takes an event as arrived when
the stored ``...OccurredAt`` of its field is at or after its own. The latency recorded is
``time of the query's return - occurredAt``: an upper bound, late by at most one poll interval
plus one query (about 10-15 ms) while fewer than 64 tracked events are pending (each poll looks
up the 64 oldest, so the query stays cheap when the service falls behind). About 500 events a
second are tracked (every n-th event: a systematic sample, so the poller's load on PostgreSQL
stays small and constant); events sent in the first second (warm-up) are not counted.

The load generator hands records to aiokafka as per-partition batches (the producer's batch
API, same default partitioner as a keyed send), so that producing 10,000 events/s costs the
shared CPUs little next to the system under test.

The service's own ``routing_consumer_end_to_end_latency_seconds`` histogram is read at the end
too and kept in the results for comparison; the DB-side figure is the headline because the
benchmark can explain every millisecond of it without trusting the system under test.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.infra import Stack, TopicSet, free_port
from bench.profile import Profiler
from bench.systems import service_env, start_service, stop_service
from bench.workload import Event, make_event
from schemas import EventType, format_rfc3339

__all__ = ["LatencyResult", "measure_latency", "percentile"]

_SENTINEL_AT = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
_SENTINEL = format_rfc3339(_SENTINEL_AT).encode()
_POLL_S = 0.010
_WARMUP_S = 1.0
#: About this many events per second are tracked (a systematic sample: every n-th event), so
#: the poller's own load on PostgreSQL stays small and constant whatever the produce rate.
_TRACKED_PER_S = 500
#: At most this many pending rows are looked up per poll (the oldest ones).
_POLL_WINDOW = 64
PARTITIONS = 6


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``sorted_values`` (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class LatencyResult:
    """Latencies (seconds) of one fixed-rate run."""

    target_rate: float
    achieved_rate: float
    sent: int
    latencies: list[float]
    unresolved: int
    service_histogram: dict[str, float]
    exit_code: int
    #: CPU the benchmark's own producer + poller used while sending, in cores.
    harness_cores: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary plus the CDF (up to 200 quantile points)."""
        lat = sorted(self.latencies)
        points = min(200, len(lat))
        cdf = (
            [
                [round(lat[int(i * (len(lat) - 1) / (points - 1))], 5), i / (points - 1)]
                for i in range(points)
            ]
            if points > 1
            else []
        )
        return {
            "target_rate": round(self.target_rate, 1),
            "achieved_rate": round(self.achieved_rate, 1),
            "sent": self.sent,
            "measured": len(lat),
            "unresolved": self.unresolved,
            "p50_ms": round(percentile(lat, 0.50) * 1000, 1),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "cdf_s": cdf,
            "harness_cores": round(self.harness_cores, 2),
            "service_histogram": self.service_histogram,
            "exit_code": self.exit_code,
        }


def _template_events(count: int, tenants: list[str], seed: int, prefix: str) -> list[Event]:
    """The latency stream: snapshot then cost per request, ~10 % policies; occurredAt blank."""
    rng = random.Random(seed)
    events: list[Event] = []
    request = 0
    pending_cost: list[tuple[str, str]] = []
    while len(events) < count:
        roll = rng.random()
        if roll < 0.10:
            tenant = rng.choice(tenants)
            events.append(
                make_event(rng, EventType.POLICY, tenant=tenant, request_id=None, at=_SENTINEL_AT)
            )
        elif pending_cost and roll < 0.55:
            rid, tenant = pending_cost.pop(0)
            events.append(
                make_event(rng, EventType.COST, tenant=tenant, request_id=rid, at=_SENTINEL_AT)
            )
        else:
            request += 1
            rid, tenant = f"{prefix}-{request:08d}", rng.choice(tenants)
            pending_cost.append((rid, tenant))
            events.append(
                make_event(rng, EventType.SNAPSHOT, tenant=tenant, request_id=rid, at=_SENTINEL_AT)
            )
    return events


async def _wait_ready(port: int, proc_alive: Any, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if not proc_alive():
            raise RuntimeError("the service exited before it was ready")
        try:
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the service did not become ready")


_FAMILIES = (
    "routing_consumer_end_to_end_latency_seconds",
    "routing_consumer_batch_size",
    "routing_consumer_batch_duration_seconds",
)


def _read_histogram(port: int) -> dict[str, float]:
    """The service's own histograms (latency, batch size, batch duration) from ``/metrics``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(_FAMILIES) and "_created" not in line:
            metric, _, value = line.rpartition(" ")
            out[metric.removeprefix("routing_consumer_")] = float(value)
    return out


async def measure_latency(
    stack: Stack,
    topics: TopicSet,
    database_url: str,
    group: str,
    *,
    rate: float,
    seconds: float,
    tenants: list[str],
    seed: int,
    log_path: Path,
    profile_path: Path | None = None,
) -> LatencyResult:
    """Run the service, produce at ``rate`` events/s for ``seconds``, observe the latencies.

    With ``profile_path``, py-spy samples the service while the load runs.
    """
    port = free_port()
    proc = start_service(service_env(stack, topics, database_url, group, port), log_path)
    profiler: Profiler | None = None
    try:
        await _wait_ready(port, lambda: proc.poll() is None)
        count = int(rate * seconds)
        events = _template_events(count, tenants, seed, prefix=f"lat{int(rate)}")
        if profile_path is not None:
            profiler = Profiler(proc.pid, profile_path)
        result = await _drive(stack, topics, database_url, events, rate)
        histogram = await asyncio.to_thread(_read_histogram, port)
    finally:
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
        code = await asyncio.to_thread(stop_service, proc)
    sent, achieved, latencies, unresolved, harness_cores = result
    return LatencyResult(
        rate, achieved, sent, latencies, unresolved, histogram, code, harness_cores
    )


async def _drive(
    stack: Stack, topics: TopicSet, database_url: str, events: list[Event], rate: float
) -> tuple[int, float, list[float], int, float]:
    # The load generator must stay cheap next to the system under test (2 shared cores): records
    # go out as per-partition batches (aiokafka's batch API: no per-record future), and only
    # every _SAMPLE-th event is tracked by the poller.
    partitioner = DefaultPartitioner()
    all_partitions = list(range(PARTITIONS))
    placed = [
        (topics.for_type(e.type), partitioner(e.key, all_partitions, all_partitions), e)
        for e in events
    ]
    pending: dict[tuple[str, str], list[tuple[datetime, float, bool]]] = {}
    latencies: list[float] = []
    sending_done = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5, acks=1)
    await producer.start()
    conn = await asyncpg.connect(database_url)
    poller = asyncio.create_task(_poll(conn, pending, latencies, sending_done))
    sample_every = max(1, round(rate / _TRACKED_PER_S))
    sent = 0
    started, cpu0 = time.perf_counter(), time.process_time()
    last_at = datetime.now(UTC)
    try:
        while sent < len(placed):
            due = min(len(placed), int((time.perf_counter() - started) * rate) + 1)
            groups: dict[tuple[str, int], list[Event]] = {}
            for topic, partition, event in placed[sent:due]:
                groups.setdefault((topic, partition), []).append(event)
            counted_from = time.perf_counter() - started >= _WARMUP_S
            for (topic, partition), group in groups.items():
                batch = producer.create_batch()
                for event in group:
                    at = datetime.now(UTC)
                    # occurredAt strictly increases, so "stored >= mine" identifies arrival.
                    if at <= last_at:
                        at = last_at + timedelta(microseconds=1)
                    last_at = at
                    value = event.value.replace(_SENTINEL, format_rfc3339(at).encode(), 1)
                    if batch.append(key=event.key, value=value, timestamp=None) is None:
                        await producer.send_batch(batch, topic, partition=partition)
                        batch = producer.create_batch()
                        batch.append(key=event.key, value=value, timestamp=None)
                    if sent % sample_every == 0:
                        pending.setdefault((_FIELD[event.type], event.row_key), []).append(
                            (at, at.timestamp(), counted_from)
                        )
                    sent += 1
                await producer.send_batch(batch, topic, partition=partition)
            await asyncio.sleep(0.002)
        await producer.flush()
        elapsed = time.perf_counter() - started
        harness_cpu = time.process_time() - cpu0
        sending_done.set()
        try:
            await asyncio.wait_for(asyncio.shield(poller), timeout=60)
        except TimeoutError:
            poller.cancel()
    finally:
        sending_done.set()
        if not poller.done():
            poller.cancel()
        await producer.stop()
        await conn.close()
    unresolved = sum(len(v) for v in pending.values())
    return sent, sent / elapsed, latencies, unresolved, harness_cpu / elapsed


_FIELD = {EventType.SNAPSHOT: "snapshot", EventType.COST: "cost", EventType.POLICY: "policy"}


async def _poll(
    conn: asyncpg.Connection,
    pending: dict[tuple[str, str], list[tuple[datetime, float, bool]]],
    latencies: list[float],
    sending_done: asyncio.Event,
) -> None:
    """Every _POLL_S, look up the pending rows; record the latency of those that arrived."""
    while not (sending_done.is_set() and not pending):
        await asyncio.sleep(_POLL_S)
        if not pending:
            continue
        # The oldest pending rows only (dicts keep insertion order = send order): the query's
        # cost stays bounded even when the service falls far behind.
        window = list(islice(pending, _POLL_WINDOW))
        requests = list({k for f, k in window if f != "policy"})
        tenant_keys = list({k for f, k in window if f == "policy"})
        rows: dict[tuple[str, str], datetime | None] = {}
        if requests:
            for r in await conn.fetch(
                'SELECT "requestId", "routingSnapshotOccurredAt", "actualCostOccurredAt"'
                ' FROM "ExecutionRecord" WHERE "requestId" = ANY($1::text[])',
                requests,
            ):
                rows[("snapshot", r[0])] = r[1]
                rows[("cost", r[0])] = r[2]
        if tenant_keys:
            for r in await conn.fetch(
                'SELECT id, "routingPolicyOccurredAt" FROM "Tenant" WHERE id = ANY($1::text[])',
                tenant_keys,
            ):
                rows[("policy", r[0])] = r[1]
        seen_at = time.time()
        for key in window:
            stored = rows.get(key)
            if stored is None:
                continue
            waiting = pending[key]
            for at, epoch, counted in waiting:
                if at <= stored and counted:
                    latencies.append(seen_at - epoch)
            still = [w for w in waiting if w[0] > stored]
            if still:
                pending[key] = still
            else:
                del pending[key]

"""End-to-end latency of a live system at a fixed produce rate, observed from PostgreSQL.

:func:`measure_latency` runs the real service (or, with ``peer_tasks``, the Debezium JDBC sink
on the flattened copy of the same events, :mod:`bench.peer`) live, produces at ``rate``
events/s with ``occurredAt`` set to the moment each record is handed to the producer
(:func:`produce_at_rate`, a cheap generator of pre-rendered values), and records for a
systematic sample of events the time until a reader of PostgreSQL sees the row carrying that
version. It returns a :class:`LatencyResult` with percentiles and the CPU of everyone involved.
Method and bounds: ``bench/RESULTS.md``, "Method".
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import threading
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
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.cpu import StackCpu, breakdown
from bench.infra import Stack, TopicSet, cpu_seconds, free_port
from bench.profile import Profiler
from bench.systems import service_env, start_service, stop_service
from bench.workload import Event, Workload, make_event
from schemas import EventType, format_rfc3339

__all__ = [
    "LatencyResult",
    "ProduceStats",
    "SendPlan",
    "measure_latency",
    "percentile",
    "plan_sends",
    "produce_at_rate",
    "template_events",
]

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
    producer: ProduceStats
    #: The poller's CPU seconds over its life (its thread) and that life's length.
    poller_cpu_seconds: float
    poller_seconds: float
    #: How long each of the poller's lookups took (ms). Slow lookups mark a round where
    #: PostgreSQL, or the machine under it, was slow for every session, not only the system
    #: under test's (each latency is also late by up to one lookup).
    poll_lookups_ms: list[float]
    #: Where the machine's CPU went while producing (:func:`bench.cpu.breakdown`).
    cpu: dict[str, Any]

    @property
    def harness_cores(self) -> float:
        """Cores the benchmark's generator + poller used while sending."""
        if self.producer.seconds <= 0:
            return 0.0
        return self.producer.cpu_seconds / self.producer.seconds + self.poller_cpu_seconds / max(
            self.poller_seconds, 1e-9
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary plus the CDF (up to 50 quantile points)."""
        lat = sorted(self.latencies)
        lookups = sorted(self.poll_lookups_ms)
        points = min(50, len(lat))
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
            "harness_cores": round(self.harness_cores, 3),
            "producer": {
                "cpu_s": round(self.producer.cpu_seconds, 3),
                "cpu_s_per_1000_events": round(self.producer.cpu_per_1000, 4),
                "cores": round(self.producer.cpu_seconds / self.producer.seconds, 3)
                if self.producer.seconds
                else None,
                "batches": self.producer.batches,
                "seconds": round(self.producer.seconds, 3),
            },
            "poller": {
                "cpu_s": round(self.poller_cpu_seconds, 3),
                "cores": round(self.poller_cpu_seconds / self.poller_seconds, 3)
                if self.poller_seconds
                else None,
                "seconds": round(self.poller_seconds, 3),
                "polls": len(lookups),
                "lookup_p50_ms": round(percentile(lookups, 0.50), 2) if lookups else None,
                "lookup_p99_ms": round(percentile(lookups, 0.99), 2) if lookups else None,
            },
            "cpu": self.cpu,
            "service_histogram": self.service_histogram,
            "exit_code": self.exit_code,
        }


_OCCURRED_AT = re.compile(rb'"occurredAt":"[^"]*"')


def template_events(
    count: int, tenants: list[str], seed: int, prefix: str, workload: Workload = "benchmark"
) -> list[Event]:
    """The latency stream: snapshot then cost per request, ~10 % policies; occurredAt blank.

    Records of ``workload``'s shape; their ``occurredAt`` is the sentinel that
    :func:`produce_at_rate` replaces with the send time (UTC, microseconds, whatever the
    workload's own format: the time must be exact to the microsecond to be told apart).
    """
    rng = random.Random(seed)
    events: list[Event] = []
    request = 0
    pending_cost: list[tuple[str, str]] = []

    def event(kind: EventType, tenant: str, rid: str | None) -> Event:
        made = make_event(
            rng, kind, tenant=tenant, request_id=rid, at=_SENTINEL_AT, workload=workload
        )
        if made.occurred_at == _SENTINEL_AT:
            return made
        # A realistic record is written to the millisecond, in some offset: put the sentinel in.
        value = _OCCURRED_AT.sub(b'"occurredAt":"' + _SENTINEL + b'"', made.value, count=1)
        return Event(kind, made.key, value, made.event_id, _SENTINEL_AT, tenant, made.row_key)

    while len(events) < count:
        roll = rng.random()
        if roll < 0.10:
            events.append(event(EventType.POLICY, rng.choice(tenants), None))
        elif pending_cost and roll < 0.55:
            rid, tenant = pending_cost.pop(0)
            events.append(event(EventType.COST, tenant, rid))
        else:
            request += 1
            rid, tenant = f"{prefix}-{request:08d}", rng.choice(tenants)
            pending_cost.append((rid, tenant))
            events.append(event(EventType.SNAPSHOT, tenant, rid))
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
    """The service's own histograms from ``/metrics``: latency (with its buckets), batch size
    and batch duration (count and sum: their buckets would only make the results file long)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_FAMILIES) or "_created" in line:
            continue
        if "_bucket" in line and not line.startswith(_FAMILIES[0]):
            continue
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
    workload: Workload = "benchmark",
    checkout: Path | None = None,
    peer_tasks: int | None = None,
) -> LatencyResult:
    """Run the system, produce at ``rate`` events/s for ``seconds``, observe the latencies.

    The system is the service (of ``checkout``, see :func:`bench.systems.service_command`), or
    with ``peer_tasks`` the Debezium JDBC sink with that many tasks, fed the flattened copy of
    the same events (connector ``<group>``). With ``profile_path``, py-spy samples the service
    while the load runs.
    """
    count = int(rate * seconds)
    events = template_events(count, tenants, seed, prefix=f"lat{int(rate)}", workload=workload)
    if peer_tasks is not None:
        return await _peer_latency(
            stack, topics, database_url, group, events, rate, log_path, peer_tasks
        )
    port = free_port()
    env = service_env(stack, topics, database_url, group, port)
    proc = start_service(env, log_path, checkout)
    profiler: Profiler | None = None
    try:
        await _wait_ready(port, lambda: proc.poll() is None)
        if profile_path is not None:
            profiler = Profiler(proc.pid, profile_path)
        stats, poller, cpu = await _drive(stack, topics, database_url, events, rate, proc.pid)
        histogram = await asyncio.to_thread(_read_histogram, port)
    finally:
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
        code = await asyncio.to_thread(stop_service, proc)
    return LatencyResult(
        rate,
        stats.sent / stats.seconds if stats.seconds else 0.0,
        stats.sent,
        poller.latencies,
        poller.unresolved,
        histogram,
        code,
        stats,
        poller.cpu_seconds,
        poller.seconds,
        poller.lookups_ms,
        cpu,
    )


async def _peer_latency(
    stack: Stack,
    topics: TopicSet,
    database_url: str,
    name: str,
    events: list[Event],
    rate: float,
    log_path: Path,
    tasks: int,
) -> LatencyResult:
    """:func:`measure_latency` of the Debezium JDBC sink (see there)."""
    from bench.peer import ConnectPeer, ensure_jars, flatten

    flat = [
        Event(e.type, e.key, flatten(e), e.event_id, e.occurred_at, e.tenant_id, e.row_key)
        for e in events
    ]
    peer = ConnectPeer(
        stack,
        topics,
        database_url,
        name=name,
        tasks=tasks,
        work=log_path.parent / f"connect-{name}",
        log_path=log_path,
    )
    proc = peer.start(await ensure_jars())
    try:
        await peer.wait_ready()
        stats, poller, cpu = await _drive(stack, topics, database_url, flat, rate, proc.pid)
    finally:
        code = await asyncio.to_thread(peer.stop)
    return LatencyResult(
        rate,
        stats.sent / stats.seconds if stats.seconds else 0.0,
        stats.sent,
        poller.latencies,
        poller.unresolved,
        {},
        0 if code in (0, 143) else code,
        stats,
        poller.cpu_seconds,
        poller.seconds,
        poller.lookups_ms,
        cpu,
    )


_FIELD = {EventType.SNAPSHOT: "snapshot", EventType.COST: "cost", EventType.POLICY: "policy"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: The producer's linger: records due inside one tick go out together at its end.
_LINGER_S = 0.005


@dataclass
class ProduceStats:
    """What the load generator did: how many records, over what time, at what CPU."""

    sent: int
    seconds: float
    #: CPU of the thread that runs the generator and aiokafka's sender (``time.thread_time``).
    cpu_seconds: float
    batches: int
    #: Wall clock (epoch seconds) of the first and the last tick.
    wall_start: float
    wall_end: float

    @property
    def cpu_per_1000(self) -> float:
        """Generator CPU seconds per 1,000 records produced."""
        return self.cpu_seconds * 1000 / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class SendPlan:
    """The events pre-rendered for producing: everything but occurredAt done before the clock."""

    heads: list[bytes]  # the value up to occurredAt's digits
    tails: list[bytes]  # "+00:00" and the rest of the value
    keys: list[bytes]
    slots: list[int]  # index into destinations
    destinations: list[tuple[str, int]]  # (topic, partition)
    tracked: list[tuple[str, str] | None]  # (field, row key) of the events the poller tracks


def plan_sends(topics: TopicSet, events: list[Event], sample_every: int) -> SendPlan:
    """Split each value around the sentinel occurredAt; place each key once (murmur2).

    The partition is the one aiokafka's ``DefaultPartitioner`` (Kafka's murmur2 of the key) gives
    a keyed ``send()``, computed once per distinct key.
    """
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    by_key: dict[bytes, int] = {}
    destinations: list[tuple[str, int]] = []
    slot_of: dict[tuple[str, int], int] = {}
    plan = SendPlan([], [], [], [], destinations, [])
    for n, event in enumerate(events):
        head, sentinel, rest = event.value.partition(_SENTINEL)
        if not sentinel:
            raise ValueError("a latency template event without the sentinel occurredAt")
        tail = b"+00:00" + rest
        partition = by_key.get(event.key)
        if partition is None:
            partition = by_key[event.key] = partitioner(event.key, partitions, partitions)
        destination = (topics.for_type(event.type), partition)
        slot = slot_of.get(destination)
        if slot is None:
            slot = slot_of[destination] = len(destinations)
            destinations.append(destination)
        plan.heads.append(head)
        plan.tails.append(tail)
        plan.keys.append(event.key)
        plan.slots.append(slot)
        plan.tracked.append((_FIELD[event.type], event.row_key) if n % sample_every == 0 else None)
    return plan


async def produce_at_rate(
    producer: AIOKafkaProducer,
    plan: SendPlan,
    rate: float,
    track: queue.SimpleQueue[tuple[str, str, int, bool]] | None = None,
) -> ProduceStats:
    """Produce the planned events at ``rate`` events/s; return what it cost.

    ``producer`` should have ``linger_ms=0``: this loop is the linger. Every ``_LINGER_S`` it
    takes the events that fell due since the last tick, stamps each one's occurredAt, appends it
    to its partition's batch (aiokafka's batch API: no per-record future or partitioner call) and
    hands the tick's batches to the producer, which sends them in one request per broker.

    occurredAt (microseconds, strictly increasing) is the moment the record is handed to the
    producer: its scheduled time (start + n / rate), but never more than the linger before the
    tick that sends it, so a tick that comes late (the generator starved of CPU) does not charge
    its lateness to the system under test. Records are 5 ms or less in the "producer" before the
    batch goes out, as with a real producer's ``linger_ms=5``. The record's CreateTime is that
    same moment in ms, from the same clock reading, so a stall of the generator between stamping
    and appending cannot set them apart. The value is the pre-rendered head + the timestamp + the
    tail: no JSON is built and no bytes are searched per record.

    ``track`` receives (field, row key, occurredAt in epoch microseconds, counted) for each
    tracked event; ``counted`` is false in the first ``_WARMUP_S`` seconds.
    """
    total = len(plan.heads)
    heads, tails, keys, slots, tracked = plan.heads, plan.tails, plan.keys, plan.slots, plan.tracked
    destinations = plan.destinations
    step_us = 1e6 / rate
    linger_us = int(_LINGER_S * 1e6)
    warmup_us = int(_WARMUP_S * 1e6)
    started, cpu0 = time.perf_counter(), time.thread_time()
    wall0_us = time.time_ns() // 1000
    last_us = wall0_us - 1
    second = -1
    prefix = b""
    sent = batches = 0
    tick = 0
    while sent < total:
        now_us = wall0_us + int((time.perf_counter() - started) * 1e6)
        due = min(total, int((now_us - wall0_us) / step_us) + 1)
        floor_us = now_us - linger_us
        open_batches: dict[int, BatchBuilder] = {}
        ready: list[tuple[int, BatchBuilder]] = []
        for n in range(sent, due):
            at = wall0_us + int(n * step_us)
            if at < floor_us:
                at = floor_us
            if at <= last_us:  # strictly increasing: "stored >= mine" then means arrived
                at = last_us + 1
            last_us = at
            sec, micros = divmod(at, 1_000_000)
            if sec != second:
                second = sec
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)).encode()
            value = b"%s%s%06d%s" % (heads[n], prefix, micros, tails[n])
            slot = slots[n]
            batch = open_batches.get(slot)
            if batch is None:
                batch = open_batches[slot] = producer.create_batch()
            stamp_ms = at // 1000
            if batch.append(key=keys[n], value=value, timestamp=stamp_ms) is None:  # full
                ready.append((slot, batch))
                batch = open_batches[slot] = producer.create_batch()
                batch.append(key=keys[n], value=value, timestamp=stamp_ms)
            row = tracked[n]
            if row is not None and track is not None:
                track.put((row[0], row[1], at, at - wall0_us >= warmup_us))
        sent = max(sent, due)
        ready += open_batches.items()
        for slot, batch in ready:
            topic, partition = destinations[slot]
            await producer.send_batch(batch, topic, partition=partition)
        batches += len(ready)
        tick += 1
        pause = started + tick * _LINGER_S - time.perf_counter()
        await asyncio.sleep(max(0.0, pause))
    await producer.flush()
    seconds = time.perf_counter() - started
    return ProduceStats(
        sent,
        seconds,
        time.thread_time() - cpu0,
        batches,
        wall0_us / 1e6,
        time.time(),
    )


class _Poller(threading.Thread):
    """Looks the tracked rows up in PostgreSQL every ``_POLL_S``, in a thread of its own.

    A thread with its own event loop and connection, so that its CPU (``time.thread_time``) is
    measured apart from the generator's, and the generator's ticks do not wait for its queries.
    It owns its pending table; the generator hands tracked events over a ``SimpleQueue``.
    """

    def __init__(self, database_url: str) -> None:
        super().__init__(name="latency-poller", daemon=True)
        self.url = database_url
        self.inbox: queue.SimpleQueue[tuple[str, str, int, bool]] = queue.SimpleQueue()
        self.sending_done = threading.Event()
        self.latencies: list[float] = []
        self.unresolved = 0
        self.cpu_seconds = 0.0
        self.seconds = 0.0
        self.lookups_ms: list[float] = []
        self.error: BaseException | None = None
        #: The pid of the poller's PostgreSQL backend, set once connected (``ready``): its CPU
        #: is inside PostgreSQL's figure, and reported apart so it can be taken out.
        self.backend_pid: int | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        started, cpu0 = time.perf_counter(), time.thread_time()
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the caller, which owns the run
            self.error = exc
        finally:
            self.cpu_seconds = time.thread_time() - cpu0
            self.seconds = time.perf_counter() - started

    async def _main(self) -> None:
        try:
            conn = await asyncpg.connect(self.url)
            self.backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
        finally:
            self.ready.set()
        pending: dict[tuple[str, str], list[tuple[int, bool]]] = {}
        deadline: float | None = None
        try:
            while True:
                await asyncio.sleep(_POLL_S)
                while True:
                    try:
                        field_name, row, at, counted = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    pending.setdefault((field_name, row), []).append((at, counted))
                if self.sending_done.is_set():
                    if deadline is None:
                        deadline = time.monotonic() + 60.0
                    if not pending or time.monotonic() > deadline:
                        break
                if pending:
                    started = time.perf_counter()
                    await self._poll_once(conn, pending)
                    self.lookups_ms.append((time.perf_counter() - started) * 1000)
        finally:
            self.unresolved = sum(len(v) for v in pending.values())
            await conn.close()

    async def _poll_once(
        self, conn: asyncpg.Connection, pending: dict[tuple[str, str], list[tuple[int, bool]]]
    ) -> None:
        # The oldest pending rows only (dicts keep insertion order = send order): the query's
        # cost stays bounded even when the service falls far behind. One round trip per poll.
        window = list(islice(pending, _POLL_WINDOW))
        requests = list({k for f, k in window if f != "policy"})
        tenants = list({k for f, k in window if f == "policy"})
        stored: dict[tuple[str, str], int] = {}
        for kind, key, first, second in await conn.fetch(_POLL_SQL, requests, tenants):
            if kind == 0:
                if first is not None:
                    stored[("snapshot", key)] = (first - _EPOCH) // _US
                if second is not None:
                    stored[("cost", key)] = (second - _EPOCH) // _US
            elif first is not None:
                stored[("policy", key)] = (first - _EPOCH) // _US
        seen_us = time.time_ns() // 1000
        for key in window:
            at_row = stored.get(key)
            if at_row is None:
                continue
            waiting = pending[key]
            for at, counted in waiting:
                if at <= at_row and counted:
                    self.latencies.append((seen_us - at) / 1e6)
            still = [w for w in waiting if w[0] > at_row]
            if still:
                pending[key] = still
            else:
                del pending[key]


_POLL_SQL = """
SELECT 0, "requestId", "routingSnapshotOccurredAt", "actualCostOccurredAt"
FROM "ExecutionRecord" WHERE "requestId" = ANY($1::text[])
UNION ALL
SELECT 1, id, "routingPolicyOccurredAt", NULL FROM "Tenant" WHERE id = ANY($2::text[])
"""


def _cpu_or_none(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` (a PostgreSQL backend here), ``None`` if unknown or not local."""
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


async def _drive(
    stack: Stack,
    topics: TopicSet,
    database_url: str,
    events: list[Event],
    rate: float,
    service_pid: int,
) -> tuple[ProduceStats, _Poller, dict[str, Any]]:
    """Produce ``events`` at ``rate`` while the poller observes them; both finished on return.

    Also returns where the machine's CPU went while producing (:func:`bench.cpu.breakdown`, the
    service as "own"): the service, PostgreSQL, the broker, the machine, per event produced.
    """
    plan = plan_sends(topics, events, max(1, round(rate / _TRACKED_PER_S)))
    poller = _Poller(database_url)
    # linger 0: produce_at_rate is the linger (it hands over a tick's batches at once).
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0, acks=1)
    await producer.start()
    try:
        # Metadata for the topics before the clock starts (send_batch waits for it otherwise).
        for topic in topics.sources:
            await producer.partitions_for(topic)
        poller.start()
        await asyncio.to_thread(poller.ready.wait, 30.0)
        stack_cpu = StackCpu.for_addresses(
            stack.bootstrap,
            stack.pg_host_port[1],
            harness_pid=os.getpid(),
            database_url=database_url,
        )
        # A backend pid means something here only when the server is the local stack's.
        backend = poller.backend_pid if stack_cpu.postmaster is not None else None
        try:
            machine0, service0 = stack_cpu.sample(), cpu_seconds(service_pid)
            backend0 = _cpu_or_none(backend)
            stats = await produce_at_rate(producer, plan, rate, poller.inbox)
            service_cpu = cpu_seconds(service_pid) - service0
            backend1 = _cpu_or_none(backend)
            delta = StackCpu.between(machine0, stack_cpu.sample())
        finally:
            poller.sending_done.set()
            await asyncio.to_thread(poller.join)
    finally:
        await producer.stop()
    if poller.error is not None:
        raise RuntimeError(f"the latency poller failed: {poller.error!r}") from poller.error
    cpu = breakdown(delta, own_s=service_cpu, events=stats.sent, seconds=stats.seconds)
    if backend0 is not None and backend1 is not None:
        cpu["poller_postgres_s"] = round(backend1 - backend0, 3)
        cpu["poller_postgres_us_per_event"] = round((backend1 - backend0) * 1e6 / stats.sent, 2)
    return stats, poller, cpu

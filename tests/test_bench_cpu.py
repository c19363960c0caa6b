"""The benchmark's CPU accounting and its load generator, which bench/RESULTS.md's figures rest on.

No speed is asserted. These check that PostgreSQL's CPU is counted for backends that exit inside
a window (the postmaster's reaped-children times) and for the system's own database's backends,
and that the latency load generator writes the events a real keyed producer would: valid
events, in the partition aiokafka's keyed ``send()`` picks, occurredAt strictly increasing and
at most the linger (plus scheduling slack) before the record's own Kafka timestamp.
"""

from __future__ import annotations

import asyncio
import os
import queue
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from bench.cpu import StackCpu, breakdown
from bench.infra import TopicSet
from bench.latency import plan_sends, produce_at_rate, template_events
from bench.workload import tenant_ids
from schemas import Rejection, decode_event
from tests.conftest import Database, Services, Topics

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _stack_cpu(services: Services, database_url: str | None = None) -> StackCpu:
    port = urlsplit(services.database_url).port
    return StackCpu.for_addresses(services.kafka_bootstrap, port, database_url=database_url)


async def _burn(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")


async def test_postgres_cpu_includes_backends_that_exit_inside_the_window(
    services: Services, database: Database
) -> None:
    stack = _stack_cpu(services, database.url)
    if services.source == "local-stack":
        assert stack.postmaster is not None
        assert stack.broker is not None
    start = stack.sample()
    # One backend of this test's database lives through the window, one exits inside it.
    staying = await asyncpg.connect(database.url)
    leaving = await asyncpg.connect(database.url)
    try:
        staying_pid = await staying.fetchval("SELECT pg_backend_pid()")
        leaving_pid = await leaving.fetchval("SELECT pg_backend_pid()")
        await _burn(staying)
        await _burn(leaving)
        staying_cpu, leaving_cpu = _cpu(staying_pid), _cpu(leaving_pid)
        await leaving.close()
        for _ in range(100):  # until the postmaster has reaped it (its CPU moves to cutime)
            if not await asyncio.to_thread(os.path.exists, f"/proc/{leaving_pid}"):
                break
            await asyncio.sleep(0.02)
        delta = StackCpu.between(start, stack.sample())
    finally:
        await staying.close()
        if not leaving.is_closed():
            await leaving.close()
    if stack.postmaster is None:
        assert delta.postgres_s is None
        return
    tick = 2 / _CLK_TCK
    assert staying_cpu + leaving_cpu > 0.05  # the burn is measurable at all
    # Whole server: both backends (others' work on the shared server can only add to it).
    assert delta.postgres_s is not None
    assert delta.postgres_s >= staying_cpu + leaving_cpu - tick
    # This database only: the backend alive at the end; the one that left is not attributable.
    assert delta.postgres_database_s is not None
    assert delta.postgres_database_s >= staying_cpu - tick
    # The machine's counter is sampled per CPU at each tick, a process's time is its precise run
    # time rounded once: on a loaded machine the two disagree by a few per cent (0.71 s against
    # 0.74 s in one CI run), so the bound allows that much and no more.
    slack = (os.cpu_count() or 1) * tick + 0.10 * delta.postgres_s
    assert delta.machine_busy_s >= delta.postgres_s - slack
    figures = breakdown(delta, own_s=0.0, events=1000, seconds=1.0)
    assert figures["postgres_us_per_event"] == round(delta.postgres_s * 1000, 2)


def test_no_figures_for_a_server_that_is_not_the_stacks(services: Services) -> None:
    stack = StackCpu.for_addresses(services.kafka_bootstrap, 1)  # no PostgreSQL on port 1
    delta = StackCpu.between(stack.sample(), stack.sample())
    assert stack.postmaster is None
    assert delta.postgres_s is None
    assert delta.postgres_database_s is None


@pytest.mark.partitions(6)  # the generator places keys over 6 partitions, as the bench's topics
async def test_the_load_generator_writes_what_a_keyed_producer_would(
    services: Services, topics: Topics
) -> None:
    six = TopicSet(topics.snapshots, topics.costs, topics.policies, topics.dlq)
    events = template_events(1_500, tenant_ids(50), seed=3, prefix="gen")
    plan = plan_sends(six, events, sample_every=10)
    tracked: queue.SimpleQueue[tuple[str, str, int, bool]] = queue.SimpleQueue()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, linger_ms=0, acks=1)
    await producer.start()
    try:
        for topic in six.sources:
            await producer.partitions_for(topic)
        before_us = time.time_ns() // 1_000
        stats = await produce_at_rate(producer, plan, 3_000.0, tracked)
        after_us = time.time_ns() // 1_000
        # Where aiokafka's own keyed send() (default partitioner) puts some of the same keys.
        probe = {}
        for event in events[:60]:
            meta = await producer.send_and_wait(six.for_type(event.type), b"{}", key=event.key)
            probe[event.key] = meta.partition
    finally:
        await producer.stop()
    assert stats.sent == len(events)
    assert tracked.qsize() == len(range(0, len(events), 10))

    consumer = AIOKafkaConsumer(
        *six.sources, bootstrap_servers=services.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while len(got) < len(events) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=1_000)).values():
                got += [r for r in records if r.value != b"{}"]
    finally:
        await consumer.stop()
    assert len(got) == len(events)
    partition_of: dict[bytes, int] = {}
    stamps = set()
    for record in got:
        decoded = decode_event(record.value)
        assert not isinstance(decoded, Rejection), decoded
        partition_of[record.key] = record.partition
        at_us = round(decoded.version[0].timestamp() * 1_000_000)
        stamps.add(at_us)
        # Stamped while the generator ran, and the record's CreateTime is that moment, in ms.
        assert before_us <= at_us <= after_us + 10_000  # its clock is time.time + perf_counter
        assert record.timestamp == at_us // 1_000
    for key, partition in probe.items():
        assert partition_of[key] == partition
    assert len(stamps) == len(got)  # strictly increasing as handed over: no two alike

"""Smoke tests: the services under every other test are the real ones, and the stack controls them.

These prove what the fault tests rely on: Kafka commits offsets for a group, PostgreSQL stores JSONB
exactly, and the local stack can start, restart and stop each service it owns — and only those.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.conftest import STACK, PrivateStack, Services, Topics, unique


async def test_kafka_group_commit_is_visible_to_a_second_consumer(
    services: Services, topics: Topics
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topics.snapshots, f"v{i}".encode(), key=b"k", partition=0)
    finally:
        await producer.stop()

    group = unique("smoke")
    member = AIOKafkaConsumer(
        topics.snapshots,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await member.start()
    try:
        seen: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(seen) < 5 and time.monotonic() < deadline:
            batch = await member.getmany(timeout_ms=500)
            for tp, records in batch.items():
                seen.extend(r.value for r in records)
                await member.commit({tp: records[-1].offset + 1})
        assert seen == [f"v{i}".encode() for i in range(5)]
    finally:
        await member.stop()

    # A second consumer of the same group reads the committed position back from the broker.
    observer = AIOKafkaConsumer(
        bootstrap_servers=services.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await observer.start()
    try:
        assert await observer.committed(TopicPartition(topics.snapshots, 0)) == 5
    finally:
        await observer.stop()


async def test_postgres_jsonb_round_trip_keeps_decimals(services: Services) -> None:
    conn = await asyncpg.connect(services.database_url)
    try:
        text = '{"totalCostUsd": 0.1, "tiny": 0.0000001, "nested": {"xs": [1, 2.50]}}'
        back = await conn.fetchval("SELECT ($1::jsonb)::text", text)
        assert json.loads(back, parse_float=Decimal) == {
            "totalCostUsd": Decimal("0.1"),
            "tiny": Decimal("0.0000001"),
            "nested": {"xs": [1, Decimal("2.50")]},
        }
        # jsonb keeps the numeric's scale: 2.50 is not turned into 2.5.
        assert "2.50" in back
    finally:
        await conn.close()


async def test_postgres_restart_is_survived_by_a_reconnecting_client(
    private_stack: PrivateStack,
) -> None:
    await asyncio.to_thread(private_stack.up, "postgres")
    pool = await asyncpg.create_pool(private_stack.database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        await asyncio.to_thread(private_stack.down, "postgres")
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await pool.fetchval("SELECT 1")
        await asyncio.to_thread(private_stack.up, "postgres")
        # The pool discards the dead connection and opens a new one: no restart of the client.
        for _ in range(50):
            try:
                assert await pool.fetchval("SELECT 2") == 2
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(0.2)
        else:
            pytest.fail("client did not reconnect after PostgreSQL came back")
    finally:
        await pool.close()


def _pids(directory: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    kafka = directory / "kafka" / "pid"
    postgres = directory / "postgres" / "data" / "postmaster.pid"
    if kafka.exists():
        found["kafka"] = int(kafka.read_text().split()[0])
    if postgres.exists():
        found["postgres"] = int(postgres.read_text().split()[0])
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_stack_up_is_idempotent_and_down_stops_exactly_its_processes(
    private_stack: PrivateStack,
) -> None:
    private_stack.up()
    first = _pids(private_stack.directory)
    assert set(first) == {"kafka", "postgres"}

    started = time.monotonic()
    private_stack.up()
    second_call = time.monotonic() - started
    assert _pids(private_stack.directory) == first, "the second `up` started something new"
    assert second_call < 5, f"second `up` took {second_call:.1f}s"

    status = subprocess.run(
        [str(STACK), "status"], env=private_stack.env(), capture_output=True, text=True, check=False
    )
    assert status.returncode == 0
    assert "kafka: running" in status.stdout
    assert "postgres: running" in status.stdout

    private_stack.down()
    assert not any(_alive(pid) for pid in first.values())
    status = subprocess.run(
        [str(STACK), "status"], env=private_stack.env(), capture_output=True, text=True, check=False
    )
    assert status.returncode == 1
    assert "kafka: stopped" in status.stdout
    assert "postgres: stopped" in status.stdout

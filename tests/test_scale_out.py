"""Scale-out on one machine: three ``routing-persistence run`` processes in one consumer group on
12-partition topics process a backlog to exactly the rows one process writes, and the group gives
each of them a share of the partitions (seen on each process's own ``/metrics``).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.workload import generate, tenant_ids
from consumer.settings import Settings
from schemas import EventType
from tests.conftest import Database, Services, Topics, free_port, unique
from tests.security_helpers import ServiceProcess, group_state, publish, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG = 6_000
TENANTS = tenant_ids(40)
PROCESSES = 3
PARTITIONS = 12

_ROWS_SQL = """
SELECT "id", "requestId", "tenantId",
       "routingSnapshot"::text AS snapshot, "routingSnapshotOccurredAt", "routingSnapshotEventId",
       "actualCost"::text AS cost, "actualCostOccurredAt", "actualCostEventId"
FROM "ExecutionRecord" ORDER BY "requestId"
"""
_TENANTS_SQL = """
SELECT "id", "routingPolicy"::text AS policy, "routingPolicyOccurredAt", "routingPolicyEventId"
FROM "Tenant" ORDER BY "id"
"""


@pytest.fixture
async def second_database(services: Services, migrated_template: str) -> AsyncIterator[Database]:
    """Another fresh migrated database (the three-process run writes here)."""
    name = unique("db").replace("-", "_")
    conn = await asyncpg.connect(services.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    finally:
        await conn.close()
    url = services.database_url.rsplit("/", 1)[0] + f"/{name}"
    yield Database(name, url, services.database_url)
    conn = await asyncpg.connect(services.database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _snapshot_of(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rows = [tuple(r) for r in await db.fetch(_ROWS_SQL)]
    tenants = [tuple(r) for r in await db.fetch(_TENANTS_SQL)]
    return rows, tenants


async def _insert_tenants(db: Database) -> None:
    conn = await db.connect()
    try:
        await conn.executemany('INSERT INTO "Tenant" ("id") VALUES ($1)', [(t,) for t in TENANTS])
    finally:
        await conn.close()


async def _drain(settings: Settings, timeout_s: float = 150.0) -> None:
    """Wait until the group has committed every partition's end offset."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed, ends = await group_state(settings)
        if ends and all(committed.get(tp, 0) == end for tp, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"not drained: {sum(ends.values())} records"
        await asyncio.sleep(0.5)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match[1])


def _events_handled(text: str) -> float:
    pattern = r"^routing_consumer_events_total\{[^}]*\} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


async def _wait_for_shares(ports: list[int], procs: list[ServiceProcess]) -> list[float]:
    """Wait until every process holds partitions and together they hold all of them once."""
    total = 3 * PARTITIONS
    deadline = time.monotonic() + 90
    shares: list[float] = []
    while time.monotonic() < deadline:
        for p in procs:
            assert p.process.poll() is None, p.output[-3000:]
        try:
            texts = await asyncio.gather(*(asyncio.to_thread(_metrics, p) for p in ports))
        except OSError:
            await asyncio.sleep(0.5)
            continue
        shares = [_value(t, "routing_consumer_assigned_partitions") for t in texts]
        if all(s > 0 for s in shares) and sum(shares) == total:
            return shares
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions never shared out: {shares}")


@pytest.mark.partitions(PARTITIONS)
async def test_three_processes_share_partitions_and_write_what_one_writes(
    settings: Settings,
    topics: Topics,
    database: Database,
    second_database: Database,
    tmp_path: Path,
) -> None:
    """A third of the backlog waits before the group forms, the rest arrives once it has formed
    (so every member provably takes records, not only partitions); then one process alone reads
    the same topics from the start into another database: the rows must be identical."""
    assert topics.partitions == PARTITIONS
    await _insert_tenants(database)
    await _insert_tenants(second_database)
    backlog = list(generate(BACKLOG, seed=8, tenants=TENANTS))
    # Project A's rows, in both databases (a missing one would be held, not written).
    rows = {e.row_key: e.tenant_id for e in backlog if e.type is not EventType.POLICY}
    for db in (database, second_database):
        await db.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
            "SELECT k, k, t FROM unnest($1::text[], $2::text[]) AS u(k, t)",
            list(rows),
            list(rows.values()),
        )
    waiting, arriving = backlog[: BACKLOG // 3], backlog[BACKLOG // 3 :]
    assert await publish(settings, waiting) == len(waiting)

    # Three processes, one group.
    group = settings.model_copy(
        update={
            "group_id": unique("three"),
            "database_url": Settings(database_url=second_database.url).database_url,
        }
    )
    ports = [free_port() for _ in range(PROCESSES)]
    procs = [
        start_service(group, tmp_path, f"member-{i}", ROUTING_METRICS_PORT=str(port))
        for i, port in enumerate(ports)
    ]
    try:
        shares = await _wait_for_shares(ports, procs)
        assert await publish(settings, arriving) == len(arriving)
        await _drain(group)
        texts = [await asyncio.to_thread(_metrics, p) for p in ports]
        final_shares = [_value(t, "routing_consumer_assigned_partitions") for t in texts]
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0] * PROCESSES, [p.output[-2000:] for p in procs]

    # Each member held an equal share of the 36 partitions (round robin over 3 topics x 12) from
    # the moment the group formed to the end, and handled records of its own.
    assert shares == [PARTITIONS] * PROCESSES
    assert final_shares == shares
    handled = [_events_handled(t) for t in texts]
    assert all(h > 0 for h in handled), handled
    assert sum(handled) >= BACKLOG, handled  # every record handled at least once

    # One process alone, its own group and database, the same topics from the start.
    alone = settings.model_copy(update={"group_id": unique("one")})
    single = start_service(alone, tmp_path, "single")
    try:
        await _drain(alone)
    finally:
        assert single.stop() == 0, single.output[-3000:]

    one_rows, one_tenants = await _snapshot_of(database)
    three_rows, three_tenants = await _snapshot_of(second_database)
    assert len(one_rows) > BACKLOG // 3
    assert three_rows == one_rows
    assert three_tenants == one_tenants
    assert any(t[1] is not None for t in one_tenants), "policies were applied too"

"""Lanes and batches in flight, with the real broker and database.

A batch is applied as one transaction per lane (events split by row key), and in a backlog the
next batches go to the database before the first has committed. What users rely on: a lane
held up by a lock does not hold up the other lanes, nothing is read further than the batches
in flight, no offset is committed past a batch that is not durable, and rows written by
successive batches converge without lock waits between the lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from consumer.pipeline.lanes import lane_of
from consumer.service.service import Service
from consumer.settings import Settings
from tests.apply_helpers import at, cost, snapshot
from tests.conftest import Database, unique
from tests.fault_helpers import seed_rows, snapshots, snapshots_stored
from tests.security_helpers import publish
from tests.service_helpers import (
    committed_offsets,
    end_offsets,
    metric_sum,
    parse_metrics,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

BATCH = 50
#: Batches in the database at once in a backlog (the service's bound, stated by the docs).
IN_FLIGHT = 2


async def _stored(conn: asyncpg.Connection, prefix: str) -> set[str]:
    rows = await conn.fetch(
        'SELECT "requestId" FROM "ExecutionRecord" WHERE "requestId" LIKE $1 '
        'AND "routingSnapshot" IS NOT NULL',
        f"{prefix}-%",
    )
    return {r["requestId"] for r in rows}


@contextlib.asynccontextmanager
async def _service_behind_a_row_lock(
    settings: Settings, database_url: str, key: str
) -> AsyncIterator[tuple[asyncpg.Connection, Transaction, Service, asyncio.Task[int]]]:
    """A service started while another session holds the row lock of ``key`` (roll the lock
    back to release it); the service must then stop cleanly."""
    blocker = await asyncpg.connect(database_url)
    service = Service(settings, metrics_port=0)
    task: asyncio.Task[int] | None = None
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(
            'SELECT 1 FROM "ExecutionRecord" WHERE "requestId" = $1 FOR UPDATE', key
        )
        task = asyncio.create_task(service.run())
        yield blocker, lock, service, task
        service.request_stop()
        assert await asyncio.wait_for(task, 60) == 0
    finally:
        await blocker.close()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _until(check: Callable[[], Awaitable[bool]], task: asyncio.Task[int], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.partitions(1)
async def test_a_lane_held_by_a_lock_holds_up_only_its_own_rows_and_no_offset_passes_it(
    settings: Settings, database: Database
) -> None:
    settings = settings.model_copy(update={"batch_max_records": BATCH, "db_lanes": 2})
    assert settings.lanes == 2
    rows = 8 * BATCH
    prefix, tenant = unique("lanes"), unique("tenant")
    keys = [f"{prefix}-{i}" for i in range(rows)]
    await seed_rows(database.url, keys, tenant)
    await publish(settings, snapshots(prefix, rows, tenant))  # one partition, in key order
    held = keys[0]  # the first record of the first batch
    own_lane = {k for k in keys if lane_of(k, 2) == lane_of(held, 2)}
    async with _service_behind_a_row_lock(settings, database.url, held) as (blocker, lock, _, task):

        async def other_lane_written() -> bool:
            return bool(await _stored(blocker, prefix))

        await _until(other_lane_written, task, "the other lane's rows of the first batch")
        await asyncio.sleep(1.5)  # room to go further, which it must not
        written = await _stored(blocker, prefix)
        # The other lane went on; the held lane's rows wait, this batch's and the next's.
        assert written
        assert not written & own_lane
        # Read no further than the batches in flight: their records, and nothing after them.
        assert written <= set(keys[: IN_FLIGHT * BATCH])
        # Nothing handed over while the first batch is not durable.
        assert await committed_offsets(settings) == {}
        await lock.rollback()

        await wait_caught_up(settings)
        assert await snapshots_stored(database.url, prefix) == rows
        ends = await end_offsets(settings, settings.source_topics)
        assert await committed_offsets(settings) == {tp: n for tp, n in ends.items() if n > 0}


async def test_hot_rows_in_every_batch_converge_without_deadlocks_or_retries(
    settings: Settings, database: Database
) -> None:
    # Few rows, many versions of each, shuffled: every batch in flight touches the same rows.
    # A deadlock or a lost race would be retried and counted. (That a lane waits for its own
    # predecessor is what the test above checks.)
    settings = settings.model_copy(update={"batch_max_records": 40, "db_lanes": 2})
    prefix, tenant = unique("hot"), unique("tenant")
    keys = [f"{prefix}-{i}" for i in range(12)]
    await seed_rows(database.url, keys, tenant)
    rng = random.Random(7)
    events, newest = [], {}
    for key in keys:
        for kind, make in (("snapshot", snapshot), ("cost", cost)):
            versions = [(at(rng.uniform(0, 1000)), uuid.uuid4()) for _ in range(60)]
            newest[(key, kind)] = str(max(versions)[1])
            events += [make(key, tenant, when, event_id=eid) for when, eid in versions]
    rng.shuffle(events)
    conn = await asyncpg.connect(database.url)
    try:
        await publish(settings, events)
        service = Service(settings, metrics_port=0)
        task = asyncio.create_task(service.run())
        try:
            await wait_caught_up(settings)
            metrics = parse_metrics(service.metrics.render().decode())
            assert metric_sum(metrics, "routing_consumer_db_retries_total") == 0
            rows = await conn.fetch(
                'SELECT "requestId", "routingSnapshotEventId"::text AS s, '
                '"actualCostEventId"::text AS c FROM "ExecutionRecord" WHERE "requestId" LIKE $1',
                f"{prefix}-%",
            )
            stored = {}
            for r in rows:
                stored[(r["requestId"], "snapshot")] = r["s"]
                stored[(r["requestId"], "cost")] = r["c"]
            assert stored == newest
            service.request_stop()
            assert await asyncio.wait_for(task, 60) == 0
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await conn.close()


@pytest.mark.partitions(1)
async def test_live_traffic_below_the_batch_bound_is_one_transaction_as_it_comes(
    settings: Settings, database: Database
) -> None:
    # A batch smaller than ROUTING_BATCH_MAX_RECORDS is live traffic: one transaction (a second
    # one costs more than it overlaps), so a lock on one of its rows holds all of it.
    settings = settings.model_copy(update={"db_lanes": 2})
    prefix, tenant = unique("live"), unique("tenant")
    keys = [f"{prefix}-{i}" for i in range(40)]
    await seed_rows(database.url, keys, tenant)
    await publish(settings, snapshots(prefix, len(keys), tenant))
    async with _service_behind_a_row_lock(settings, database.url, keys[0]) as (
        blocker,
        lock,
        service,
        task,
    ):

        async def fetched() -> bool:
            metrics = parse_metrics(service.metrics.render().decode())
            return metric_sum(metrics, "routing_consumer_retries_total") > 0 or bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )

        await _until(fetched, task, "the batch waiting for the row lock")
        await asyncio.sleep(1.0)
        assert await _stored(blocker, prefix) == set()
        await lock.rollback()
        await wait_caught_up(settings)
        assert await snapshots_stored(database.url, prefix) == len(keys)

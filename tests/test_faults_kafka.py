"""Kafka faults of production's bad days, produced for real against ``routing-persistence run``
as a process: a producer transaction that aborts newest-looking events, offset commits that
cannot be made while the broker is away, and dead letters the broker refuses to take."""

from __future__ import annotations

import asyncpg
import pytest

from consumer.settings import Settings
from tests.apply_helpers import at, produce, snapshot
from tests.conftest import Database, Topics, unique
from tests.fault_helpers import seed_rows
from tests.ops_helpers import (
    committed_offsets,
    end_offsets,
    live_consumer,
    produce_aborted,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 10


async def _stored_event_ids(database_url: str, prefix: str) -> dict[str, str | None]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            'SELECT "requestId", "routingSnapshotEventId"::text AS e FROM "ExecutionRecord" '
            'WHERE "requestId" LIKE $1',
            f"{prefix}-%",
        )
    finally:
        await conn.close()
    return {r["requestId"]: r["e"] for r in rows}


async def test_run_never_applies_records_of_an_aborted_transaction(
    settings: Settings, topics: Topics, database: Database
) -> None:
    """A transactional producer writes newer-looking snapshots for every row and aborts: after
    ``run`` the rows hold what they would hold had the transaction never been, and the group's
    committed offsets reach the end (the aborted records and markers are passed, not stuck on)."""
    prefix, tenant = unique("tx"), unique("tenant")
    requests = [f"{prefix}-{i}" for i in range(ROWS)]
    await seed_rows(database.url, [*requests, f"{prefix}-last"], tenant)
    bootstrap = settings.kafka_bootstrap_servers
    committed = [snapshot(r, tenant, at(1)) for r in requests]
    aborted = [snapshot(r, tenant, at(1000)) for r in requests]
    last = snapshot(f"{prefix}-last", tenant, at(2))
    await produce(bootstrap, [(topics.snapshots, e.key, e.value) for e in committed])
    await produce_aborted(
        bootstrap, [(topics.snapshots, e.key, e.value) for e in aborted], partition=0
    )
    # A committed record after the aborted ones: reaching it means run read past them.
    await produce(bootstrap, [(topics.snapshots, last.key, last.value)])

    async with live_consumer(settings) as process:
        await wait_caught_up(settings, process)
        stored = await _stored_event_ids(database.url, prefix)
        # Another aborted transaction, last in its partition: a quiet partition after it must
        # not show stale lag (the committed offset reaches the end, markers included).
        await produce_aborted(
            bootstrap, [(topics.snapshots, e.key, e.value) for e in aborted], partition=0
        )
        await wait_caught_up(settings, process)

    assert stored == {
        **{e.key.decode(): str(e.event_id) for e in committed},
        f"{prefix}-last": str(last.event_id),
    }
    assert await _stored_event_ids(database.url, prefix) == stored
    ends = await end_offsets(bootstrap, settings.source_topics)
    committed_now = await committed_offsets(bootstrap, settings.group_id)
    assert {tp: committed_now.get(tp, 0) for tp in ends} == ends

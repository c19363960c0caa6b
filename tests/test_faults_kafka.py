"""Kafka faults of production's bad days, produced for real against ``routing-persistence run``
as a process: a producer transaction that aborts newest-looking events, offset commits that
cannot be made while the broker is away, and dead letters the broker refuses to take."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from consumer.settings import Settings
from schemas import OutgoingEvent
from tests.apply_helpers import at, produce, snapshot
from tests.conftest import Database, PrivateStack, Topics, create_topics, unique
from tests.fault_helpers import (
    logged,
    metric,
    readyz,
    seed_rows,
    snapshots,
    snapshots_stored,
    start_consumer,
    until,
)
from tests.ops_helpers import (
    committed_offsets,
    end_offsets,
    headers_of,
    live_consumer,
    produce_aborted,
    read_topic,
    wait_caught_up,
)
from tests.security_helpers import publish
from tests.service_helpers import ConsumerProcess, http_get

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 10
DB_RETRIES = "routing_consumer_db_retries_total"
RETRIES = "routing_consumer_retries_total"


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


async def _readiness(consumer: ConsumerProcess) -> dict[str, Any]:
    """``/readyz``'s status and body (the process must still run)."""
    code = await readyz(consumer)
    body = json.loads((await http_get(consumer.metrics_port, "/readyz"))[1])
    return {"status": code, **body}


async def test_a_pod_that_cannot_write_dead_letters_is_not_ready_and_counts_no_db_retries(
    settings: Settings,
    private_stack: PrivateStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dead-letter topic does not exist and the broker creates no topic by itself (as in
    production): rejected records cannot be dead-lettered, so the pod says not ready
    (``can_dead_letter`` false) while it retries, counts those retries as ``dead_letter`` and
    not as database retries, and is ready again once the topic exists and the letters are
    written. Nothing else is wrong: the broker answers and the database is writable."""
    monkeypatch.setenv("ROUTING_STACK_KAFKA_AUTO_CREATE", "false")
    await asyncio.to_thread(private_stack.up, "kafka")
    bootstrap = private_stack.kafka_bootstrap
    settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    await create_topics(bootstrap, list(settings.source_topics), 3)
    consumer = start_consumer(settings, tmp_path)
    bad = [(settings.topic_snapshots, f"k-{i}".encode(), b"{not json") for i in range(5)]
    try:
        await consumer.wait_ready(within=90)
        port = consumer.metrics_port
        await produce(bootstrap, bad)
        # The first attempt ends when the producer gives up waiting for the topic's metadata.
        await until(
            lambda: metric(port, RETRIES, operation="dead_letter"),
            lambda n: n >= 1,
            within=120,
            what="a dead-letter retry",
        )
        state = await until(
            lambda: _readiness(consumer),
            lambda r: r["status"] == 503,
            within=30,
            what="/readyz 503",
        )
        assert state["can_dead_letter"] is False, state
        assert state["database_writable"] is True, state
        assert state["broker_reachable"] is True, state
        assert await metric(port, DB_RETRIES) == 0

        await create_topics(bootstrap, [settings.topic_dlq], 3)
        await until(lambda: readyz(consumer), lambda s: s == 200, within=120, what="/readyz 200")
        await wait_caught_up(settings, time_limit_s=60)
        letters = await read_topic(bootstrap, settings.topic_dlq)
        assert sorted(r.key for r in letters) == sorted(k for _, k, _ in bad)
        assert {headers_of(r)["dlq.reason"] for r in letters} == {"invalid_json"}
        assert await metric(port, DB_RETRIES) == 0
        assert await metric(port, RETRIES, operation="dead_letter") >= 1
        assert await consumer.terminate() == 0
    finally:
        consumer.cleanup()


async def _blocked_on_lock(database_url: str) -> bool:
    """Whether a session of the service waits for a lock (its batch is in hand, stuck)."""
    conn = await asyncpg.connect(database_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity "
                "WHERE application_name = 'routing-persistence' AND wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def _apply_while_the_broker_is_away(
    settings: Settings,
    database: Database,
    stack: PrivateStack,
    events: list[OutgoingEvent],
    prefix: str,
    want_rows: int,
) -> None:
    """Get a batch of ``events`` into the service's hands, stop the broker, and let the batch
    be applied: its offsets must then be committed with no broker to take them."""
    locker = await asyncpg.connect(database.url)
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute('LOCK TABLE "ExecutionRecord" IN EXCLUSIVE MODE')
        await publish(settings, events)
        await until(lambda: _blocked_on_lock(database.url), bool, within=60, what="a batch in hand")
        await asyncio.to_thread(stack.down, "kafka")
        await lock.rollback()
    finally:
        await locker.close()
    await until(
        lambda: snapshots_stored(database.url, prefix),
        lambda n: n == want_rows,
        within=60,
        what="the batch written",
    )


async def test_a_failed_offset_commit_is_retried_until_the_broker_takes_it(
    settings: Settings, database: Database, private_stack: PrivateStack, tmp_path: Path
) -> None:
    """The broker goes away between a batch's transaction and its offset commit, and nothing is
    produced after it comes back: the commit is retried until it lands, so the group's
    committed offsets reach the end and the lag gauge goes to 0 (a quiet partition shows no
    stale lag). At shutdown, a commit that cannot be made is logged as abandoned."""
    await asyncio.to_thread(private_stack.up, "kafka")
    bootstrap = private_stack.kafka_bootstrap
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "kafka_commit_timeout_s": 3.0,
            # Longer than the outage: the instance keeps its partitions, no rebalance rereads.
            "kafka_session_timeout_ms": 120_000,
            "shutdown_timeout_s": 5.0,
        }
    )
    await create_topics(bootstrap, [*settings.source_topics, settings.topic_dlq], 3)
    prefix, tenant = unique("commit"), unique("tenant")
    await seed_rows(database.url, [f"{prefix}-{i}" for i in range(2 * ROWS)], tenant)
    first = snapshots(prefix, ROWS, tenant)
    second = [snapshot(f"{prefix}-{ROWS + i}", tenant, at(i)) for i in range(ROWS)]
    consumer = start_consumer(settings, tmp_path)
    try:
        await consumer.wait_ready(within=90)
        port = consumer.metrics_port
        await _apply_while_the_broker_is_away(
            settings, database, private_stack, first, prefix, ROWS
        )
        await until(
            lambda: asyncio.sleep(0, _commit_retries(consumer)),
            lambda n: n >= 1,
            within=60,
            what="the failed offset commit retried",
        )
        await asyncio.to_thread(private_stack.up, "kafka")
        await wait_caught_up(settings, time_limit_s=120)
        await until(
            lambda: metric(port, "routing_consumer_lag_records"),
            lambda n: n == 0,
            within=60,
            what="routing_consumer_lag_records 0",
        )
        await until(lambda: readyz(consumer), lambda s: s == 200, within=60, what="/readyz 200")

        # Shutdown with a commit that cannot be made: said so, and the records come again.
        await _apply_while_the_broker_is_away(
            settings, database, private_stack, second, prefix, 2 * ROWS
        )
        assert await consumer.terminate() == 0
    finally:
        consumer.cleanup()
    abandoned = logged(consumer.log_path, "offsets.commit_abandoned")
    assert len(abandoned) == 1, consumer.tail()
    partitions = abandoned[0]["partitions"]
    assert partitions, abandoned
    assert all(p.startswith(f"{settings.topic_snapshots}:") for p in partitions), abandoned


def _commit_retries(consumer: ConsumerProcess) -> int:
    retries = logged(consumer.log_path, "retry.scheduled")
    return sum(1 for r in retries if r.get("operation") == "commit")

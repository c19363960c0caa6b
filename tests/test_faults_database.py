"""Database faults of production's bad days, produced for real against ``routing-persistence
run`` as a process: another session's lock held past the statement timeout, a slow statement
cancelled by the statement timeout, a failover to a read-only node. The process must never
exit, must say not-ready while it cannot write, count its retries, and resume by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event

from consumer.db import APPLICATION_NAME, _discard_read_only_connections, create_engine
from consumer.errors import DatabaseUnavailable
from consumer.settings import Settings
from tests.apply_helpers import apply_in_transaction, at, produce, snapshot, with_raw_payload
from tests.conftest import Database, unique
from tests.fault_helpers import (
    caught_up,
    logged,
    metric,
    readyz,
    seed_rows,
    snapshots,
    snapshots_stored,
    start_consumer,
    until,
)
from tests.ops_helpers import headers_of, read_topic
from tests.security_helpers import publish
from tests.service_helpers import ConsumerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 20
STATEMENT_TIMEOUT_MS = 3000
DB_RETRIES = "routing_consumer_db_retries_total"


def _short_timeouts(settings: Settings) -> Settings:
    # The lock timeout is left unset: the service derives it (below the statement timeout).
    return settings.model_copy(update={"db_statement_timeout_ms": STATEMENT_TIMEOUT_MS})


async def _hold_and_watch(consumer: ConsumerProcess, seconds: float) -> tuple[set[int], float]:
    """Poll ``/readyz`` for ``seconds`` (the process must stay up): the statuses seen and the
    db retries counted meanwhile."""
    port = consumer.metrics_port
    seen: set[int] = set()
    before = await metric(port, DB_RETRIES)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert consumer.proc.poll() is None, (
            f"exited {consumer.proc.returncode}:\n{consumer.tail()}"
        )
        seen.add(await readyz(consumer))
        await asyncio.sleep(0.1)
    return seen, await metric(port, DB_RETRIES) - before


async def test_a_lock_held_past_the_statement_timeout_is_waited_out_not_fatal(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    settings = _short_timeouts(settings)
    prefix, tenant = unique("lock"), unique("tenant")
    await seed_rows(database.url, [f"{prefix}-{i}" for i in range(ROWS)], tenant)
    consumer = start_consumer(settings, tmp_path)
    locker = await asyncpg.connect(database.url)
    try:
        await consumer.wait_ready()
        port = consumer.metrics_port
        # Another team's migration: an ACCESS EXCLUSIVE lock in an open transaction.
        lock = locker.transaction()
        await lock.start()
        await locker.execute('LOCK TABLE "ExecutionRecord" IN ACCESS EXCLUSIVE MODE')
        await publish(settings, snapshots(prefix, ROWS, tenant))
        await until(lambda: readyz(consumer), lambda s: s == 503, within=30, what="/readyz 503")
        # Held for three statement timeouts: never ready, retrying, still running.
        seen, retried = await _hold_and_watch(consumer, 3 * STATEMENT_TIMEOUT_MS / 1000)
        assert consumer.proc.poll() is None, consumer.tail()
        assert seen == {503}, f"/readyz while the lock is held: {seen}"
        assert retried >= 2, consumer.tail()
        # Nothing written under the lock (read in the locking session: any other would queue).
        written = await locker.fetchval(
            'SELECT count(*) FROM "ExecutionRecord" WHERE "requestId" LIKE $1 '
            'AND "routingSnapshot" IS NOT NULL',
            f"{prefix}-%",
        )
        assert written == 0
        await lock.rollback()  # the lock goes: no operator action from here on

        await until(
            lambda: snapshots_stored(database.url, prefix),
            lambda n: n == ROWS,
            within=60,
            what="rows written after the lock was released",
        )
        await until(
            lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200 again"
        )
        assert await metric(port, DB_RETRIES) >= retried
        assert await consumer.terminate() == 0
    finally:
        await locker.close()
        consumer.cleanup()
    retries = logged(consumer.log_path, "retry.scheduled")
    assert any("55P03" in str(r.get("error")) for r in retries), retries[:3]
    assert not logged(consumer.log_path, "consumer.fatal")


async def test_a_statement_cancelled_by_the_statement_timeout_is_retried_not_fatal(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    """57014: each write runs longer than the statement timeout (a slow trigger stands in for
    an overloaded server), is cancelled, and is retried until it fits again."""
    settings = _short_timeouts(settings)
    prefix, tenant = unique("slow"), unique("tenant")
    await seed_rows(database.url, [f"{prefix}-{i}" for i in range(ROWS)], tenant)
    await database.execute(
        f"""CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({2 * STATEMENT_TIMEOUT_MS / 1000}); RETURN NEW; END $$;
            CREATE TRIGGER slow_write BEFORE INSERT OR UPDATE ON "ExecutionRecord"
            FOR EACH ROW EXECUTE FUNCTION slow_write()"""
    )
    consumer = start_consumer(settings, tmp_path)
    try:
        await consumer.wait_ready()
        port = consumer.metrics_port
        await publish(settings, snapshots(prefix, ROWS, tenant))
        await until(
            lambda: metric(port, DB_RETRIES), lambda n: n >= 2, within=60, what="two db retries"
        )
        assert consumer.proc.poll() is None, consumer.tail()
        assert await readyz(consumer) == 503
        await database.execute('DROP TRIGGER slow_write ON "ExecutionRecord"')
        await until(
            lambda: snapshots_stored(database.url, prefix),
            lambda n: n == ROWS,
            within=60,
            what="rows written once statements are fast again",
        )
        await until(
            lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200 again"
        )
        assert await consumer.terminate() == 0
    finally:
        consumer.cleanup()
    retries = logged(consumer.log_path, "retry.scheduled")
    assert any("57014" in str(r.get("error")) for r in retries), retries[:3]
    assert not logged(consumer.log_path, "consumer.fatal")


async def _set_read_only(database: Database, read_only: bool) -> None:
    """A failover to a demoted primary behind the same address, and back: what new sessions of
    the database get. Sessions already open keep what they started with, for life."""
    admin = await asyncpg.connect(database.admin_url)
    try:
        setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
        await admin.execute(f'ALTER DATABASE "{database.name}" {setting}')
    finally:
        await admin.close()


async def _terminate_service_sessions(database: Database) -> int:
    """Cut the service's sessions, as a failover does; its pool reconnects."""
    admin = await asyncpg.connect(database.admin_url)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = $2",
            database.name,
            APPLICATION_NAME,
        )
    finally:
        await admin.close()
    return len(rows)


async def _is_read_only(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT current_setting('transaction_read_only')") == "on")


async def test_failover_to_a_read_only_node_is_retried_and_left_by_itself(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    prefix, tenant = unique("ro"), unique("tenant")
    await seed_rows(database.url, [f"{prefix}-{i}" for i in range(ROWS)], tenant)
    consumer = start_consumer(settings, tmp_path)
    witness: asyncpg.Connection | None = None
    try:
        await consumer.wait_ready()
        port = consumer.metrics_port
        # Idle (no records): the failover is seen by the database probe alone, and left too.
        await _set_read_only(database, True)
        assert await _terminate_service_sessions(database) >= 1
        await until(lambda: readyz(consumer), lambda s: s == 503, within=30, what="/readyz 503")
        await _set_read_only(database, False)
        await until(lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200")

        # Busy: batches written while the node is read-only are retried until it is not.
        await _set_read_only(database, True)
        assert await _terminate_service_sessions(database) >= 1
        await publish(settings, snapshots(prefix, ROWS, tenant))
        await until(lambda: readyz(consumer), lambda s: s == 503, within=30, what="/readyz 503")
        await until(
            lambda: metric(port, DB_RETRIES), lambda n: n >= 2, within=60, what="db retries"
        )
        # A session opened while the node is read-only, like those in the service's pool.
        witness = await asyncpg.connect(database.url)
        assert await _is_read_only(witness)

        await _set_read_only(database, False)  # a writable primary behind the address again
        # Sessions of the read-only time stay read-only for life: a pool that kept them would
        # never write again.
        assert await _is_read_only(witness)
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await witness.execute('UPDATE "Tenant" SET "routingPolicy" = NULL WHERE false')

        await until(
            lambda: snapshots_stored(database.url, prefix),
            lambda n: n == ROWS,
            within=60,
            what="rows written once the primary is writable",
        )
        await until(lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200")
        # And it stays ready: no probe lands on a read-only session left in the pool.
        seen = set()
        for _ in range(30):
            seen.add(await readyz(consumer))
            await asyncio.sleep(0.1)
        assert seen == {200}
        assert await consumer.terminate() == 0
    finally:
        if witness is not None:
            await witness.close()
        await _set_read_only(database, False)
        consumer.cleanup()
    retries = logged(consumer.log_path, "retry.scheduled")
    assert any("25006" in str(r.get("error")) for r in retries), retries[:3]
    assert not logged(consumer.log_path, "consumer.fatal")


@pytest.mark.parametrize("discards", [True, False], ids=["discarded", "kept"])
async def test_a_read_only_session_is_discarded_or_the_engine_never_writes_again(
    database: Database, discards: bool
) -> None:
    """Why the service's engine discards a connection that finds the server read-only: kept
    (the listener removed), the same read-only session fails every later batch."""
    engine = create_engine(Settings(database_url=database.url, db_pool_size=1))
    if not discards:
        event.remove(engine.sync_engine, "handle_error", _discard_read_only_connections)
    prefix, tenant = unique("ro"), unique("tenant")
    await seed_rows(database.url, [f"{prefix}-0"], tenant)
    try:
        await _set_read_only(database, True)
        with pytest.raises(DatabaseUnavailable, match="25006"):
            await apply_in_transaction(engine, snapshots(prefix, 1, tenant))
        await _set_read_only(database, False)
        outcomes: list[str] = []
        for attempt in range(3):
            try:
                await apply_in_transaction(engine, snapshots(prefix, 1, tenant, start=attempt + 1))
            except DatabaseUnavailable as exc:
                outcomes.append(str(exc).split(":")[0])
            else:
                outcomes.append("written")
    finally:
        await _set_read_only(database, False)
        await engine.dispose()
    if discards:
        assert outcomes == ["written"] * 3
    else:
        assert len(outcomes) == 3
        assert all("[25006]" in outcome for outcome in outcomes), outcomes


async def test_a_storm_of_refused_records_for_one_key_is_dead_lettered_by_run(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    """Item 3 at the service level: 1,200 different versions of one row, each refused by
    PostgreSQL (``\\u0000`` in a string), plus the row's one valid event: ``run`` dead-letters
    all 1,200 as ``db_rejected``, applies the valid one, commits, and never exits."""
    tenant, request = unique("tenant"), unique("hot")
    await seed_rows(database.url, [request], tenant)
    refused = [
        with_raw_payload(snapshot(request, tenant, at(100 + n), note="N"), "N", f'"v{n} \\u0000"')
        for n in range(1200)
    ]
    valid = snapshot(request, tenant, at(0))
    await produce(
        settings.kafka_bootstrap_servers,
        [(settings.topic_snapshots, e.key, e.value) for e in [*refused, valid]],
    )
    consumer = start_consumer(settings, tmp_path)
    try:
        await consumer.wait_ready()
        await until(lambda: caught_up(consumer, settings), bool, within=120, what="caught up")
        assert await readyz(consumer) == 200
        assert await consumer.terminate() == 0
    finally:
        consumer.cleanup()
    letters = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)
    assert len(letters) == 1200
    assert {headers_of(r)["dlq.reason"] for r in letters} == {"db_rejected"}
    rows = await database.fetch(
        'SELECT "routingSnapshotEventId"::text AS e FROM "ExecutionRecord" WHERE "requestId" = $1',
        request,
    )
    assert [r["e"] for r in rows] == [str(valid.event_id)]

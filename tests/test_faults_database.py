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

from consumer.settings import Settings
from tests.conftest import Database, unique
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

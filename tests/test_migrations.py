"""Migrations on a real PostgreSQL: empty databases, Prisma-owned tables with 1M rows, lock
contention, the CLI (idempotent ``migrate``, ``--sql``), and metadata == migrations."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from consumer.ops.migrate import APPLICATION_NAME, downgrade, upgrade
from consumer.settings import Settings
from consumer.tables import (
    ADDED_COLUMN_COMMENT_PREFIX,
    BASELINE_TABLE_COMMENT,
    HELD_SCHEMA,
    HELD_TABLE_COMMENT,
)
from tests.conftest import Database
from tests.migration_helpers import (
    SERVICE_COLUMNS,
    columns,
    create_prisma_tables,
    fetchval,
    in_thread,
    schema_diff,
    version,
)

HEAD = "0004_held_fields"
CLI = Path(sys.executable).parent / "routing-persistence"


async def _run_cli(
    *args: str, url: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "ROUTING_DATABASE_URL": url, "ROUTING_LOG_FORMAT": "json", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _relfilenodes(url: str) -> dict[str, int]:
    """Physical file of each table: a rewrite (ADD COLUMN with a volatile default...) changes it."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT relname, relfilenode FROM pg_class "
            "WHERE relname IN ('ExecutionRecord', 'Tenant')"
        )
    finally:
        await conn.close()
    return {r["relname"]: r["relfilenode"] for r in rows}


def test_the_ownership_marker_is_the_one_shipped_revisions_wrote() -> None:
    # 0002 and 0003 commented every column they added with this prefix, and their downgrades
    # find what is theirs by it: a new value would orphan the columns already added.
    assert ADDED_COLUMN_COMMENT_PREFIX == "Added by routing-persistence"


async def test_upgrade_downgrade_upgrade_on_an_empty_database(empty_database: Database) -> None:
    url = empty_database.url
    settings = Settings(database_url=url)

    await in_thread(upgrade, settings)
    assert await version(url) == HEAD
    er, tenant = await columns(url, "ExecutionRecord"), await columns(url, "Tenant")
    assert er["id"][:2] == ("text", False)
    assert er["requestId"][:2] == ("text", False)
    assert er["tenantId"][:2] == ("text", True)
    assert er["createdAt"][:3] == ("timestamp with time zone", False, "now()")
    assert er["createdAt"][3] is None
    assert tenant["name"][:2] == ("text", True)
    for table, cols in (("ExecutionRecord", er), ("Tenant", tenant)):
        for name, sql_type in SERVICE_COLUMNS[table].items():
            type_, nullable, default, comment = cols[name]
            assert (type_, nullable, default) == (sql_type, True, None), (table, name)
            assert comment is not None
            assert comment.startswith(ADDED_COLUMN_COMMENT_PREFIX)
    comment = await fetchval(url, """SELECT obj_description('"Tenant"'::regclass, 'pg_class')""")
    assert comment == BASELINE_TABLE_COMMENT
    assert await schema_diff(url) == []

    await in_thread(downgrade, settings)
    assert await version(url) is None
    assert await fetchval(url, """SELECT to_regclass('"ExecutionRecord"')""") is None
    assert await fetchval(url, """SELECT to_regclass('"Tenant"')""") is None
    # The comparison sees a difference when there is one (this test can fail).
    assert {d[0] for d in await schema_diff(url)} == {"add_table", "add_index"}

    await in_thread(upgrade, settings)
    assert await version(url) == HEAD
    assert await schema_diff(url) == []


async def test_migrate_twice_the_second_run_is_a_no_op(
    empty_database: Database, tmp_path: Path
) -> None:
    """Through the real console script, from an unrelated working directory."""
    url = empty_database.url
    # An event trigger records every DDL command this database runs from now on.
    await empty_database.execute(
        """
        CREATE TABLE ddl_log (tag text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
        CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
            $$ BEGIN INSERT INTO ddl_log (tag) VALUES (tg_tag); END $$;
        CREATE EVENT TRIGGER log_ddl ON ddl_command_start EXECUTE FUNCTION log_ddl();
        """
    )
    code, _, err = await _run_cli("migrate", url=url, cwd=tmp_path)
    assert code == 0, err
    first = await empty_database.fetch("SELECT tag FROM ddl_log")
    assert {r["tag"] for r in first} >= {"CREATE TABLE", "ALTER TABLE", "COMMENT"}
    row_version = await empty_database.fetch(
        "SELECT version_num, xmin::text AS xmin FROM routing_persistence_version"
    )

    code, _, err = await _run_cli("migrate", url=url, cwd=tmp_path)
    assert code == 0, err
    assert [
        dict(r)
        for r in await empty_database.fetch(
            "SELECT version_num, xmin::text AS xmin FROM routing_persistence_version"
        )
    ] == [dict(r) for r in row_version]
    assert [r["tag"] for r in await empty_database.fetch("SELECT tag FROM ddl_log")] == [
        r["tag"] for r in first
    ], "the second migrate ran DDL"
    done = [json.loads(line) for line in err.splitlines() if '"migrate.done"' in line]
    assert done
    assert done[-1]["from_revision"] == done[-1]["to_revision"] == HEAD


async def test_migrate_sql_prints_a_script_that_builds_the_same_schema(
    empty_database: Database, tmp_path: Path
) -> None:
    """``--sql`` connects to nothing (the URL is unreachable) and its output is the migration."""
    code, script, err = await _run_cli(
        "migrate", "--sql", url="postgresql://nobody:secret@127.0.0.1:1/none", cwd=tmp_path
    )
    assert code == 0, err
    assert "secret" not in script + err
    assert script.count("SET LOCAL lock_timeout = '2000ms'") == 4
    # A DBA runs it as is (psql would do the same: BEGIN/COMMIT per revision).
    await empty_database.execute(script)
    assert await version(empty_database.url) == HEAD
    assert await schema_diff(empty_database.url) == []

    code, tail, err = await _run_cli(
        "migrate",
        "--sql",
        "--from-revision",
        "0002_execution_record_columns",
        url="postgresql://nobody@127.0.0.1:1/none",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert '"Tenant"' in tail
    assert "0001_baseline" not in tail


async def test_a_pre_existing_column_of_another_type_fails_loudly(empty_database: Database) -> None:
    url = empty_database.url
    await empty_database.execute(
        """
        CREATE TABLE "ExecutionRecord" ("id" text PRIMARY KEY, "requestId" text UNIQUE NOT NULL,
                                        "tenantId" text, "routingSnapshot" text);
        CREATE TABLE "Tenant" ("id" text PRIMARY KEY, "name" text);
        """
    )
    with pytest.raises(DBAPIError, match=r"routingSnapshot exists with type text, expected jsonb"):
        await in_thread(upgrade, Settings(database_url=url))
    # The baseline (a no-op here) committed; the failed revision left nothing behind.
    assert await version(url) == "0001_baseline"
    assert "actualCost" not in await columns(url, "ExecutionRecord")


def _spans(samples: list[tuple[int, float]]) -> dict[int, float]:
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for pid, at in samples:
        first.setdefault(pid, at)
        last[pid] = at
    return {pid: last[pid] - first[pid] for pid in first}


@pytest.mark.slow
async def test_prisma_tables_with_a_million_rows(empty_database: Database) -> None:
    """Catalog-only changes on 1M-row tables; downgrade keeps what Prisma made; under a
    conflicting lock the migration waits at most lock_timeout per attempt and readers pass."""
    url = empty_database.url
    rows = 1_000_000
    started = time.monotonic()
    await create_prisma_tables(url, rows)
    setup_s = time.monotonic() - started
    files = await _relfilenodes(url)
    before_er = await columns(url, "ExecutionRecord")
    prisma_snapshots = await fetchval(
        url, """SELECT count(*) FROM "ExecutionRecord" WHERE "routingSnapshot" IS NOT NULL"""
    )
    assert prisma_snapshots == 10
    settings = Settings(database_url=url)

    started = time.monotonic()
    await in_thread(upgrade, settings)
    upgrade_s = time.monotonic() - started
    assert await version(url) == HEAD
    er, tenant = await columns(url, "ExecutionRecord"), await columns(url, "Tenant")
    for table, cols in (("ExecutionRecord", er), ("Tenant", tenant)):
        for name, sql_type in SERVICE_COLUMNS[table].items():
            assert cols[name][:3] == (sql_type, True, None), (table, name)
    # Prisma's own columns are untouched, and its two JSON columns are not claimed as ours.
    for name, spec in before_er.items():
        assert er[name] == spec, name
    assert await _relfilenodes(url) == files, "a table was rewritten"
    assert await fetchval(url, 'SELECT count(*) FROM "ExecutionRecord"') == rows
    assert await fetchval(url, 'SELECT count(*) FROM "Tenant"') == rows
    assert await fetchval(url, """SELECT obj_description('"Tenant"'::regclass)""") is None

    started = time.monotonic()
    await in_thread(downgrade, settings)
    downgrade_s = time.monotonic() - started
    # Exactly what the upgrade added is gone: Prisma's tables, columns and data stay.
    assert await columns(url, "ExecutionRecord") == before_er
    assert set(await columns(url, "Tenant")) == {"id", "name", "plan", "createdAt"}
    assert (
        await fetchval(
            url, """SELECT count(*) FROM "ExecutionRecord" WHERE "routingSnapshot" IS NOT NULL"""
        )
        == prisma_snapshots
    )
    assert await _relfilenodes(url) == files

    # --- upgrade again while another session holds ACCESS SHARE on "ExecutionRecord" ----------
    # (an open transaction that read the table: the lock every SELECT takes; it conflicts only
    # with ACCESS EXCLUSIVE, so other readers pass it, but an ALTER TABLE must wait for it).
    lock_timeout_ms, hold_s = 400, 3.0
    settings = Settings(database_url=url, migrate_lock_timeout_ms=lock_timeout_ms)
    holder = await asyncpg.connect(url)
    reader = await asyncpg.connect(url)
    monitor = await asyncpg.connect(url)
    waits: list[tuple[int, float]] = []
    held: list[tuple[int, float]] = []
    latencies: list[float] = []
    done = asyncio.Event()

    async def read_continuously() -> None:
        n = 0
        while not done.is_set():
            n += 1
            t0 = time.monotonic()
            got = await reader.fetchval(
                'SELECT "requestId" FROM "ExecutionRecord" WHERE "id" = $1', f"er-{n % rows + 1}"
            )
            latencies.append(time.monotonic() - t0)
            assert got == f"req-{n % rows + 1}"
            await asyncio.sleep(0.02)

    async def watch_locks() -> None:
        while not done.is_set():
            for r in await monitor.fetch(
                """
                SELECT l.pid, l.granted FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE a.application_name = $1 AND l.mode = 'AccessExclusiveLock'
                  AND l.relation = '"ExecutionRecord"'::regclass
                """,
                APPLICATION_NAME,
            ):
                (held if r["granted"] else waits).append((r["pid"], time.monotonic()))
            await asyncio.sleep(0.01)

    try:
        await holder.execute('BEGIN; LOCK TABLE "ExecutionRecord" IN ACCESS SHARE MODE')
        tasks = [asyncio.create_task(read_continuously()), asyncio.create_task(watch_locks())]
        started = time.monotonic()
        migration = asyncio.create_task(in_thread(upgrade, settings))
        await asyncio.sleep(hold_s)
        assert not migration.done(), "the migration cannot finish while the lock is held"
        await holder.execute("COMMIT")
        released = time.monotonic()
        await asyncio.wait_for(migration, timeout=60)
        contended_s, after_release_s = time.monotonic() - started, time.monotonic() - released
        await asyncio.sleep(0.1)
        done.set()
        await asyncio.gather(*tasks)
    finally:
        done.set()
        for conn in (holder, reader, monitor):
            await conn.close()

    assert await version(url) == HEAD
    assert await _relfilenodes(url) == files
    wait_spans = _spans(waits)
    # Each attempt is its own session (pid): it gave up after lock_timeout, then a new one tried.
    assert len(wait_spans) >= 2, wait_spans
    assert max(wait_spans.values()) < lock_timeout_ms / 1000 + 0.3, wait_spans
    # A reader queued behind a waiting ALTER for at most about lock_timeout, never for the
    # seconds the conflicting transaction lasted.
    assert max(latencies) < hold_s / 2, max(latencies)

    print(
        f"\n1M-row tables: setup {setup_s:.2f}s, upgrade {upgrade_s:.3f}s, "
        f"downgrade {downgrade_s:.3f}s; under a {hold_s}s conflicting lock with lock_timeout "
        f"{lock_timeout_ms}ms: {len(wait_spans)} attempts waited "
        f"(longest observed wait {max(wait_spans.values()):.3f}s), migration done "
        f"{after_release_s:.3f}s after release ({contended_s:.2f}s total); "
        f"ACCESS EXCLUSIVE seen granted in {len(held)} samples ({len(_spans(held))} sessions); "
        f"reader: {len(latencies)} reads, median {statistics.median(latencies) * 1000:.1f}ms, "
        f"max {max(latencies) * 1000:.0f}ms, "
        f"{sum(1 for x in latencies if x > 0.05)} over 50ms"
    )


async def test_migrate_gives_up_cleanly_when_the_lock_never_comes(
    empty_database: Database, tmp_path: Path
) -> None:
    """After migrate_max_attempts lock timeouts: exit 1, a message saying why, nothing partial."""
    url = empty_database.url
    await create_prisma_tables(url, rows=10)
    holder = await asyncpg.connect(url)
    try:
        await holder.execute('BEGIN; LOCK TABLE "ExecutionRecord" IN ACCESS SHARE MODE')
        code, _, err = await _run_cli(
            "migrate",
            "--lock-timeout-ms",
            "200",
            url=url,
            cwd=tmp_path,
            env={"ROUTING_MIGRATE_MAX_ATTEMPTS": "2"},
        )
    finally:
        await holder.close()
    assert code == 1
    assert "could not get a table lock within 200 ms in 2 attempts" in err
    assert err.count('"migrate.lock_timeout"') == 1
    # The baseline (a no-op on Prisma's tables) is recorded; the revision that waited is not.
    assert await version(url) == "0001_baseline"
    assert "routingSnapshotEventId" not in await columns(url, "ExecutionRecord")


async def test_engine_sessions_carry_their_name_timeout_and_planner_cost(
    empty_database: Database,
) -> None:
    from consumer.db import create_engine

    engine = create_engine(
        Settings(database_url=empty_database.url, db_statement_timeout_ms=1234, db_pool_size=2)
    )
    try:
        async with engine.connect() as conn:
            result = await conn.exec_driver_sql(
                "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
                " current_setting('random_page_cost')"
            )
            assert tuple(result.one()) == ("routing-persistence", "1234ms", "1.1")
        assert engine.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_concurrent_migrations_all_succeed(empty_database: Database, tmp_path: Path) -> None:
    """Two pods starting `migrate` at once: they take turns, all exit 0, the schema is right."""
    results = await asyncio.gather(
        *(_run_cli("migrate", url=empty_database.url, cwd=tmp_path) for _ in range(2))
    )
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert await version(empty_database.url) == HEAD
    assert await schema_diff(empty_database.url) == []


def test_the_held_table_revision_froze_the_names_the_code_uses() -> None:
    import importlib

    revision = importlib.import_module("migrations.versions.0004_held_fields")
    assert revision._SCHEMA == HELD_SCHEMA
    assert revision._TABLE_COMMENT == HELD_TABLE_COMMENT


async def test_the_held_table_downgrade_refuses_to_drop_held_fields(
    empty_database: Database,
) -> None:
    url = empty_database.url
    settings = Settings(database_url=url)
    await in_thread(upgrade, settings)
    await empty_database.execute(
        "INSERT INTO routing_persistence.held_field (request_id, field, event_id, occurred_at, "
        "tenant_id, record_value, source_topic, source_partition, source_offset, "
        "source_timestamp) VALUES ('r', 'actualCost', gen_random_uuid(), now(), 't', 'v', "
        "'topic', 0, 0, 0)"
    )
    with pytest.raises(DBAPIError, match=r"1 fields are held in routing_persistence\.held_field"):
        await in_thread(downgrade, settings)
    assert await version(url) == HEAD
    await empty_database.execute("DELETE FROM routing_persistence.held_field")
    await in_thread(downgrade, settings)
    assert await fetchval(url, "SELECT to_regnamespace('routing_persistence')") is None

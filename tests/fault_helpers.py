"""Helpers of the fault tests (tests/test_faults_*.py): ``routing-persistence run`` as a real
process, what an operator checks on it (``/readyz``, ``/metrics``, its log lines), rows in
PostgreSQL, and polling for a condition instead of sleeping.

Everything here reads the service from the outside (HTTP, the log file, the database, the
broker), so a test written with it runs unchanged against any build of the CLI.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from consumer.settings import Settings
from schemas import OutgoingEvent
from tests.apply_helpers import at, snapshot
from tests.conftest import PrivateStack, free_port
from tests.ops_helpers import committed_offsets, end_offsets
from tests.service_helpers import ConsumerProcess, http_get, metric_sum, parse_metrics

T = TypeVar("T")


async def until(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    *,
    within: float,
    what: str,
    every: float = 0.2,
) -> T:
    """Poll ``probe()`` until ``ok`` of its value; returns that value. Fails after ``within`` s
    with the last value seen."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {what} (last: {value!r})"
        await asyncio.sleep(every)


async def status(port: int, path: str = "/readyz") -> int:
    """The HTTP status of ``path`` (0 when nothing answers)."""
    try:
        return (await http_get(port, path))[0]
    except OSError:
        return 0


async def readyz(consumer: ConsumerProcess) -> int:
    """The status of the process's ``/readyz``; fails with its log's tail if it has exited."""
    code = consumer.proc.poll()
    assert code is None, f"the consumer exited {code}:\n{consumer.tail()}"
    return await status(consumer.metrics_port)


async def caught_up(consumer: ConsumerProcess, settings: Settings) -> bool:
    """Whether the group committed every source partition's end offset (the process must run)."""
    await readyz(consumer)
    bootstrap = settings.kafka_bootstrap_servers
    ends = await end_offsets(bootstrap, settings.source_topics)
    committed = await committed_offsets(bootstrap, settings.group_id)
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


async def metric(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` (with ``labels``) in the service's ``/metrics``."""
    got, body = await http_get(port, "/metrics")
    assert got == 200, body
    return metric_sum(parse_metrics(body), name, **labels)


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a process (other lines, such as stdlib warnings, are skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def logged(path: Path, event: str) -> list[dict[str, Any]]:
    """The log lines of ``event`` (e.g. ``retry.scheduled``)."""
    return [e for e in log_events(path) if e.get("event") == event]


async def until_logged(
    path: Path,
    event: str,
    ok: Callable[[list[dict[str, Any]]], bool] = bool,
    *,
    within: float,
    what: str,
) -> list[dict[str, Any]]:
    """:func:`until` ``ok`` of the log lines of ``event`` (by default: until there is one)."""

    async def lines() -> list[dict[str, Any]]:
        return logged(path, event)

    return await until(lines, ok, within=within, what=what)


def start_consumer(
    settings: Settings, workdir: Path, name: str = "run", **env: Any
) -> ConsumerProcess:
    """``routing-persistence run`` for ``settings``, its HTTP endpoint on a free port."""
    return ConsumerProcess(settings, workdir / f"{name}.log", metrics_port=free_port(), **env)


async def scram_postgres(stack: PrivateStack, role: str) -> str:
    """Start ``stack``'s PostgreSQL with ``role`` made to log in by scram-sha-256 password over
    TCP (the stack's own superuser keeps trust); returns the role's right password."""
    await asyncio.to_thread(stack.up, "postgres")
    password = "right-" + secrets.token_hex(8)
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        hba = stack.directory / "postgres" / "data" / "pg_hba.conf"
        rules = "".join(
            f"host all {role} {net} scram-sha-256\n" for net in ("127.0.0.1/32", "::1/128")
        )
        hba.write_text(rules + hba.read_text())
        assert await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    return password


async def seed_rows(database_url: str, requests: Iterable[str], tenant: str) -> None:
    """The ``"Tenant"`` and ``"ExecutionRecord"`` rows Projects C and A would have created."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            'INSERT INTO "Tenant" ("id", "name") VALUES ($1, $1) ON CONFLICT DO NOTHING', tenant
        )
        await conn.executemany(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2)',
            [(r, tenant) for r in requests],
        )
    finally:
        await conn.close()


def snapshots(prefix: str, count: int, tenant: str, *, start: float = 0) -> list[OutgoingEvent]:
    """One snapshot event for each of ``prefix-0`` .. ``prefix-(count-1)``."""
    return [snapshot(f"{prefix}-{i}", tenant, at(start + i)) for i in range(count)]


async def snapshots_stored(database_url: str, prefix: str) -> int:
    """How many ``"ExecutionRecord"`` rows of ``prefix-*`` hold a snapshot."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                'SELECT count(*) FROM "ExecutionRecord" WHERE "requestId" LIKE $1 '
                'AND "routingSnapshot" IS NOT NULL',
                f"{prefix}-%",
            )
        )
    finally:
        await conn.close()

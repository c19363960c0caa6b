"""Start-up against a database that refuses or is not there (docs/contract.md §3): a wrong
password (28P01, a real scram-sha-256 server) or a database that does not exist (3D000) stops
``routing-persistence run`` with exit 2 and one line naming the problem, never the password; an
unreachable database is reported at once (``database.unavailable``, ``/readyz`` 503), and the
process keeps trying until it is there."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from consumer.ops.migrate import upgrade
from consumer.settings import Settings
from tests.conftest import Database, PrivateStack, unique
from tests.fault_helpers import (
    log_events,
    logged,
    readyz,
    scram_postgres,
    seed_rows,
    snapshots,
    snapshots_stored,
    start_consumer,
    until,
    until_logged,
)
from tests.security_helpers import publish
from tests.service_helpers import ConsumerProcess

pytestmark = [pytest.mark.integration]

#: A refused start must be over well inside this.
FAIL_FAST_S = 20.0
SCRAM_ROLE = "routing_scram"


async def _exit_code(consumer: ConsumerProcess, within: float) -> tuple[int, float]:
    started = time.monotonic()
    while (code := consumer.proc.poll()) is None:
        assert time.monotonic() - started < within, f"still running:\n{consumer.tail()}"
        await asyncio.sleep(0.1)
    return code, time.monotonic() - started


def _one_fatal_line(consumer: ConsumerProcess) -> str:
    """The process's fatal line: there is exactly one, and it is a configuration error."""
    fatal = logged(consumer.log_path, "consumer.fatal")
    assert len(fatal) == 1, consumer.tail()
    assert fatal[0]["kind"] == "configuration", fatal[0]
    assert "\n" not in fatal[0]["error"]
    return str(fatal[0]["error"])


async def _exits_2_at_once(
    settings: Settings, url: str, tmp_path: Path
) -> tuple[ConsumerProcess, str]:
    """A consumer of database ``url`` exited 2 within FAIL_FAST_S: it and its fatal line."""
    consumer = start_consumer(
        settings.model_copy(update={"database_url": SecretStr(url)}), tmp_path
    )
    try:
        code, took = await _exit_code(consumer, FAIL_FAST_S)
    finally:
        consumer.cleanup()
    assert code == 2, consumer.tail()
    assert took < FAIL_FAST_S
    return consumer, _one_fatal_line(consumer)


@pytest.fixture
async def scram_stack(private_stack: PrivateStack) -> tuple[PrivateStack, str]:
    """A private PostgreSQL where SCRAM_ROLE must log in with its scram-sha-256 password."""
    return private_stack, await scram_postgres(private_stack, SCRAM_ROLE)


@pytest.mark.parametrize("form", ["userinfo", "query"])
async def test_a_wrong_database_password_exits_2_at_once_without_showing_it(
    settings: Settings, scram_stack: tuple[PrivateStack, str], tmp_path: Path, form: str
) -> None:
    stack, right = scram_stack
    wrong = "wrong-" + secrets.token_hex(8)
    where = f"127.0.0.1:{stack.pg_port}/routing"
    url = (
        f"postgresql://{SCRAM_ROLE}:{wrong}@{where}"
        if form == "userinfo"
        else f"postgresql://{SCRAM_ROLE}@{where}?password={wrong}"
    )
    # The server does refuse it (not a test that passes on a server that lets anyone in).
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url)
    consumer, line = await _exits_2_at_once(settings, url, tmp_path)
    assert "28P01" in line
    assert "password authentication failed" in line
    output = consumer.log_path.read_text()
    assert wrong not in output
    assert right not in output


async def test_a_database_that_does_not_exist_exits_2_at_once(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    missing = unique("nodb").replace("-", "_")
    url = database.url.rsplit("/", 1)[0] + f"/{missing}"
    _, line = await _exits_2_at_once(settings, url, tmp_path)
    assert "3D000" in line
    assert missing in line


@pytest.mark.slow
async def test_an_unreachable_database_is_reported_at_once_and_waited_for(
    settings: Settings, private_stack: PrivateStack, tmp_path: Path
) -> None:
    """Nothing listens on the database's port yet: not ready and saying why from the start,
    before any record arrives; alive, trying; ready and writing once PostgreSQL is there."""
    settings = settings.model_copy(update={"database_url": SecretStr(private_stack.database_url)})
    consumer = start_consumer(settings, tmp_path)
    try:
        await until_logged(
            consumer.log_path,
            "database.unavailable",
            within=30,
            what="database.unavailable logged",
        )
        # Reported before anything else happened: no record was ever published.
        events = [e["event"] for e in log_events(consumer.log_path)]
        assert events.index("database.unavailable") < events.index("consumer.started"), events
        await until(lambda: readyz(consumer), lambda s: s == 503, within=10, what="/readyz 503")
        # It keeps trying: still up and not ready several database probes later.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert await readyz(consumer) == 503
            await asyncio.sleep(0.2)

        await asyncio.to_thread(private_stack.up, "postgres")
        await asyncio.to_thread(upgrade, settings)
        await until(lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200")
        prefix, tenant = unique("late"), unique("tenant")
        await seed_rows(private_stack.database_url, [f"{prefix}-{i}" for i in range(5)], tenant)
        await publish(settings, snapshots(prefix, 5, tenant))
        await until(
            lambda: snapshots_stored(private_stack.database_url, prefix),
            lambda n: n == 5,
            within=60,
            what="rows written",
        )
        assert await consumer.terminate() == 0
    finally:
        consumer.cleanup()
    assert logged(consumer.log_path, "database.available")
    assert not logged(consumer.log_path, "consumer.fatal")


@pytest.mark.slow
async def test_a_database_refusing_later_is_reported_and_probed_again(
    settings: Settings, database: Database, migrated_template: str, tmp_path: Path
) -> None:
    """Once running, a refusal (here: the database dropped, then restored) makes the instance
    not ready with the reason in the log, and the probe goes on until it is back."""
    consumer = start_consumer(settings, tmp_path)
    admin = await asyncpg.connect(database.admin_url)
    try:
        await consumer.wait_ready()
        await admin.execute(f'DROP DATABASE "{database.name}" WITH (FORCE)')
        await until(lambda: readyz(consumer), lambda s: s == 503, within=30, what="/readyz 503")
        # The probe, and the held-field timer (every held_release_interval_s), each meet the
        # refusal: each says so and tries again, and the process stays up (readyz fails if it
        # has exited).
        for event in ("database.unavailable", "held.release_failed"):
            await until_logged(
                consumer.log_path,
                event,
                lambda lines: any("3D000" in str(line.get("error")) for line in lines),
                within=30,
                what=f"{event} with 3D000",
            )
        assert await readyz(consumer) == 503
        await admin.execute(f'CREATE DATABASE "{database.name}" TEMPLATE "{migrated_template}"')
        await until(lambda: readyz(consumer), lambda s: s == 200, within=30, what="/readyz 200")
        await until_logged(
            consumer.log_path,
            "held.release_resumed",
            within=30,
            what="held.release_resumed",
        )
        assert await consumer.terminate() == 0
    finally:
        await admin.close()
        consumer.cleanup()

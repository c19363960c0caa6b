"""Security against REAL secured services: Kafka SASL_SSL (SCRAM-SHA-512) and SSL, PostgreSQL
over TLS with scram-sha-256 as the least-privilege role of ``deploy/sql/grants.sql``.

Each test runs ``routing-persistence run`` as a subprocess configured only by ``ROUTING_*``
variables, as an operator would, and checks what they would: rows in PostgreSQL, the group's
committed offsets, the exit code, and that no password ever shows in the output.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from consumer.ops.migrate import upgrade
from consumer.settings import Settings
from schemas import OutgoingEvent
from tests.apply_helpers import at, cost, snapshot
from tests.conftest import ROOT, Database, PrivateStack, Topics, unique
from tests.security_helpers import (
    SECURE_STACK,
    SecureKafka,
    create_topics_with,
    group_state,
    publish,
    start_secure_kafka,
    start_service,
)

pytestmark = [pytest.mark.integration]

EVENTS_PER_KIND = 20
#: A wrong credential must stop the process well inside this (the test's "fails fast").
FAIL_FAST_S = 20.0


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[SecureKafka]:
    """One private secured broker for this module (a JVM start costs seconds)."""
    yield from start_secure_kafka()


def _events(prefix: str) -> list[OutgoingEvent]:
    tenant = f"{prefix}-tenant"
    out: list[OutgoingEvent] = []
    for i in range(EVENTS_PER_KIND):
        out.append(snapshot(f"{prefix}-req-{i}", tenant, at(i)))
        out.append(cost(f"{prefix}-req-{i}", tenant, at(i + 1)))
    return out


async def _wait_for_rows(db: Database, prefix: str, want: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        rows = await db.fetch(
            'SELECT count(*) AS n FROM "ExecutionRecord" WHERE "requestId" LIKE $1 '
            'AND "routingSnapshot" IS NOT NULL AND "actualCost" IS NOT NULL',
            f"{prefix}-req-%",
        )
        count = int(rows[0]["n"])
        if count >= want:
            return count
        await asyncio.sleep(0.3)
    return count


async def _wait_for_held(db: Database, want: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        rows = await db.fetch("SELECT count(*) AS n FROM routing_persistence.held_field")
        count = int(rows[0]["n"])
        if count >= want:
            return count
        await asyncio.sleep(0.3)
    return count


async def _run_and_check(settings: Settings, database: Database, workdir: Path) -> str:
    """Publish events through ``settings``' Kafka security, run the service, check the outcome."""
    await create_topics_with(settings, [*settings.source_topics, settings.topic_dlq], 3)
    prefix = unique("sec")
    # Project A's rows (without them the events would wait, held: tests/test_held.py).
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "SELECT $1 || g, $1 || g, $2 FROM generate_series(0, $3 - 1) AS g",
        f"{prefix}-req-",
        f"{prefix}-tenant",
        EVENTS_PER_KIND,
    )
    sent = await publish(settings, _events(prefix))
    service = start_service(settings, workdir)
    try:
        rows = await _wait_for_rows(database, prefix, EVENTS_PER_KIND)
        assert rows == EVENTS_PER_KIND, service.output[-3000:]
        # Offsets are committed after the transaction: wait for the commit to cover everything.
        deadline = time.monotonic() + 30
        while True:
            committed, ends = await group_state(settings)
            if all(committed.get(tp, 0) == end for tp, end in ends.items()):
                break
            assert time.monotonic() < deadline, f"committed {committed} != end {ends}"
            await asyncio.sleep(0.3)
        assert sum(ends.values()) == sent
    finally:
        code = service.stop()
    assert code == 0, service.output[-3000:]
    return service.output


async def test_consumer_works_through_sasl_ssl(
    secure_kafka: SecureKafka, settings: Settings, database: Database, tmp_path: Path
) -> None:
    secured = secure_kafka.sasl_settings(settings)
    output = await _run_and_check(secured, database, tmp_path)
    assert secure_kafka.password not in output
    assert "consumer.started" in output


async def test_consumer_works_through_ssl(
    secure_kafka: SecureKafka, settings: Settings, database: Database, tmp_path: Path
) -> None:
    secured = secure_kafka.ssl_settings(settings)
    await _run_and_check(secured, database, tmp_path)


async def test_wrong_password_fails_fast_without_showing_it(
    secure_kafka: SecureKafka, settings: Settings, tmp_path: Path
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    secured = secure_kafka.sasl_settings(settings, password=wrong)
    service = start_service(secured, tmp_path)
    code, took = await service.wait_exit(FAIL_FAST_S)
    output = service.output
    assert code == 2, output[-3000:]  # configuration error, not a crash
    assert took < FAIL_FAST_S
    assert "SaslAuthenticationFailed" in output
    assert "SCRAM-SHA-512" in output
    assert wrong not in output
    assert secure_kafka.password not in output


async def test_untrusted_broker_certificate_fails_fast(
    secure_kafka: SecureKafka, settings: Settings, tmp_path: Path
) -> None:
    """A CA that did not sign the broker's certificate: refused at once, never retried forever."""
    other_ca = tmp_path / "other-ca"
    secure_kafka.run("certs", str(other_ca))
    secured = secure_kafka.ssl_settings(settings, ca_file=other_ca / "ca.pem")
    service = start_service(secured, tmp_path)
    code, took = await service.wait_exit(FAIL_FAST_S)
    assert code == 2, service.output[-3000:]
    assert took < FAIL_FAST_S
    assert "CERTIFICATE_VERIFY_FAILED" in service.output


# --- PostgreSQL over TLS with scram-sha-256 ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "async_query", "plain_query", "dsn_passed"),
    [
        ("postgresql://u:p@h:5432/d", "", "", False),
        (
            "postgresql://u:p@h:5432/d?sslmode=verify-full&sslrootcert=/ca.pem",
            "ssl=verify-full",
            "sslmode=verify-full&sslrootcert=%2Fca.pem",
            True,
        ),
        ("postgresql+asyncpg://u:p@h:5432/d?ssl=require", "ssl=require", "sslmode=require", False),
    ],
)
def test_database_tls_parameters_reach_both_drivers(
    url: str, async_query: str, plain_query: str, dsn_passed: bool
) -> None:
    """libpq's sslmode/sslrootcert work for SQLAlchemy's asyncpg dialect (which would pass them
    on as unknown keywords) and for plain asyncpg; TLS is never dropped on the way."""
    settings = Settings(database_url=url)
    assert settings.async_database_url.startswith("postgresql+asyncpg://u:p@h:5432/d")
    assert settings.async_database_url.partition("?")[2] == async_query
    assert settings.plain_database_url.startswith("postgresql://u:p@h:5432/d")
    assert settings.plain_database_url.partition("?")[2] == plain_query
    assert ("dsn" in settings.database_connect_args) is dsn_passed
    if dsn_passed:
        assert settings.database_connect_args["dsn"] == settings.plain_database_url


ROLE = "routing_persistence"


async def _prepare_tls_database(private_stack: PrivateStack, certs: Path, password: str) -> None:
    """Migrate the private cluster, create the role of grants.sql, then require TLS + SCRAM."""
    private_stack.up("postgres")
    await asyncio.to_thread(upgrade, Settings(database_url=private_stack.database_url))
    conn = await asyncpg.connect(private_stack.database_url)
    try:
        await conn.execute((ROOT / "deploy" / "sql" / "grants.sql").read_text())
        # A literal is the only form ALTER ROLE takes; the password is a random test value.
        await conn.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    finally:
        await conn.close()
    data = private_stack.directory / "postgres" / "data"
    done = await asyncio.create_subprocess_exec(
        str(SECURE_STACK),
        "pg-tls",
        str(data),
        str(certs),
        ROLE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await done.communicate()
    assert done.returncode == 0, err.decode()


def _role_url(private_stack: PrivateStack, password: str, query: str) -> str:
    return f"postgresql://{ROLE}:{password}@localhost:{private_stack.pg_port}/routing?{query}"


@pytest.mark.slow
async def test_postgres_over_tls_with_scram_as_least_privilege_role(
    private_stack: PrivateStack, settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    password = "pg-" + secrets.token_hex(12)
    certs = tmp_path / "pg-certs"
    await _prepare_tls_database(private_stack, certs, password)
    ca = certs / "ca.pem"

    # The server refuses the role without TLS, and a client refuses a server it cannot verify.
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(_role_url(private_stack, password, "sslmode=disable"))
    other = tmp_path / "other-ca"
    SecureKafka(tmp_path, 0, 0, 0).run("certs", str(other))
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncpg.connect(
            _role_url(private_stack, password, f"sslmode=verify-full&sslrootcert={other}/ca.pem")
        )
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            _role_url(private_stack, "not-" + password, f"sslmode=verify-full&sslrootcert={ca}")
        )

    # The service: verify-full TLS, SCRAM, the least-privilege role; events from the shared Kafka.
    url = _role_url(private_stack, password, f"sslmode=verify-full&sslrootcert={ca}")
    secured = settings.model_copy(update={"database_url": Settings(database_url=url).database_url})
    prefix = unique("pgtls")
    events = _events(prefix)
    await publish(secured, events)
    service = start_service(secured, tmp_path)
    private_db = Database("routing", private_stack.database_url, private_stack.database_url)
    try:
        # Published before Project A's rows exist: held (as the role), then released once the
        # owner creates them.
        held = await _wait_for_held(private_db, 2 * EVENTS_PER_KIND)
        assert held == 2 * EVENTS_PER_KIND, service.output[-3000:]
        await private_db.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
            "SELECT $1 || g, $1 || g, $2 FROM generate_series(0, $3 - 1) AS g",
            f"{prefix}-req-",
            f"{prefix}-tenant",
            EVENTS_PER_KIND,
        )
        rows = await _wait_for_rows(private_db, prefix, EVENTS_PER_KIND)
        assert rows == EVENTS_PER_KIND, service.output[-3000:]
        sessions = await private_db.fetch(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = $1",
            ROLE,
        )
        assert sessions, "the service holds connections as the least-privilege role"
        assert all(s["ssl"] for s in sessions)
    finally:
        code = service.stop()
    assert code == 0, service.output[-3000:]
    assert password not in service.output
    # The role has no rights beyond grants.sql: it cannot create a tenant, nor (park) a row.
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute('INSERT INTO "Tenant" ("id") VALUES ($1)', "sneaky")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                'INSERT INTO "ExecutionRecord" ("id", "requestId") VALUES ($1, $1)', "sneaky"
            )
    finally:
        await conn.close()

"""Fixtures: a real Kafka broker and a real PostgreSQL for every integration test.

Services are found in this order:

1. ``ROUTING_TEST_KAFKA_BOOTSTRAP`` / ``ROUTING_TEST_DATABASE_URL`` when set (any reachable
   services: a CI sidecar, a developer's own cluster);
2. the local stack, ``deploy/local/stack up`` (started here if it is not running);
3. testcontainers, when a Docker engine answers and the local stack cannot start.

Every test gets its own topics (unique names) and its own database, so tests are independent and
their order never matters.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack"


@dataclass(frozen=True)
class Services:
    """Where the real services of this test session are."""

    kafka_bootstrap: str
    database_url: str  # postgresql://... of a maintenance database (superuser)
    source: str  # "env", "local-stack" or "testcontainers"
    stack_script: Path | None = None  # set when the local stack serves (fault tests need it)


def _stack_env() -> dict[str, str]:
    out = subprocess.run([str(STACK), "env"], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The session's Kafka and PostgreSQL (see the module docstring for the order)."""
    kafka = os.environ.get("ROUTING_TEST_KAFKA_BOOTSTRAP")
    db = os.environ.get("ROUTING_TEST_DATABASE_URL")
    if kafka and db:
        yield Services(kafka, db, "env")
        return
    started = subprocess.run([str(STACK), "up"], capture_output=True, text=True, check=False)
    if started.returncode == 0:
        env = _stack_env()
        yield Services(
            env["ROUTING_KAFKA_BOOTSTRAP_SERVERS"],
            env["ROUTING_DATABASE_URL"],
            "local-stack",
            STACK,
        )
        return
    if not _docker_answers():
        pytest.fail(
            "no Kafka/PostgreSQL: set ROUTING_TEST_KAFKA_BOOTSTRAP and ROUTING_TEST_DATABASE_URL, "
            f"or fix the local stack:\n{started.stderr}"
        )
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka_c,
        PostgresContainer("postgres:15", driver=None) as pg_c,
    ):
        yield Services(kafka_c.get_bootstrap_server(), pg_c.get_connection_url(), "testcontainers")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def unique(prefix: str) -> str:
    """A name no other test uses: ``prefix-<12 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Topics:
    """The four topics of one test, created with ``partitions`` partitions each."""

    snapshots: str
    costs: str
    policies: str
    dlq: str
    partitions: int

    @property
    def sources(self) -> tuple[str, str, str]:
        return (self.snapshots, self.costs, self.policies)


async def create_topics(
    bootstrap: str, names: list[str], partitions: int, *, exist_ok: bool = False
) -> None:
    """Create ``names`` (replication 1) and wait until the broker knows them.

    With ``exist_ok``, a topic someone else created meanwhile (a client's metadata request on a
    broker with ``auto.create.topics.enable``) is accepted with whatever partitions it has.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        # A broker that has just started (private_stack) can take well over 10 s on a loaded
        # machine before it elects the new partitions' leaders.
        deadline = time.monotonic() + 60
        while True:
            described = await admin.describe_topics(names)
            if all(
                t["error_code"] == 0
                and t["partitions"]
                and (exist_ok or len(t["partitions"]) == partitions)
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"topics {names} not ready after 60 s: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@pytest.fixture
async def topics(services: Services, request: pytest.FixtureRequest) -> Topics:
    """Fresh, uniquely named topics for this test (``@pytest.mark.partitions(n)``, default 3)."""
    marker = request.node.get_closest_marker("partitions")
    partitions = int(marker.args[0]) if marker else 3
    base = unique("t")
    made = Topics(
        snapshots=f"{base}.snapshots",
        costs=f"{base}.costs",
        policies=f"{base}.policies",
        dlq=f"{base}.dlq",
        partitions=partitions,
    )
    await create_topics(services.kafka_bootstrap, [*made.sources, made.dlq], partitions)
    return made


@dataclass
class Database:
    """One test's own database on the session's PostgreSQL."""

    name: str
    url: str  # postgresql://...
    admin_url: str  # the maintenance database
    _pools: list[asyncpg.Pool] = field(default_factory=list)

    async def connect(self) -> asyncpg.Connection:
        """A raw asyncpg connection (the caller closes it)."""
        return await asyncpg.connect(self.url)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query on a short-lived connection."""
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def execute(self, sql: str, *args: Any) -> str:
        conn = await asyncpg.connect(self.url)
        try:
            return str(await conn.execute(sql, *args))
        finally:
            await conn.close()


_TEMPLATE_LOCK = asyncio.Lock()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def empty_database(services: Services) -> AsyncIterator[Database]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = unique("db").replace("-", "_")
    conn = await asyncpg.connect(services.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield Database(name, _with_database(services.database_url, name), services.database_url)
    await _drop_database(services.database_url, name)


@pytest.fixture(scope="session")
async def migrated_template(services: Services) -> AsyncIterator[str]:
    """A database at the newest migration, made once per session; tests clone it."""
    from consumer.ops.migrate import upgrade

    name = unique("tmpl").replace("-", "_")
    conn = await asyncpg.connect(services.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_database(services.database_url, name)
    # Alembic's env runs its own event loop: keep it off this one.
    await asyncio.to_thread(upgrade, Settings(database_url=url), sql=False)
    yield name
    await _drop_database(services.database_url, name)


@pytest.fixture
async def database(services: Services, migrated_template: str) -> AsyncIterator[Database]:
    """A fresh database at the newest migration for this test, dropped afterwards."""
    name = unique("db").replace("-", "_")
    async with _TEMPLATE_LOCK:  # CREATE DATABASE ... TEMPLATE needs the template idle
        conn = await asyncpg.connect(services.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
        finally:
            await conn.close()
    yield Database(name, _with_database(services.database_url, name), services.database_url)
    await _drop_database(services.database_url, name)


@pytest.fixture
def settings(services: Services, topics: Topics, database: Database) -> Settings:
    """Settings for a consumer of this test's topics and database, in a group of its own."""
    return Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        database_url=database.url,
        group_id=unique("group"),
        topic_snapshots=topics.snapshots,
        topic_costs=topics.costs,
        topic_policies=topics.policies,
        topic_dlq=topics.dlq,
        metrics_port=0,
        batch_timeout_ms=100,
        retry_initial_delay_s=0.05,
        retry_max_delay_s=1.0,
        lag_refresh_interval_s=0.5,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "partitions(n): how many partitions the test's topics get")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateStack:
    """A second instance of ``deploy/local/stack`` that one test owns and may stop at will.

    Fault tests stop and start *this* PostgreSQL or Kafka, never the shared one, so they can run
    beside other tests. It uses the same script (and so the same binaries and configuration) as
    the shared stack, in its own folder with its own ports.
    """

    directory: Path
    pg_port: int
    kafka_port: int
    controller_port: int

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ROUTING_STACK_DIR": str(self.directory),
            "ROUTING_STACK_PG_PORT": str(self.pg_port),
            "ROUTING_STACK_KAFKA_PORT": str(self.kafka_port),
            "ROUTING_STACK_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "ROUTING_STACK_KAFKA_HEAP": "384m",
        }

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [str(STACK), *args], env=self.env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"stack {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def up(self, service: str = "all") -> None:
        """Start ``postgres``, ``kafka`` or ``all`` and wait until they accept connections."""
        self._run("up", service)

    def down(self, service: str = "all") -> None:
        """Stop ``postgres``, ``kafka`` or ``all`` (clean shutdown, like an operator's restart)."""
        self._run("down", service)

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/routing"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"


@pytest.fixture
def private_stack() -> Iterator[PrivateStack]:
    """A private stack (nothing started yet: call ``up('postgres')`` etc.); torn down after."""
    if os.environ.get("ROUTING_TEST_KAFKA_BOOTSTRAP"):
        pytest.fail("fault tests need the native local stack's script (deploy/local/stack)")
    directory = ROOT / ".local" / "tests" / unique("stack")
    directory.mkdir(parents=True)
    stack = PrivateStack(directory, free_port(), free_port(), free_port())
    try:
        yield stack
    finally:
        stack.down()
        shutil.rmtree(directory, ignore_errors=True)

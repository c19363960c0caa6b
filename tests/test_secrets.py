"""Secrets never reach output (docs/contract.md §4): a database password in every form asyncpg
accepts (userinfo, ``?password=``, ``?sslpassword=``) and the SASL password, in every command's
output, its log lines and error messages, and in ``/metrics``; and no SQL parameter (payload
text, tenant and request ids) in a logged database error."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pydantic import SecretStr

from consumer.settings import Settings, redact_url
from tests.apply_helpers import at, snapshot
from tests.conftest import ROOT, Database, PrivateStack, Topics, free_port, unique
from tests.fault_helpers import logged, scram_postgres, seed_rows, snapshots, start_consumer
from tests.ops_helpers import CLI, cli_env
from tests.security_helpers import publish, service_env, start_secure_kafka
from tests.service_helpers import http_get

SECRET = "s3cr3t-Xq9"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgresql://u@h/db?password={SECRET}", "postgresql://u@h/db?password=***"),
        (
            f"postgresql://u@h/db?sslmode=verify-full&sslpassword={SECRET}&sslkey=/k.pem",
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=***&sslkey=/k.pem",
        ),
        (
            f"postgresql+asyncpg://u:{SECRET}@h/db?password={SECRET}&sslpassword={SECRET}",
            "postgresql+asyncpg://u:***@h/db?password=***&sslpassword=***",
        ),
        # Percent-encoded name (asyncpg decodes it), an "@" and a ":" inside the password.
        (f"postgresql://u@h/db?pass%77ord={SECRET}", "postgresql://u@h/db?pass%77ord=***"),
        (f"postgresql://u:a%40b:{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u:a@b{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://:{SECRET}@h1:5432,h2:5433/db", "postgresql://:***@h1:5432,h2:5433/db"),
        (f"postgresql://u@h/db?PASSWORD={SECRET}", "postgresql://u@h/db?PASSWORD=***"),
        (
            f"postgresql://u@h/db?password=&x={SECRET}",
            f"postgresql://u@h/db?password=***&x={SECRET}",
        ),
        ("postgresql://u@h/db?application_name=x", "postgresql://u@h/db?application_name=x"),
        (f"postgresql://u:{SECRET}@[::1/db", "<unparseable URL>"),
    ],
)
def test_redact_url_masks_every_password_form(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql://u@h/db?password={SECRET}",
        f"postgresql://u@h/db?sslpassword={SECRET}&sslkey=/k.pem&sslmode=require",
    ],
)
def test_settings_never_show_the_database_password(url: str) -> None:
    settings = Settings(database_url=url, kafka_sasl_password=SecretStr(SECRET))
    assert SECRET not in settings.redacted_database_url
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in str(settings.model_dump())


# --- every command, every form, a database that refuses or is not there ----------------------

ROLE = "routing_secret"
COMMANDS = {
    "run": ["run"],
    "migrate": ["migrate"],
    "replay": ["replay", "--from-beginning"],
    "lag": ["lag"],
    "dlq redrive": ["dlq", "redrive"],
}
#: A command still retrying (an unreachable database) is stopped once it has logged this
#: (``run``: at start-up; ``replay``: at its first batch), or after STOP_AFTER_S.
STOP_WHEN_LOGGED = {"run": "database.unavailable", "replay": "retry.scheduled"}
STOP_AFTER_S = 60.0


def _database_url(form: str, port: int, password: str) -> str:
    where = f"127.0.0.1:{port}/routing"
    if form == "userinfo":
        return f"postgresql://{ROLE}:{password}@{where}"
    if form == "password":
        return f"postgresql://{ROLE}@{where}?password={password}"
    return f"postgresql://{ROLE}@{where}?sslmode=prefer&sslpassword={password}"


@dataclass
class Outcome:
    code: int
    output: str
    #: /metrics, /healthz and /readyz bodies, read while it ran (``run`` only).
    http: str


async def _run_command(
    args: list[str], env: dict[str, str], workdir: Path, stop_when: str | None
) -> Outcome:
    """Run one command to its end, or stop it (SIGTERM) once it logged ``stop_when`` or after
    STOP_AFTER_S; everything it printed."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    log_path = workdir / "output"
    port = env.get("ROUTING_METRICS_PORT", "0")
    http = ""
    with await asyncio.to_thread(log_path.open, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(CLI), *args, env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + STOP_AFTER_S
        while process.returncode is None and time.monotonic() < deadline:
            if port != "0":
                for path in ("/metrics", "/healthz", "/readyz"):
                    with contextlib.suppress(OSError):
                        http += (await http_get(int(port), path))[1]
            if stop_when and stop_when in await asyncio.to_thread(log_path.read_text):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 1.0)
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 40)
            except TimeoutError:
                process.kill()
                await process.wait()
    code = process.returncode
    assert code is not None
    return Outcome(code, await asyncio.to_thread(log_path.read_text, errors="replace"), http)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["refuses", "unreachable"])
@pytest.mark.parametrize("form", ["userinfo", "password", "sslpassword"])
async def test_no_command_ever_shows_the_database_password(
    settings: Settings,
    topics: Topics,
    private_stack: PrivateStack,
    tmp_path: Path,
    form: str,
    server: str,
) -> None:
    """Each command, with the secret in the URL in one of the forms asyncpg reads, against a
    scram-sha-256 server that refuses it or a port where nothing listens: whatever it prints,
    logs or serves, the secret is not in it."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    if server == "refuses":
        right = await scram_postgres(private_stack, ROLE)
        port = private_stack.pg_port
    else:
        right, port = f"right-{uuid.uuid4().hex}", free_port()
    url = _database_url(form, port, wrong)
    # Records to replay (so replay opens the database) and a tenant row they would need.
    await publish(settings, snapshots(unique("sec"), 3, unique("tenant")))
    # A batch in hand that cannot be written is abandoned 2 s after SIGTERM (exit 1).
    base = cli_env(settings, ROUTING_DATABASE_URL=url, ROUTING_SHUTDOWN_TIMEOUT_S="2")
    runs = {
        name: _run_command(
            args,
            {**base, "ROUTING_METRICS_PORT": str(free_port())} if name == "run" else base,
            tmp_path / name.replace(" ", "-"),
            STOP_WHEN_LOGGED.get(name),
        )
        for name, args in COMMANDS.items()
    }
    outcomes = dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))
    for name, outcome in outcomes.items():
        assert outcome.output.strip(), f"{name} said nothing"
        for secret in (wrong, right):
            assert secret not in outcome.output, f"{name} printed the password:\n{outcome.output}"
            assert secret not in outcome.http, f"{name} served the password"
    if server == "refuses":
        assert outcomes["run"].code == 2, outcomes["run"].output[-2000:]
        assert outcomes["migrate"].code != 0
        assert outcomes["replay"].code != 0
    else:
        assert outcomes["run"].http, "run's HTTP endpoint never answered"
        for name, marker in STOP_WHEN_LOGGED.items():
            assert marker in outcomes[name].output, outcomes[name].output[-2000:]


# --- SQL parameters never reach the log --------------------------------------------------------

GRANTS = ROOT / "deploy" / "sql" / "grants.sql"


async def test_a_database_error_is_logged_by_sqlstate_and_table_never_with_the_batch(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    """A batch PostgreSQL refuses for good (the role lost its INSERT and UPDATE on
    "ExecutionRecord": 42501): the process stops and says which SQLSTATE and table, and the log
    holds neither the statement nor any of its parameters (payload text, tenant and request
    ids)."""
    marker, tenant, prefix = f"MARK-{uuid.uuid4().hex}", unique("tenant-id"), unique("req-id")
    await seed_rows(database.url, [f"{prefix}-{i}" for i in range(3)], tenant)
    owner = await asyncpg.connect(database.url)
    try:
        await owner.execute(GRANTS.read_text())
        await owner.execute('REVOKE INSERT, UPDATE ON "ExecutionRecord" FROM routing_persistence')
    finally:
        await owner.close()
    parts = urlsplit(database.url)
    as_role = urlunsplit(
        parts._replace(netloc=f"routing_persistence@{parts.hostname}:{parts.port}")
    )
    settings = settings.model_copy(update={"database_url": SecretStr(as_role)})
    events = [snapshot(f"{prefix}-{i}", tenant, at(i), note=marker) for i in range(3)]
    await publish(settings, events)
    consumer = start_consumer(settings, tmp_path)
    try:
        started = time.monotonic()
        while consumer.proc.poll() is None:
            assert time.monotonic() - started < 60, consumer.tail()
            await asyncio.sleep(0.2)
    finally:
        consumer.cleanup()
    assert consumer.proc.returncode not in (0, None)
    output = consumer.log_path.read_text()
    fatal = logged(consumer.log_path, "consumer.fatal")
    assert len(fatal) == 1, consumer.tail()
    assert "42501" in str(fatal[0]), fatal
    assert "ExecutionRecord" in str(fatal[0]), fatal
    for parameter in (marker, tenant, prefix):
        assert parameter not in output, f"{parameter} logged:\n{output[-3000:]}"
    for statement in ("INSERT INTO", "unnest(", "[SQL:", "[parameters"):
        assert statement not in output, f"{statement!r} logged:\n{output[-3000:]}"


@pytest.mark.slow
async def test_no_command_ever_shows_the_sasl_password(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    """Every Kafka command with the SASL password wrong (refused by a real SCRAM-SHA-512
    broker) and with it right: neither password is in anything it prints or logs."""
    with contextlib.contextmanager(start_secure_kafka)() as kafka:
        wrong = f"wrong-{uuid.uuid4().hex}"
        for case, password in (("wrong", wrong), ("right", kafka.password)):
            secured = kafka.sasl_settings(settings, password=password)
            env = {**service_env(secured), "ROUTING_METRICS_PORT": "0"}
            runs = {
                name: _run_command(
                    args, env, tmp_path / case / name.replace(" ", "-"), "consumer.started"
                )
                for name, args in COMMANDS.items()
                if name != "migrate"
            }
            outcomes = dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))
            for name, outcome in outcomes.items():
                assert outcome.output.strip(), f"{name} said nothing ({case})"
                for secret in (wrong, kafka.password):
                    assert secret not in outcome.output, f"{name} printed it:\n{outcome.output}"
            if case == "wrong":
                assert outcomes["run"].code == 2, outcomes["run"].output[-2000:]
                assert all(o.code != 0 for o in outcomes.values()), outcomes

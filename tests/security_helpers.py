"""Helpers for the security, scale-out and deployment tests: secured private services, Kafka
clients built from :class:`~consumer.settings.Settings` (so TLS/SASL go the service's own way),
and ``routing-persistence run`` as a real subprocess.

The secured services come from ``deploy/local/secure/secure-stack``: a PRIVATE broker with a
SASL_SSL (SCRAM-SHA-512) and an SSL listener, and TLS + scram-sha-256 on a private PostgreSQL of
``deploy/local/stack``. The CA and certificates are throwaway ones that the script makes with
openssl in the test's own directory; the shared stack is never touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from consumer.kafka import client_options
from consumer.settings import Settings
from schemas import EventType
from tests.conftest import ROOT, free_port, unique

SECURE_STACK = ROOT / "deploy" / "local" / "secure" / "secure-stack"
CLI = ROOT / ".venv" / "bin" / "routing-persistence"
SCRAM_USER = "routing-svc"


@dataclass
class SecureKafka:
    """A private broker: SASL_SSL (SCRAM-SHA-512) on ``sasl_port``, SSL on ``ssl_port``."""

    directory: Path
    sasl_port: int
    ssl_port: int
    controller_port: int
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12), repr=False)
    user: str = SCRAM_USER

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ROUTING_SECURE_SASL_PORT": str(self.sasl_port),
            "ROUTING_SECURE_SSL_PORT": str(self.ssl_port),
            "ROUTING_SECURE_CONTROLLER_PORT": str(self.controller_port),
            "ROUTING_SECURE_SCRAM_USER": self.user,
            "ROUTING_SECURE_SCRAM_PASSWORD": self.password,
        }

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(SECURE_STACK), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"secure-stack {args[0]} failed: {done.stderr}")
        return done.stdout

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def sasl_settings(self, base: Settings, *, password: str | None = None) -> Settings:
        """``base`` pointed at the SASL_SSL listener (``password`` overrides the right one)."""
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": f"127.0.0.1:{self.sasl_port}",
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_sasl_username": self.user,
                "kafka_sasl_password": SecretStr(password or self.password),
                "kafka_ssl_cafile": self.ca_file,
            }
        )

    def ssl_settings(self, base: Settings, *, ca_file: Path | None = None) -> Settings:
        """``base`` pointed at the SSL listener, trusting ``ca_file`` (default: the test CA)."""
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": f"127.0.0.1:{self.ssl_port}",
                "kafka_security_protocol": "SSL",
                "kafka_ssl_cafile": ca_file or self.ca_file,
            }
        )


def start_secure_kafka() -> Iterator[SecureKafka]:
    """Start a private secured broker; yields it and stops it (generator for a fixture)."""
    directory = ROOT / ".local" / "tests" / unique("secure")
    directory.mkdir(parents=True)
    kafka = SecureKafka(directory, free_port(), free_port(), free_port())
    try:
        kafka.run("kafka-up", str(directory))
        yield kafka
    finally:
        kafka.run("kafka-down", str(directory))
        shutil.rmtree(directory, ignore_errors=True)


async def create_topics_with(settings: Settings, names: Sequence[str], partitions: int) -> None:
    """Create ``names`` through the client options of ``settings`` (TLS/SASL as configured)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for _ in range(100):
            described = await admin.describe_topics(list(names))
            if all(t["error_code"] == 0 and len(t["partitions"]) == partitions for t in described):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topics {names} not ready")
    finally:
        await admin.close()


class Publishable(Protocol):
    """A record to publish: :class:`schemas.OutgoingEvent` or the bench workload's Event."""

    @property
    def type(self) -> EventType: ...
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...


def topic_for(settings: Settings, event: Publishable) -> str:
    return {
        "routing.snapshot": settings.topic_snapshots,
        "routing.cost": settings.topic_costs,
        "tenant.policy": settings.topic_policies,
    }[str(event.type)]


async def publish(settings: Settings, events: Iterable[Publishable]) -> int:
    """Publish ``events`` to their topics (acks=all) with ``settings``' client options."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic_for(settings, e), value=e.value, key=e.key) for e in events
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()
    return len(futures)


async def group_state(
    settings: Settings,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(committed offsets of ``settings.group_id``, end offsets) of the three source topics."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.group_id)
        described = await admin.describe_topics(list(settings.source_topics))
    finally:
        await admin.close()
    tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        ends = dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()
    return {tp: m.offset for tp, m in committed.items() if m.offset >= 0}, ends


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``routing-persistence run`` use exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"ROUTING_{name.upper()}"] = str(value)
    env["ROUTING_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


@dataclass
class ServiceProcess:
    """One ``routing-persistence run`` subprocess; output goes to files (never a full pipe)."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _files: list[IO[bytes]]

    @property
    def output(self) -> str:
        """Everything it wrote so far (stdout + stderr)."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL and fail past ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"run did not stop within {timeout_s} s:\n{self.output[-3000:]}"
            ) from None
        finally:
            for f in self._files:
                f.close()

    async def wait_exit(self, timeout_s: float) -> tuple[int, float]:
        """Wait until it exits by itself: (exit code, seconds it took)."""
        started = time.monotonic()
        while self.process.poll() is None:
            if time.monotonic() - started > timeout_s:
                self.stop(5)
                raise AssertionError(f"still running after {timeout_s} s:\n{self.output[-3000:]}")
            await asyncio.sleep(0.1)
        for f in self._files:
            f.close()
        return self.process.returncode, time.monotonic() - started


def start_service(
    settings: Settings, workdir: Path, name: str = "run", **env: str
) -> ServiceProcess:
    """Start ``routing-persistence run`` for ``settings`` as a subprocess."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    out, err = out_path.open("wb"), err_path.open("wb")
    argv = [str(CLI), "run"] if CLI.exists() else [sys.executable, "-m", "consumer.cli", "run"]
    process = subprocess.Popen(
        argv, env=service_env(settings, **env), stdout=out, stderr=err, stdin=subprocess.DEVNULL
    )
    return ServiceProcess(process, out_path, err_path, [out, err])

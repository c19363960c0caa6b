"""Helpers of the service tests: run the consumer (in this process or as a real process), read
what it produced (rows, dead letters, committed offsets, metrics) and compute, independently of
the service's code, what it should have produced from the records a test sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from consumer.demo.sample import SampleRecord
from consumer.service.service import Service
from consumer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "routing-persistence"

_TABLE_FIELDS = {
    "routing.snapshot": ("routingSnapshot", "routingSnapshotEventId"),
    "routing.cost": ("actualCost", "actualCostEventId"),
}


# --- what should be in PostgreSQL ------------------------------------------------------------


@dataclass
class State:
    """Rows as the tests compare them: payloads parsed with exact decimals, event ids as str."""

    #: requestId -> {"tenantId", "routingSnapshot", "routingSnapshotEventId", "actualCost", ...}
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tenant id -> {"routingPolicy", "routingPolicyEventId"}
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)


def _loads(raw: str | bytes) -> Any:
    return json.loads(raw, parse_float=Decimal)


def expected_state(
    records: Iterable[SampleRecord],
    tenants: Iterable[str],
    execution_records: Iterable[tuple[str, str]] = (),
) -> State:
    """The rows the contract demands after ``records`` (any order, any duplication).

    Per row and field, the payload of the valid event with the greatest (occurredAt, eventId);
    only records without a dead-letter reason count; tenants and pre-existing execution rows
    are what the test created before.
    """
    state = State()
    for tenant in tenants:
        state.tenants[tenant] = {"routingPolicy": None, "routingPolicyEventId": None}
    for request_id, tenant in execution_records:
        state.executions[request_id] = _empty_execution(tenant)
    best: dict[tuple[str, str], tuple[tuple[datetime, uuid.UUID], dict[str, Any]]] = {}
    for record in records:
        if record.reason is not None or record.value is None:
            continue
        env = _loads(record.value)
        version = (datetime.fromisoformat(env["occurredAt"]), uuid.UUID(env["eventId"]))
        row = env["tenantId"] if env["type"] == "tenant.policy" else env["requestId"]
        key = (env["type"], row)
        if key not in best or best[key][0] < version:
            best[key] = (version, env)
    for (event_type, row), (_, env) in best.items():
        if event_type == "tenant.policy":
            assert row in state.tenants, f"test bug: valid policy for unknown tenant {row}"
            state.tenants[row] = {
                "routingPolicy": env["payload"],
                "routingPolicyEventId": env["eventId"],
            }
            continue
        execution = state.executions.setdefault(row, _empty_execution(env["tenantId"]))
        column, id_column = _TABLE_FIELDS[event_type]
        execution[column] = env["payload"]
        execution[id_column] = env["eventId"]
    return state


def _empty_execution(tenant: str | None) -> dict[str, Any]:
    return {
        "tenantId": tenant,
        "routingSnapshot": None,
        "routingSnapshotEventId": None,
        "actualCost": None,
        "actualCostEventId": None,
    }


async def actual_state(database_url: str) -> State:
    """The rows in PostgreSQL, in the shape of :func:`expected_state`."""
    conn = await asyncpg.connect(database_url)
    try:
        executions = await conn.fetch(
            'SELECT "requestId", "tenantId", "routingSnapshot"::text AS snap, '
            '"routingSnapshotEventId"::text AS snap_id, "actualCost"::text AS cost, '
            '"actualCostEventId"::text AS cost_id FROM "ExecutionRecord"'
        )
        tenants = await conn.fetch(
            'SELECT "id", "routingPolicy"::text AS policy, '
            '"routingPolicyEventId"::text AS policy_id FROM "Tenant"'
        )
    finally:
        await conn.close()
    state = State()
    for r in executions:
        state.executions[r["requestId"]] = {
            "tenantId": r["tenantId"],
            "routingSnapshot": _loads(r["snap"]) if r["snap"] is not None else None,
            "routingSnapshotEventId": r["snap_id"],
            "actualCost": _loads(r["cost"]) if r["cost"] is not None else None,
            "actualCostEventId": r["cost_id"],
        }
    for r in tenants:
        state.tenants[r["id"]] = {
            "routingPolicy": _loads(r["policy"]) if r["policy"] is not None else None,
            "routingPolicyEventId": r["policy_id"],
        }
    return state


def assert_same_state(actual: State, expected: State) -> None:
    """Compare row by row, reporting the first few differences (not two huge dicts)."""
    problems: list[str] = []
    for name, got, want in (
        ("ExecutionRecord", actual.executions, expected.executions),
        ("Tenant", actual.tenants, expected.tenants),
    ):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        if missing:
            problems.append(f"{name}: {len(missing)} rows missing, e.g. {missing[:3]}")
        if extra:
            problems.append(f"{name}: {len(extra)} unexpected rows, e.g. {extra[:3]}")
        for key in sorted(set(want) & set(got)):
            if got[key] != want[key]:
                fields = [f for f in want[key] if got[key].get(f) != want[key][f]]
                problems.append(f"{name} {key}: differs in {fields}")
    assert not problems, "\n".join(problems[:20])


# --- what is in Kafka ------------------------------------------------------------------------


async def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topics``."""
    wanted = set(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(wanted))
    finally:
        await admin.close()
    tps = [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["topic"] in wanted
        for p in t["partitions"]
    ]
    assert {tp.topic for tp in tps} == wanted, f"topics not found: {wanted}"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The group's committed offsets (partitions without a commit are absent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(settings.group_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def lagging_partitions(settings: Settings) -> dict[TopicPartition, tuple[int, int]]:
    """Partitions of the source topics whose committed offset is below the end offset."""
    ends = await end_offsets(settings, settings.source_topics)
    committed = await committed_offsets(settings)
    return {
        tp: (committed.get(tp, 0), end) for tp, end in ends.items() if committed.get(tp, 0) < end
    }


async def wait_caught_up(settings: Settings, within: float = 60.0) -> None:
    """Wait until the group's committed offsets reach the end of every source partition."""
    deadline = time.monotonic() + within
    while True:
        behind = await lagging_partitions(settings)
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {settings.group_id} still behind: {behind}")
        await asyncio.sleep(0.3)


async def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning to today's end offsets."""
    ends = await end_offsets(settings, [topic])
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        deadline = time.monotonic() + 30
        while True:
            positions = {tp: await consumer.position(tp) for tp in wanted}
            if all(positions[tp] >= end for tp, end in wanted.items()):
                break
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(
                    r for r in records if r.offset < wanted[TopicPartition(r.topic, r.partition)]
                )
    finally:
        await consumer.stop()
    return out


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter as the tests check it."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


async def dead_letters(settings: Settings) -> list[DeadLetterView]:
    """The dead-letter topic's records, with headers decoded."""
    out = []
    for record in await read_topic(settings, settings.topic_dlq):
        headers = {k: v.decode() for k, v in record.headers}
        out.append(
            DeadLetterView(
                reason=headers["dlq.reason"],
                topic=headers["dlq.topic"],
                partition=int(headers["dlq.partition"]),
                offset=int(headers["dlq.offset"]),
                key=record.key,
                value=record.value,
                headers=headers,
            )
        )
    return out


def assert_dead_letters_match(
    letters: list[DeadLetterView], published: Iterable[SampleRecord], *, exact_once: bool = True
) -> None:
    """The dead letters are exactly the published bad records, with the right reason codes.

    Records are matched by (key, value) bytes; with ``exact_once`` each source record (topic,
    partition, offset) is dead-lettered once, else at least once (a crash between the dead
    letter and the offset commit legitimately writes it again).
    """
    want: dict[tuple[bytes | None, bytes | None], list[str]] = {}
    for record in published:
        if record.reason is not None:
            want.setdefault((record.key, record.value), []).append(str(record.reason))
    sources: dict[tuple[str, int, int], list[DeadLetterView]] = {}
    for letter in letters:
        sources.setdefault((letter.topic, letter.partition, letter.offset), []).append(letter)
    if exact_once:
        repeated = {k: len(v) for k, v in sources.items() if len(v) > 1}
        assert not repeated, f"dead-lettered more than once: {repeated}"
    got: dict[tuple[bytes | None, bytes | None], list[str]] = {}
    for copies in sources.values():
        first = copies[0]
        assert all(c.reason == first.reason for c in copies)
        for header in ("dlq.error", "dlq.timestamp", "dlq.group"):
            assert first.headers.get(header), f"missing {header}"
        got.setdefault((first.key, first.value), []).append(first.reason)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}


# --- running the consumer --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, *, ready_timeout: float = 30.0
) -> AsyncIterator[Service]:
    """The service in this process with its HTTP endpoint on a free port; stopped gracefully
    (exit code 0 asserted) at the end of the block."""
    service = Service(settings, metrics_port=0)
    task = asyncio.create_task(service.run())
    try:
        deadline = time.monotonic() + ready_timeout
        while not service.health.is_ready():
            if task.done():
                raise AssertionError(f"service exited early with {task.result()}")
            assert time.monotonic() < deadline, f"not ready: {service.health.describe()}"
            await asyncio.sleep(0.05)
        yield service
    finally:
        service.request_stop()
        code = await asyncio.wait_for(task, 60)
    assert code == 0


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The ``ROUTING_*`` environment that makes ``routing-persistence`` use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
    values = {**settings.model_dump(), **overrides}
    for name, value in values.items():
        if value is None:
            continue
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        env[f"ROUTING_{name.upper()}"] = str(plain)
    env["ROUTING_LOG_FORMAT"] = "json"
    return env


class ConsumerProcess:
    """``routing-persistence run`` as a real child process, its log in ``log_path``."""

    def __init__(
        self, settings: Settings, log_path: Path, *, metrics_port: int, **env: Any
    ) -> None:
        self.metrics_port = metrics_port
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(CLI), "run"],
            env=settings_env(settings, metrics_port=metrics_port, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, within: float = 40.0) -> None:
        """Poll ``/readyz`` until 200; fails with the log's tail if the process dies first."""
        deadline = time.monotonic() + within
        while True:
            assert self.proc.poll() is None, (
                f"consumer exited {self.proc.returncode}:\n{self.tail()}"
            )
            with contextlib.suppress(OSError):
                status, _ = await http_get(self.metrics_port, "/readyz")
                if status == 200:
                    return
            assert time.monotonic() < deadline, f"consumer not ready:\n{self.tail()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    async def terminate(self, within: float = 60.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"no exit after SIGTERM:\n{self.tail()}"
            await asyncio.sleep(0.05)
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A minimal HTTP/1.1 GET to 127.0.0.1:port (status, body); raises OSError if refused."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text exposition, keyed by (name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric_sum(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)

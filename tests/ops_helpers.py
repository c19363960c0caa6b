"""Helpers for the operator-command tests (lag, replay, dlq redrive): run the real CLI, produce
records, read offsets and topics independently of the code under test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "routing-persistence"


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points the CLI at ``settings``' broker, database, group and topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
    env.update(
        ROUTING_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        ROUTING_DATABASE_URL=settings.database_url.get_secret_value(),
        ROUTING_GROUP_ID=settings.group_id,
        ROUTING_TOPIC_SNAPSHOTS=settings.topic_snapshots,
        ROUTING_TOPIC_COSTS=settings.topic_costs,
        ROUTING_TOPIC_POLICIES=settings.topic_policies,
        ROUTING_TOPIC_DLQ=settings.topic_dlq,
        ROUTING_METRICS_PORT="0",
        ROUTING_LOG_FORMAT="json",
        ROUTING_BATCH_TIMEOUT_MS=str(settings.batch_timeout_ms),
        ROUTING_RETRY_INITIAL_DELAY_S=str(settings.retry_initial_delay_s),
        ROUTING_RETRY_MAX_DELAY_S=str(settings.retry_max_delay_s),
        COLUMNS="200",
    )
    env.update(extra)
    return env


@dataclass
class CliResult:
    """What the operator sees: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_cli(
    settings: Settings, *args: str, time_limit_s: float = 120.0, **env: str
) -> CliResult:
    """Run ``routing-persistence ARGS`` as a subprocess (stdout is a pipe, not a terminal)."""
    executable = str(CLI) if CLI.exists() else sys.executable
    prefix = [] if CLI.exists() else ["-m", "consumer.cli"]

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [executable, *prefix, *args],
            env=cli_env(settings, **env),
            capture_output=True,
            text=True,
            timeout=time_limit_s,
            check=False,
        )

    done = await asyncio.to_thread(call)
    return CliResult(done.returncode, done.stdout, done.stderr)


async def produce_raw(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    timestamp_ms: int | None = None,
) -> list[tuple[TopicPartition, int, int]]:
    """Produce (topic, key, value) records with acks=all; returns (tp, offset, timestamp ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value=value,
                key=key,
                partition=partition,
                headers=list(headers or []),
                timestamp_ms=timestamp_ms,
            )
            for topic, key, value in records
        ]
        metas = [await f for f in futures]
    finally:
        await producer.stop()
    return [(TopicPartition(m.topic, m.partition), m.offset, m.timestamp) for m in metas]


@contextlib.asynccontextmanager
async def open_transaction(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> AsyncIterator[list[tuple[TopicPartition, int]]]:
    """A real producer transaction holding ``records``, open for the block, aborted after it.

    Yields the (partition, offset) of each record: written to the log, acknowledged, yet never
    committed. A ``read_committed`` reader stops at the last stable offset before them and, once
    the transaction is aborted, skips them.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"ops-test-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        futures = [
            await producer.send(
                topic, value=value, key=key, partition=partition, headers=list(headers or [])
            )
            for topic, key, value in records
        ]
        metas = [await f for f in futures]
        yield [(TopicPartition(m.topic, m.partition), m.offset) for m in metas]
        await producer.abort_transaction()
    finally:
        await producer.stop()


async def produce_aborted(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[tuple[TopicPartition, int]]:
    """Write ``records`` in a real producer transaction and abort it; returns their positions.

    The records stay in the log (a ``read_uncommitted`` reader sees them) but belong to no
    committed transaction: no command may ever apply or republish them.
    """
    async with open_transaction(bootstrap, records, partition=partition, headers=headers) as at:
        return at


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """Log-end offset of every partition of ``topics``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (only partitions with a commit)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        raw = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in raw.items() if meta.offset >= 0}


async def commit_offsets(bootstrap: str, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` as a member with a manual assignment would."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now (ConsumerRecord objects)."""
    ends = await end_offsets(bootstrap, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        if not wanted:
            return out
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        async with asyncio.timeout(timeout_s):
            while any([await consumer.position(tp) < end for tp, end in wanted.items()]):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(
                        r
                        for r in records
                        if r.offset < wanted[TopicPartition(r.topic, r.partition)]
                    )
    finally:
        await consumer.stop()
    return sorted(out, key=lambda r: (r.topic, r.partition, r.offset))


def headers_of(record: Any) -> dict[str, str]:
    """A consumer record's headers decoded as UTF-8 (last value wins)."""
    return {k: v.decode() for k, v in record.headers}


# --- events and the live consumer -----------------------------------------------------------


def snapshot_payload(tenant: str, alias: str = "fast") -> dict[str, Any]:
    """A valid RoutingPlanSnapshot payload for ``tenant``."""
    return {
        "snapshotId": f"snap-{alias}",
        "strategy": "cost",
        "resolvedAlias": alias,
        "candidateCount": 2,
        "timestamp": "2026-11-25T09:00:00.000000Z",
        "costEstimate": {"totalCostUsd": Decimal("0.0125")},
        "tenantId": tenant,
        "primary": {"provider": "openai", "model": "gpt-4o-mini"},
        "fallbacks": [{"provider": "anthropic", "model": "claude-haiku"}],
    }


def cost_payload(total_tokens: int) -> dict[str, Any]:
    """A valid ActualCost payload (0.1 + 0.2 = 0.3 exactly, as decimals)."""
    return {
        "inputTokens": total_tokens,
        "outputTokens": 2 * total_tokens,
        "inputCostUsd": Decimal("0.1"),
        "outputCostUsd": Decimal("0.2"),
        "totalCostUsd": Decimal("0.3"),
        "provider": "openai",
    }


def policy_payload(tenant: str, strategy: str = "cost") -> dict[str, Any]:
    """A valid TenantRoutingPolicy payload for ``tenant``."""
    return {
        "tenantId": tenant,
        "allowedProviders": ["openai", "anthropic"],
        "deniedProviders": ["mistral"],
        "preferredProvider": "openai",
        "maxCostPerRequestUsd": Decimal("0.5"),
        "defaultStrategy": strategy,
    }


def topic_for(settings: Settings, event_type: str) -> str:
    """The source topic of an event type."""
    return {
        "routing.snapshot": settings.topic_snapshots,
        "routing.cost": settings.topic_costs,
        "tenant.policy": settings.topic_policies,
    }[event_type]


@contextlib.asynccontextmanager
async def live_consumer(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``routing-persistence run`` for the duration of the block; SIGTERM at the end,
    after which it must exit 0. Its log goes to a file (a pipe could fill up and block it)."""
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            str(CLI),
            "run",
            env=cli_env(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
        assert process.returncode == 0, tail


async def wait_caught_up(
    settings: Settings,
    process: asyncio.subprocess.Process | None = None,
    *,
    time_limit_s: float = 90.0,
) -> None:
    """Wait until the group has committed every source partition's end offset (taken now)."""
    ends = await end_offsets(settings.kafka_bootstrap_servers, settings.source_topics)
    async with asyncio.timeout(time_limit_s):
        while True:
            committed = await committed_offsets(settings.kafka_bootstrap_servers, settings.group_id)
            if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                return
            assert process is None or process.returncode is None, "the consumer exited"
            await asyncio.sleep(0.3)


async def run_consumer_until_caught_up(settings: Settings, *, time_limit_s: float = 90.0) -> None:
    """Run the real ``routing-persistence run`` until the group has committed every source
    partition's end offset, then stop it with SIGTERM (it must exit 0)."""
    async with live_consumer(settings) as process:
        await wait_caught_up(settings, process, time_limit_s=time_limit_s)

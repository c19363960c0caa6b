"""Helpers for the operator-command tests (lag, replay, dlq redrive): run the real CLI, produce
records, read offsets and topics independently of the code under test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
) -> list[tuple[TopicPartition, int, int]]:
    """Produce (topic, key, value) records with acks=all; returns (tp, offset, timestamp ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value=value, key=key, partition=partition, headers=list(headers or [])
            )
            for topic, key, value in records
        ]
        metas = [await f for f in futures]
    finally:
        await producer.stop()
    return [(TopicPartition(m.topic, m.partition), m.offset, m.timestamp) for m in metas]


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

"""The benchmark's plumbing: the stack's addresses, topics, databases, producing, progress, /proc.

Every run works on topics and databases of its own (``bench-<run id>...``), never on the defaults
that ``make run`` uses, and removes them at the end (``--keep`` leaves them for inspection).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bench.workload import Event
from schemas import EventType

__all__ = [
    "ROOT",
    "Stack",
    "TopicSet",
    "cpu_seconds",
    "free_port",
    "peak_rss_bytes",
    "produce",
]

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" of the command name: field 14 (utime) and 15 (stime) are at index 11, 12.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size of ``pid`` so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass(frozen=True)
class TopicSet:
    """The three source topics (and a dead-letter topic) of one system's run."""

    snapshots: str
    costs: str
    policies: str
    dlq: str

    @classmethod
    def named(cls, base: str) -> TopicSet:
        """``<base>.snapshots``, ``<base>.costs``, ``<base>.policies``, ``<base>.dlq``."""
        return cls(f"{base}.snapshots", f"{base}.costs", f"{base}.policies", f"{base}.dlq")

    @property
    def sources(self) -> tuple[str, str, str]:
        """The topics a consumer reads."""
        return (self.snapshots, self.costs, self.policies)

    @property
    def all(self) -> tuple[str, str, str, str]:
        """Every topic of the set."""
        return (*self.sources, self.dlq)

    def for_type(self, kind: EventType) -> str:
        """The topic an event of ``kind`` is produced to."""
        if kind is EventType.SNAPSHOT:
            return self.snapshots
        if kind is EventType.COST:
            return self.costs
        return self.policies


def _stack_env() -> dict[str, str]:
    out = subprocess.run(
        [str(ROOT / "deploy" / "local" / "stack"), "env"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'\"")
    return env


@dataclass(frozen=True)
class Stack:
    """Where Kafka and PostgreSQL are (``ROUTING_*`` variables, else ``deploy/local/stack env``)."""

    bootstrap: str
    admin_url: str  # postgresql://... of a maintenance database, as a superuser

    @classmethod
    def from_env(cls) -> Stack:
        """Read ``ROUTING_KAFKA_BOOTSTRAP_SERVERS`` and ``ROUTING_DATABASE_URL``."""
        bootstrap = os.environ.get("ROUTING_KAFKA_BOOTSTRAP_SERVERS")
        url = os.environ.get("ROUTING_DATABASE_URL")
        if not bootstrap or not url:
            env = _stack_env()
            bootstrap = bootstrap or env["ROUTING_KAFKA_BOOTSTRAP_SERVERS"]
            url = url or env["ROUTING_DATABASE_URL"]
        parts = urlsplit(url)
        plain = urlunsplit(parts._replace(scheme="postgresql"))
        return cls(bootstrap, plain)

    def database_url(self, name: str) -> str:
        """URL of database ``name`` on the same server."""
        return urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))

    @property
    def pg_host_port(self) -> tuple[str, int]:
        """Host and port of the PostgreSQL server."""
        parts = urlsplit(self.admin_url)
        return (parts.hostname or "127.0.0.1", parts.port or 5432)

    @property
    def pg_user(self) -> str:
        """The user name in the URL."""
        return urlsplit(self.admin_url).username or "postgres"

    # --- databases ------------------------------------------------------------------------------

    async def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` if given); return its URL."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            suffix = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        finally:
            await conn.close()
        return self.database_url(name)

    async def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists (disconnecting its sessions)."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def server_version(self) -> str:
        """PostgreSQL's ``server_version``."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    # --- topics ---------------------------------------------------------------------------------

    async def create_topics(self, names: Iterable[str], partitions: int) -> None:
        """Create ``names`` (replication 1) and wait until the broker describes them."""
        wanted = list(names)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in wanted])
            for _ in range(200):
                described = await admin.describe_topics(wanted)
                if all(
                    t["error_code"] == 0 and len(t["partitions"]) == partitions for t in described
                ):
                    return
                await asyncio.sleep(0.1)
            raise RuntimeError(f"topics {wanted} not ready")
        finally:
            await admin.close()

    async def delete_topics(self, names: Iterable[str]) -> None:
        """Delete ``names`` (errors ignored: cleanup is best effort)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(list(names))
        except Exception as exc:
            print(f"bench: could not delete topics: {exc}")
        finally:
            await admin.close()

    async def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """End offset of every partition of ``topics``."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [
                TopicPartition(t, p)
                for t in topics
                for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
            ]
            ends: dict[TopicPartition, int] = await consumer.end_offsets(parts)
            return ends
        finally:
            await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


class GroupProgress:
    """Sum of a consumer group's committed offsets over some topics, read with the admin API.

    This is how the benchmark sees a consumer's progress without touching it: this service and
    Kafka Connect commit an offset only after the rows of the records before it are committed in
    PostgreSQL, so ``committed`` counts records whose effect is durable.
    """

    def __init__(self, bootstrap: str, groups: list[str], topics: Iterable[str]) -> None:
        self._bootstrap = bootstrap
        self._groups = groups
        self._topics = set(topics)
        self._admin: AIOKafkaAdminClient | None = None

    async def __aenter__(self) -> GroupProgress:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._admin is not None:
            await self._admin.close()

    async def members(self, group: str) -> int:
        """How many members ``group`` has once it is stable (0 while it rebalances or is empty)."""
        assert self._admin is not None
        try:
            (response,) = await self._admin.describe_consumer_groups([group])
        except GroupCoordinatorNotAvailableError:
            return 0
        for described in response.groups:
            # (error_code, group, state, protocol_type, protocol, members[, operations])
            if described[1] == group and described[2] == "Stable":
                return len(described[5])
        return 0

    async def committed(self) -> int:
        """Total committed offset of the groups on the topics (0 before any commit)."""
        return sum((await self.per_partition()).values())

    async def per_partition(self) -> dict[str, int]:
        """Committed offset per ``topic:partition`` of the groups (only those committed).

        A broker whose offsets topic is still being created (a fresh stack) answers that no
        coordinator is available: nothing is committed yet.
        """
        assert self._admin is not None
        out: dict[str, int] = {}
        for group in self._groups:
            try:
                offsets = await self._admin.list_consumer_group_offsets(group)
            except GroupCoordinatorNotAvailableError:
                continue
            for tp, meta in offsets.items():
                if tp.topic in self._topics and meta.offset > 0:
                    out[f"{tp.topic}:{tp.partition}"] = meta.offset
        return out


async def produce(
    bootstrap: str,
    events: Iterable[Event],
    topic_of: Callable[[Event], str],
    *,
    value_of: Callable[[Event], bytes] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[int, float]:
    """Produce ``events`` as fast as the broker takes them; return (count, seconds).

    Sends are pipelined (linger 20 ms, 512 KiB batches) and awaited in chunks, so a million
    events go out in seconds rather than minutes. ``on_event`` sees every event as it is sent
    (the oracle's hook); ``value_of`` replaces the record value (the peer's flattened copy).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        acks=1,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    count = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        for event in events:
            value = value_of(event) if value_of else event.value
            pending.append(await producer.send(topic_of(event), value=value, key=event.key))
            if on_event is not None:
                on_event(event)
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count, time.perf_counter() - started


async def partition_ends(
    consumer: AIOKafkaConsumer, topics: list[str]
) -> dict[TopicPartition, int]:
    """Every partition of ``topics`` (waiting up to ~10 s for their metadata) and its end offset."""
    parts: list[TopicPartition] = []
    for topic in topics:
        for _ in range(100):
            found = consumer.partitions_for_topic(topic)
            if found:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"no partitions for {topic}")
        parts += [TopicPartition(topic, p) for p in sorted(found)]
    ends: dict[TopicPartition, int] = await consumer.end_offsets(parts)
    return ends

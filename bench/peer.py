"""The peer: the Debezium JDBC sink on Kafka Connect standalone, writing the same rows.

:func:`produce_flattened` writes a flattened, schema'd copy of the workload (:func:`flatten`)
sorted by version (the connector has no version guard); :class:`ConnectPeer` runs one JDBC sink
connector over the three topics with ``tasks`` tasks (a ``RegexRouter`` sends each topic to its
table), so N tasks read the same partitions in one group as N service processes do;
:func:`run_debezium` times it on a backlog by its group's committed offsets and checks its rows.
The jars come from Maven (:func:`ensure_jars`). Versions, configuration and fairness:
``bench/RESULTS.md``, "Method".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.infra import ROOT, GroupProgress, Stack, TopicSet, free_port, produce
from bench.oracle import Oracle, check_rows, payload_text
from bench.systems import Measured, stop_service, watch_group
from bench.workload import Event
from schemas import EventType, format_rfc3339

__all__ = [
    "CONNECT_LIBS",
    "OFFSET_FLUSH_MS",
    "ConnectPeer",
    "ensure_jars",
    "flatten",
    "produce_flattened",
    "run_debezium",
]

CONNECT_POM = ROOT / "deploy" / "local" / "connect" / "pom.xml"
CONNECT_LIBS = ROOT / ".local" / "connect" / "libs"
_JSON = "io.debezium.data.Json"
_ZONED = "io.debezium.time.ZonedTimestamp"
_UUID = "io.debezium.data.Uuid"
#: Connect commits a sink's offsets (after flushing it) this often: small next to the timed
#: window (and to the service's commit after every batch), so the window ends within ~0.1 s of
#: the last row, as the service's does.
OFFSET_FLUSH_MS = 100
VERSION = "Kafka Connect 4.1.1 standalone + debezium-connector-jdbc 3.3.1.Final"


async def ensure_jars() -> Path:
    """Resolve the Connect + Debezium jars once (re-resolved when the pom changes)."""
    stamp = CONNECT_LIBS / ".pom.sha256"
    want = hashlib.sha256(CONNECT_POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return CONNECT_LIBS
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("the Debezium peer needs mvn and java 17+ on PATH")
    if CONNECT_LIBS.exists():
        shutil.rmtree(CONNECT_LIBS)
    proc = await asyncio.create_subprocess_exec(
        "mvn",
        "-q",
        "-B",
        "-f",
        str(CONNECT_POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={CONNECT_LIBS}",
        "-DincludeScope=runtime",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"mvn could not resolve the Connect jars:\n{out.decode()[-2000:]}")
    stamp.write_text(want + "\n")
    return CONNECT_LIBS


def _field(name: str, *, optional: bool, logical: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": name, "type": "string", "optional": optional}
    if logical is not None:
        spec["name"] = logical
    return spec


def _schema(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "struct", "name": name, "optional": False, "fields": fields}


def _versioned(column: str) -> list[dict[str, Any]]:
    """A JSON column and its two version columns (occurredAt, eventId), as the service writes."""
    return [
        _field(column, optional=True, logical=_JSON),
        _field(f"{column}OccurredAt", optional=True, logical=_ZONED),
        _field(f"{column}EventId", optional=True, logical=_UUID),
    ]


_KEYS = [
    _field("id", optional=False),
    _field("requestId", optional=False),
    _field("tenantId", optional=True),
]
_SCHEMAS = {
    EventType.SNAPSHOT: _schema(
        "bench.ExecutionRecordSnapshot", _KEYS + _versioned("routingSnapshot")
    ),
    EventType.COST: _schema("bench.ExecutionRecordCost", _KEYS + _versioned("actualCost")),
    EventType.POLICY: _schema(
        "bench.TenantPolicy", [_field("id", optional=False), *_versioned("routingPolicy")]
    ),
}
_COLUMN = {
    EventType.SNAPSHOT: "routingSnapshot",
    EventType.COST: "actualCost",
    EventType.POLICY: "routingPolicy",
}


def flatten(event: Event, payload: str | None = None) -> bytes:
    """The peer's record value for ``event``: schema'd JSON of the flattened row.

    The row carries the event's version as the service stores it (``<column>OccurredAt`` as
    RFC 3339 with microseconds, ``<column>EventId``), so the peer writes the same columns and its
    rows are checked like the service's. ``payload`` is the payload's JSON text (default: taken
    from the event's record).
    """
    column = _COLUMN[event.type]
    row: dict[str, Any] = {"id": event.row_key}
    if event.type is not EventType.POLICY:
        row |= {"requestId": event.row_key, "tenantId": event.tenant_id}
    row |= {
        column: payload_text(event.value) if payload is None else payload,
        f"{column}OccurredAt": format_rfc3339(event.occurred_at),
        f"{column}EventId": str(event.event_id),
    }
    return json.dumps({"schema": _SCHEMAS[event.type], "payload": row}).encode()


async def produce_flattened(stack: Stack, topics: TopicSet, events: list[Event]) -> int:
    """Produce the flattened copy of ``events`` to ``topics``, sorted by version; return the count.

    Sorted because the connector has no version guard: in delivery order a late event would
    overwrite a newer row.
    """
    ordered = sorted(events, key=lambda e: e.version)
    flat = {id(e): flatten(e) for e in ordered}
    sent, seconds = await produce(
        stack.bootstrap,
        ordered,
        lambda e: topics.for_type(e.type),
        value_of=lambda e: flat[id(e)],
    )
    print(f"bench: produced {sent:,} flattened events for the peer in {seconds:.1f} s", flush=True)
    return sent


def _properties(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


class ConnectPeer:
    """One Kafka Connect standalone JVM running one JDBC sink with ``tasks`` tasks.

    The connector reads the three topics of ``topics`` in group ``connect-<name>``; two
    ``RegexRouter`` transforms send snapshots and costs to ``"ExecutionRecord"`` and policies to
    ``"Tenant"`` (the connector's default table name is the topic's).
    """

    def __init__(
        self,
        stack: Stack,
        topics: TopicSet,
        database_url: str,
        *,
        name: str,
        tasks: int,
        work: Path,
        log_path: Path,
    ) -> None:
        self.stack = stack
        self.topics = topics
        self.database_url = database_url
        self.name = name
        self.tasks = tasks
        self.work = work
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def group(self) -> str:
        """The consumer group of the connector's tasks."""
        return f"connect-{self.name}"

    def configuration(self) -> dict[str, Any]:
        """The connector's properties."""
        host, port = self.stack.pg_host_port
        db = self.database_url.rsplit("/", 1)[1]
        return {
            "name": self.name,
            "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "tasks.max": self.tasks,
            "topics": ",".join(self.topics.sources),
            "transforms": "er,tenant",
            "transforms.er.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.er.regex": ".*[.](snapshots|costs)",
            "transforms.er.replacement": "ExecutionRecord",
            "transforms.tenant.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.tenant.regex": ".*[.]policies",
            "transforms.tenant.replacement": "Tenant",
            "connection.url": f"jdbc:postgresql://{host}:{port}/{db}",
            "connection.username": self.stack.pg_user,
            "connection.password": "",
            "insert.mode": "upsert",
            "primary.key.mode": "record_value",
            "primary.key.fields": "id",
            "schema.evolution": "none",
            "quote.identifiers": "true",
            "batch.size": 2000,
            "use.reduction.buffer": "true",
        }

    def start(self, libs: Path) -> subprocess.Popen[bytes]:
        """Write the configuration and start the JVM (it joins the group by itself)."""
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "worker.properties").write_text(
            _properties(
                {
                    "bootstrap.servers": self.stack.bootstrap,
                    "key.converter": "org.apache.kafka.connect.storage.StringConverter",
                    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                    "value.converter.schemas.enable": "true",
                    "offset.storage.file.filename": self.work / "offsets",
                    "offset.flush.interval.ms": OFFSET_FLUSH_MS,
                    "listeners": f"http://127.0.0.1:{free_port()}",
                    "consumer.auto.offset.reset": "earliest",
                    "consumer.max.poll.records": 2000,
                }
            )
        )
        (self.work / "sink.properties").write_text(_properties(self.configuration()))
        (self.work / "log4j2.properties").write_text(
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "java",
                    "-Xms256m",
                    "-Xmx1g",
                    f"-Dlog4j2.configurationFile={self.work / 'log4j2.properties'}",
                    "-cp",
                    f"{libs}/*",
                    "org.apache.kafka.connect.cli.ConnectStandalone",
                    str(self.work / "worker.properties"),
                    str(self.work / "sink.properties"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
            )
        return self.proc

    async def all_tasks_hold_partitions(self, progress: GroupProgress) -> bool:
        """Whether the group is stable with one member per task (start-up rebalances over)."""
        return await progress.members(self.group) >= self.tasks

    async def wait_ready(self, within_s: float = 120.0) -> None:
        """Wait until every task is a member of the stable group (for live runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        async with GroupProgress(self.stack.bootstrap, [self.group], []) as progress:
            while loop.time() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"Kafka Connect exited early; see {self.log_path}")
                if await self.all_tasks_hold_partitions(progress):
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the connector's {self.tasks} tasks did not join their group")

    def stop(self) -> int:
        """Stop the JVM; its exit code (143 after SIGTERM is normal for Connect)."""
        return 0 if self.proc is None else stop_service(self.proc)

    def note(self) -> str:
        """How the peer ran, for the results."""
        return (
            f"{VERSION}, -Xmx1g, one connector, tasks.max={self.tasks} over the three topics "
            f"(RegexRouter: topic -> table), batch.size=2000, use.reduction.buffer=true, "
            f"offset.flush.interval.ms={OFFSET_FLUSH_MS}"
        )


async def run_debezium(
    stack: Stack,
    topics: TopicSet,
    sent: int,
    oracle: Oracle,
    database_url: str,
    *,
    tenants: list[str],
    log_dir: Path,
    name: str,
    tasks: int,
) -> Measured:
    """Run the connector with ``tasks`` tasks on the flattened backlog already in ``topics``
    (:func:`produce_flattened`, ``sent`` records), time it and check its rows."""
    libs = await ensure_jars()
    peer = ConnectPeer(
        stack,
        topics,
        database_url,
        name=name,
        tasks=tasks,
        work=log_dir / f"connect-{name}",
        log_path=log_dir / f"{name}.log",
    )
    proc = peer.start(libs)
    progress_for_ready = GroupProgress(stack.bootstrap, [peer.group], [])
    await progress_for_ready.__aenter__()

    async def ready() -> bool:
        return await peer.all_tasks_hold_partitions(progress_for_ready)

    try:
        window = await watch_group(
            stack,
            [proc],
            [peer.group],
            list(topics.sources),
            sent,
            stall_timeout=240.0,
            database_url=database_url,
            ready=ready if tasks > 1 else None,
        )
    finally:
        await progress_for_ready.__aexit__(None, None, None)
        code = await asyncio.to_thread(peer.stop)
    notes = [
        peer.note(),
        "fed the same events sorted by version (it has no version guard: in delivery "
        "order late events would overwrite newer rows); schema'd JSON input with the version "
        "columns, as the service writes them",
    ]
    if tasks > 1:
        notes.append(
            "timed from the first commit after every task is a member of the stable group "
            "(the start-up rebalances are outside the window)"
        )
    measured = Measured(
        f"Debezium JDBC sink ({tasks} task{'s' if tasks > 1 else ''})",
        window.events,
        window.seconds,
        window.cpu_seconds,
        window.peak_rss_bytes,
        notes=notes,
        extra={"exit_code": code, "backlog": sent, "tasks": tasks, "cpu": window.cpu_breakdown()},
    )
    measured.check = await check_rows(database_url, oracle, tenants)
    return measured

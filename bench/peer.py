"""The peer: the Debezium JDBC sink on Kafka Connect standalone, writing the same rows.

:func:`run_debezium` resolves the Connect and Debezium jars (:func:`ensure_jars`, Maven), produces
a flattened, schema'd copy of the workload (:func:`flatten`) sorted by version (the connector has
no version guard), runs two connectors (one per table), times them by their groups' committed
offsets and checks their rows. Versions, configuration and fairness: ``bench/RESULTS.md``,
"Method".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.infra import ROOT, Stack, TopicSet, free_port, produce
from bench.oracle import Oracle, check_rows, payload_text
from bench.systems import Measured, stop_service, watch_group
from bench.workload import Event
from schemas import EventType

__all__ = ["CONNECT_LIBS", "ensure_jars", "flatten", "run_debezium"]

CONNECT_POM = ROOT / "deploy" / "local" / "connect" / "pom.xml"
CONNECT_LIBS = ROOT / ".local" / "connect" / "libs"
_JSON = "io.debezium.data.Json"


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


def _field(name: str, *, optional: bool, json_type: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": name, "type": "string", "optional": optional}
    if json_type:
        spec["name"] = _JSON
    return spec


def _schema(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "struct", "name": name, "optional": False, "fields": fields}


_SCHEMAS = {
    EventType.SNAPSHOT: _schema(
        "bench.ExecutionRecordSnapshot",
        [
            _field("id", optional=False),
            _field("requestId", optional=False),
            _field("tenantId", optional=True),
            _field("routingSnapshot", optional=True, json_type=True),
        ],
    ),
    EventType.COST: _schema(
        "bench.ExecutionRecordCost",
        [
            _field("id", optional=False),
            _field("requestId", optional=False),
            _field("tenantId", optional=True),
            _field("actualCost", optional=True, json_type=True),
        ],
    ),
    EventType.POLICY: _schema(
        "bench.TenantPolicy",
        [_field("id", optional=False), _field("routingPolicy", optional=True, json_type=True)],
    ),
}


def flatten(event: Event) -> bytes:
    """The peer's record value for ``event``: schema'd JSON of the flattened row."""
    payload = payload_text(event.value)
    if event.type is EventType.POLICY:
        row: dict[str, Any] = {"id": event.tenant_id, "routingPolicy": payload}
    else:
        column = "routingSnapshot" if event.type is EventType.SNAPSHOT else "actualCost"
        row = {
            "id": event.row_key,
            "requestId": event.row_key,
            "tenantId": event.tenant_id,
            column: payload,
        }
    return json.dumps({"schema": _SCHEMAS[event.type], "payload": row}).encode()


def _properties(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


async def run_debezium(
    stack: Stack,
    topics: TopicSet,
    events: list[Event],
    oracle: Oracle,
    database_url: str,
    *,
    tenants: list[str],
    log_dir: Path,
    name_prefix: str,
) -> Measured:
    """Produce the flattened copy to ``topics``, run Connect standalone with two JDBC sinks
    (``<name_prefix>-er``, ``<name_prefix>-tenant``), time them and check their rows."""
    libs = await ensure_jars()
    ordered = sorted(events, key=lambda e: e.version)
    flat = {id(e): flatten(e) for e in ordered}
    sent, seconds = await produce(
        stack.bootstrap,
        ordered,
        lambda e: topics.for_type(e.type),
        value_of=lambda e: flat[id(e)],
    )
    flat.clear()
    print(f"bench: produced {sent:,} flattened events for the peer in {seconds:.1f} s", flush=True)

    work = log_dir / "connect"
    work.mkdir(parents=True, exist_ok=True)
    host, port = stack.pg_host_port
    db = database_url.rsplit("/", 1)[1]
    names = {"er": f"{name_prefix}-er", "tenant": f"{name_prefix}-tenant"}
    (work / "worker.properties").write_text(
        _properties(
            {
                "bootstrap.servers": stack.bootstrap,
                "key.converter": "org.apache.kafka.connect.storage.StringConverter",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter.schemas.enable": "true",
                "offset.storage.file.filename": work / "offsets",
                "offset.flush.interval.ms": 1000,
                "listeners": f"http://127.0.0.1:{free_port()}",
                "consumer.auto.offset.reset": "earliest",
                "consumer.max.poll.records": 2000,
            }
        )
    )
    common = {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": 1,
        "connection.url": f"jdbc:postgresql://{host}:{port}/{db}",
        "connection.username": stack.pg_user,
        "connection.password": "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "id",
        "schema.evolution": "none",
        "quote.identifiers": "true",
        "batch.size": 2000,
        "use.reduction.buffer": "true",
    }
    (work / "er.properties").write_text(
        _properties(
            common
            | {
                "name": names["er"],
                "topics": f"{topics.snapshots},{topics.costs}",
                "collection.name.format": "ExecutionRecord",
            }
        )
    )
    (work / "tenant.properties").write_text(
        _properties(
            common
            | {
                "name": names["tenant"],
                "topics": topics.policies,
                "collection.name.format": "Tenant",
            }
        )
    )
    (work / "log4j2.properties").write_text(
        "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
    )
    log_path = log_dir / "debezium.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - one JVM per run
            [
                "java",
                "-Xms256m",
                "-Xmx1g",
                f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.connect.cli.ConnectStandalone",
                str(work / "worker.properties"),
                str(work / "er.properties"),
                str(work / "tenant.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    try:
        window = await watch_group(
            stack,
            [proc],
            [f"connect-{n}" for n in names.values()],
            list(topics.sources),
            sent,
            stall_timeout=240.0,
            database_url=database_url,
        )
    finally:
        code = await asyncio.to_thread(stop_service, proc)
    measured = Measured(
        "Debezium JDBC sink",
        window.events,
        window.seconds,
        window.cpu_seconds,
        window.peak_rss_bytes,
        notes=[
            "Kafka Connect 4.1.1 standalone + debezium-connector-jdbc 3.3.1.Final, -Xmx1g, "
            "2 tasks (one per table), batch.size=2000, use.reduction.buffer=true",
            "fed the same events sorted by version (it has no version guard: in delivery "
            "order late events would overwrite newer rows); schema'd JSON input",
            "rows checked on keys, tenantId and payloads (it keeps no version columns)",
        ],
        extra={"exit_code": code, "backlog": sent, "cpu": window.cpu_breakdown()},
    )
    measured.check = await check_rows(database_url, oracle, tenants, versions=False)
    return measured

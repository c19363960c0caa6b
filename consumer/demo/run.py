"""``make run``: the whole service on the local stack, fed realistic traffic, with a summary.

Steps: create the topics if missing (6 partitions each), migrate the database, create the
sample's tenants (the stand-in for Project C) and pre-existing execution records (Project A),
start the consumer (in this process, exactly the code of ``routing-persistence run``), publish a
stream of sample events (:mod:`.sample`: versions, duplicates, late records, one bad record
of every reason code and more), wait until the group's committed offsets reach the end of every
partition, print what happened, and stop the consumer gracefully.

Exit code 0 when everything matched: the group caught up, every bad record was dead-lettered with
its expected reason, every valid record was applied or counted stale, and the consumer stopped
cleanly. Configuration comes from the ``ROUTING_*`` environment (``make run`` sets the local
stack's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import Counter
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from consumer.demo.sample import SampleRecord, make_sample, publish_sample, seed_database
from consumer.kafka import client_options
from consumer.logs import configure_logging
from consumer.ops.migrate import upgrade
from consumer.service.service import Service
from consumer.settings import Settings
from schemas import EventType

__all__ = ["main", "run"]

_PARTITIONS = 6
_OUTCOMES = ("applied", "stale", "dead_lettered", "ignored")


async def _ensure_topics(settings: Settings, console: Console) -> None:
    """Create the four topics when missing; they accept the sample's oversized record."""
    names = [*settings.source_topics, settings.topic_dlq]
    max_bytes = str(2 * settings.max_payload_bytes + 65_536)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(n, _PARTITIONS, 1, topic_configs={"max.message.bytes": max_bytes})
                    for n in missing
                ]
            )
        for _ in range(100):
            described = await admin.describe_topics(names)
            if all(t["error_code"] == 0 and t["partitions"] for t in described):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"topics {names} did not become available")
    finally:
        await admin.close()
    made = f"created {', '.join(missing)}" if missing else "all present"
    console.print(f"[bold]topics[/]   {made}")


async def _offsets(
    settings: Settings,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(end offsets, the group's committed offsets) of every source partition."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    consumer = AIOKafkaConsumer(**client_options(settings))
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(list(settings.source_topics))
        tps = [
            TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
        ]
        ends = dict(await consumer.end_offsets(tps))
        committed = {
            tp: meta.offset
            for tp, meta in (await admin.list_consumer_group_offsets(settings.group_id)).items()
            if meta.offset >= 0
        }
    finally:
        await consumer.stop()
        await admin.close()
    return ends, committed


def _lag(ends: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> int:
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - the same address the service binds
        except OSError:
            return False
    return True


def _counts(service: Service) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """(type, outcome) -> records and reason -> dead letters, from the service's own metrics."""
    outcomes: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "routing_consumer_events_total":
                outcomes[(sample.labels["type"], sample.labels["outcome"])] += int(sample.value)
            elif sample.name == "routing_consumer_dead_letters_total":
                reasons[sample.labels["reason"]] += int(sample.value)
    return outcomes, reasons


async def _sample_rows(settings: Settings) -> tuple[list[Any], list[Any]]:
    conn = await asyncpg.connect(settings.plain_database_url)
    try:
        executions = await conn.fetch(
            """
            SELECT "requestId", "tenantId",
                   "routingSnapshot" #>> '{primary,provider}' AS provider,
                   "routingSnapshot" #>> '{primary,model}' AS model,
                   jsonb_array_length("routingSnapshot" -> 'fallbacks') AS fallbacks,
                   "actualCost" ->> 'totalCostUsd' AS cost
              FROM "ExecutionRecord"
             WHERE "routingSnapshot" IS NOT NULL AND "actualCost" IS NOT NULL
             ORDER BY "routingSnapshotOccurredAt" DESC
             LIMIT 3
            """
        )
        tenants = await conn.fetch(
            """
            SELECT "id",
                   "routingPolicy" -> 'allowedProviders' AS allowed,
                   "routingPolicy" ->> 'preferredProvider' AS preferred,
                   "routingPolicy" ->> 'maxCostPerRequestUsd' AS max_cost
              FROM "Tenant"
             WHERE "routingPolicy" IS NOT NULL
             ORDER BY "routingPolicyOccurredAt" DESC
             LIMIT 2
            """
        )
    finally:
        await conn.close()
    return list(executions), list(tenants)


def _print_summary(
    console: Console,
    published: list[SampleRecord],
    outcomes: Counter[tuple[str, str]],
    reasons: Counter[str],
) -> bool:
    """Print the tables; True when the counts match what was published."""
    table = Table(title="What the consumer did, per event type")
    table.add_column("type")
    for outcome in _OUTCOMES:
        table.add_column(outcome.replace("_", "-"), justify="right")
    types = [str(t) for t in EventType] + ["unknown"]
    for event_type in types:
        row = [outcomes[(event_type, o)] for o in _OUTCOMES]
        if any(row):
            table.add_row(event_type, *(str(n) for n in row))
    table.add_row("[bold]total[/]", *(str(sum(outcomes[(t, o)] for t in types)) for o in _OUTCOMES))
    console.print(table)

    expected = Counter(str(r.reason) for r in published if r.reason is not None)
    dlq = Table(title="Dead letters by reason (dlq.reason header)")
    dlq.add_column("reason")
    dlq.add_column("dead-lettered", justify="right")
    dlq.add_column("sent as bad", justify="right")
    for reason in sorted(set(expected) | set(reasons)):
        mark = "" if expected[reason] == reasons[reason] else "  [red]MISMATCH[/]"
        dlq.add_row(reason, str(reasons[reason]), f"{expected[reason]}{mark}")
    console.print(dlq)

    valid = sum(1 for r in published if r.reason is None and r.value is not None)
    tombstones = sum(1 for r in published if r.value is None)
    handled = sum(outcomes[(t, o)] for t in types for o in ("applied", "stale"))
    ignored = sum(outcomes[(t, "ignored")] for t in types)
    ok = expected == reasons and handled == valid and ignored == tombstones
    console.print(
        f"valid records sent {valid} = applied + stale {handled}; tombstones sent {tombstones} "
        f"= ignored {ignored}; bad records sent {sum(expected.values())} = dead-lettered "
        f"{sum(reasons.values())}: " + ("[green]all accounted for[/]" if ok else "[red]MISMATCH[/]")
    )
    return ok


async def run(settings: Settings, *, events: int, rate: float, seed: int) -> int:
    """The ``make run`` flow (see the module docstring); returns the exit code."""
    console = Console(highlight=False, width=max(100, Console().width))
    started = time.monotonic()
    console.rule("routing-persistence demo")
    console.print(
        f"[bold]kafka[/]    {settings.kafka_bootstrap_servers}\n"
        f"[bold]database[/] {settings.redacted_database_url}"
    )
    await _ensure_topics(settings, console)
    await asyncio.to_thread(upgrade, settings)
    console.print("[bold]database[/] migrated to head")
    sample = make_sample(events, seed=seed, max_payload_bytes=settings.max_payload_bytes)
    await seed_database(settings, sample)
    console.print(
        f'[bold]tenants[/]  {len(sample.tenants)} in "Tenant", '
        f"{len(sample.execution_records)} execution records created before (Projects C and A)"
    )

    port = settings.metrics_port if _port_is_free(settings.metrics_port) else 0
    service = Service(settings, metrics_port=port)
    consumer = asyncio.create_task(service.run())
    while not service.health.is_ready():
        if consumer.done():
            console.print(f"[red]the consumer exited with {consumer.result()}[/]")
            return 1
        await asyncio.sleep(0.05)
    console.print(
        f"[bold]consumer[/] running in group {settings.group_id!r}; metrics and probes at "
        f"http://127.0.0.1:{service.metrics_port}/metrics (/healthz, /readyz)"
    )

    bad = sum(1 for r in sample.records if r.reason is not None)
    console.print(
        f"[bold]publish[/]  {len(sample.records)} records at {rate:.0f}/s: snapshots, costs and "
        f"policies with duplicates, late versions, tombstones and {bad} bad records"
    )
    publishing = asyncio.create_task(publish_sample(settings, sample.records, rate=rate))
    caught_up = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        ends, committed = await _offsets(settings)
        lag = _lag(ends, committed)
        outcomes, _ = _counts(service)
        console.print(
            f"  handled {sum(outcomes.values()):>6} records, lag {lag:>6}"
            + ("" if publishing.done() else "  (still publishing)")
        )
        if publishing.done() and lag == 0:
            caught_up = True
            break
    published = await publishing
    service.request_stop()
    code = await consumer
    outcomes, reasons = _counts(service)

    console.rule("summary")
    ok = _print_summary(console, published, outcomes, reasons)
    ends, committed = await _offsets(settings)
    console.print(
        f"lag after the run: [bold]{_lag(ends, committed)}[/] records over {len(ends)} partitions"
    )
    executions, tenants = await _sample_rows(settings)
    rows = Table(title='Newest "ExecutionRecord" rows with a snapshot and a cost')
    for column in ("requestId", "tenantId", "primary", "fallbacks", "cost USD"):
        rows.add_column(column)
    for r in executions:
        rows.add_row(
            r["requestId"],
            r["tenantId"],
            f"{r['provider']}/{r['model']}",
            str(r["fallbacks"]),
            r["cost"],
        )
    console.print(rows)
    policies = Table(title='Newest "Tenant" routing policies')
    for column in ("id", "allowed", "preferred", "max USD/request"):
        policies.add_column(column)
    for r in tenants:
        allowed = ", ".join(json.loads(r["allowed"])) or "(all)"
        policies.add_row(r["id"], allowed, r["preferred"] or "-", r["max_cost"] or "-")
    console.print(policies)
    console.print(
        f"consumer stopped with exit code {code}; {time.monotonic() - started:.1f} s in all"
    )
    if not caught_up:
        console.print("[red]the consumer did not catch up within 90 s[/]")
    return 0 if (ok and caught_up and code == 0) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m consumer.demo.run``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000, help="about how many records")
    parser.add_argument("--rate", type=float, default=2500.0, help="records per second")
    parser.add_argument("--seed", type=int, default=7, help="same seed, same sample")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # The demo prints its own account; the service's routine log lines would drown it.
    configure_logging("WARNING", settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(settings, events=args.events, rate=args.rate, seed=args.seed))
    return 130


if __name__ == "__main__":
    sys.exit(main())

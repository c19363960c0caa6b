"""``routing-persistence demo`` (what ``make run`` runs): the whole service, fed and checked.

:func:`run` creates the topics when missing, migrates the database, seeds the sample's tenants
and pre-existing execution records (Projects C and A), starts the consumer in this process (the
code of ``routing-persistence run``), publishes the sample (:mod:`.sample`), then creates the
late execution records (:data:`LATE_SHARE` of them: Project A creating its row after the events,
which the consumer held meanwhile), waits until the group has committed every end offset and
nothing is held any more, prints what happened, and stops the consumer gracefully. With
``publish_only`` it seeds, publishes and creates the late rows, nothing else (the consumer runs
elsewhere).

Exit codes: 0 when everything matched (the group caught up and every held field was released
within ``CATCH_UP_S``, every bad record was dead-lettered with its expected reason, every valid
record applied, stale or held and every held one released, every tombstone ignored, the
consumer stopped cleanly), 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections import Counter
from typing import Final

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from consumer.db import create_engine
from consumer.demo.sample import (
    Sample,
    SampleRecord,
    create_execution_records,
    make_sample,
    publish_sample,
    seed_database,
)
from consumer.kafka import client_options
from consumer.logs import configure_logging
from consumer.ops.lag import measure_lag
from consumer.ops.migrate import upgrade
from consumer.outcomes import UNKNOWN_TYPE, Outcome
from consumer.pipeline.held import held_stats
from consumer.service.service import Service
from consumer.settings import Settings
from schemas import EventType

__all__ = ["CATCH_UP_S", "LATE_SHARE", "run"]

#: Partitions of the topics the demo creates.
_PARTITIONS: Final = 6
#: How long the consumer may take to catch up once everything is published.
CATCH_UP_S: Final = 90.0
#: Share of the sample's execution records that Project A creates after their events.
LATE_SHARE: Final = 0.2
_INTERRUPTED: Final = 130


async def _ensure_topics(settings: Settings, console: Console) -> None:
    """Create the four topics when missing; they accept the sample's oversized record."""
    names = [*settings.source_topics, settings.topic_dlq]
    max_bytes = str(2 * settings.max_payload_bytes + 65_536)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        missing = [n for n in names if n not in set(await admin.list_topics())]
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
    console.print(
        f"[bold]topics[/]   {'created ' + ', '.join(missing) if missing else 'all present'}"
    )


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - the same address the service binds
        except OSError:
            return False
    return True


def _counts(
    service: Service,
) -> tuple[Counter[tuple[str, str]], Counter[str], Counter[str]]:
    """(type, outcome) -> records, reason -> dead letters and outcome -> released held fields,
    from the service's own metrics."""
    outcomes: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    released: Counter[str] = Counter()
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "routing_consumer_events_total":
                outcomes[(sample.labels["type"], sample.labels["outcome"])] += int(sample.value)
            elif sample.name == "routing_consumer_dead_letters_total":
                reasons[sample.labels["reason"]] += int(sample.value)
            elif sample.name == "routing_consumer_released_total":
                released[sample.labels["outcome"]] += int(sample.value)
    return outcomes, reasons, released


def _print_summary(
    console: Console,
    published: list[SampleRecord],
    outcomes: Counter[tuple[str, str]],
    reasons: Counter[str],
    released: Counter[str],
) -> bool:
    """Print the tables; True when the counts match what was published."""
    counted = Outcome.counted()
    table = Table(title="What the consumer did, per event type")
    table.add_column("type")
    for outcome in counted:
        table.add_column(outcome.replace("_", "-"), justify="right")
    types = [str(t) for t in EventType] + [UNKNOWN_TYPE]
    for event_type in types:
        row = [outcomes[(event_type, o)] for o in counted]
        if any(row):
            table.add_row(event_type, *(str(n) for n in row))
    table.add_row("[bold]total[/]", *(str(sum(outcomes[(t, o)] for t in types)) for o in counted))
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
    counted = (Outcome.APPLIED, Outcome.STALE, Outcome.HELD)
    handled = sum(outcomes[(t, o)] for t in types for o in counted)
    held = sum(outcomes[(t, Outcome.HELD)] for t in types)
    settled = released[Outcome.APPLIED] + released[Outcome.STALE]
    ignored = sum(outcomes[(t, Outcome.IGNORED)] for t in types)
    console.print(
        f"held until their row existed: {held} snapshots and costs; released once Project A "
        f"created the rows: {released[Outcome.APPLIED]} applied + {released[Outcome.STALE]} "
        f"stale, {released[Outcome.DEAD_LETTERED]} dead-lettered"
    )
    ok = expected == reasons and handled == valid and ignored == tombstones and settled == held
    console.print(
        f"valid records sent {valid} = applied + stale + held {handled}; held {held} = released "
        f"{settled}; tombstones sent {tombstones} = ignored {ignored}; bad records sent "
        f"{sum(expected.values())} = dead-lettered {sum(reasons.values())}: "
        + ("[green]all accounted for[/]" if ok else "[red]MISMATCH[/]")
    )
    return ok


async def _newest_rows(settings: Settings) -> tuple[Table, Table]:
    """The newest rows the demo wrote, as tables."""
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
    rows = Table(title='Newest "ExecutionRecord" rows with a snapshot and a cost')
    for column in ("requestId", "tenantId", "primary", "fallbacks", "cost USD"):
        rows.add_column(column)
    for r in executions:
        primary = f"{r['provider']}/{r['model']}"
        rows.add_row(r["requestId"], r["tenantId"], primary, str(r["fallbacks"]), r["cost"])
    policies = Table(title='Newest "Tenant" routing policies')
    for column in ("id", "allowed", "preferred", "max USD/request"):
        policies.add_column(column)
    for r in tenants:
        allowed = ", ".join(json.loads(r["allowed"])) or "(all)"
        policies.add_row(r["id"], allowed, r["preferred"] or "-", r["max_cost"] or "-")
    return rows, policies


async def _publish_only(settings: Settings, sample: Sample, rate: float, seed: int) -> int:
    published = await publish_sample(settings, sample.records, rate=rate)
    await create_execution_records(settings, sample.late_execution_records)
    bad = sum(1 for r in published if r.reason is not None)
    print(
        f"published {len(published)} records ({bad} meant for the dead-letter topic) "
        f"to {settings.topic_snapshots}, {settings.topic_costs}, {settings.topic_policies} "
        f"(seed {seed}); then created {len(sample.late_execution_records)} late execution records"
    )
    return 0


async def _publish_then_create_rows(
    settings: Settings, sample: Sample, rate: float, console: Console
) -> list[SampleRecord]:
    """Publish the sample; once the consumer has caught up (the late rows' events are held by
    then), create the late execution records as Project A would."""
    published = await publish_sample(settings, sample.records, rate=rate)
    deadline = time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline:
        if (await measure_lag(settings)).total_lag == 0:
            break
        await asyncio.sleep(0.5)
    late = sample.late_execution_records
    await create_execution_records(settings, late)
    console.print(
        f"[bold]project A[/] created {len(late)} execution records after their events "
        "(the consumer held those snapshots and costs until now)"
    )
    return published


async def _consume_sample(
    settings: Settings, console: Console, sample: Sample, rate: float, stop: asyncio.Event
) -> int:
    """Run the consumer, publish, wait for it to catch up, print the summary; the exit code."""
    engine = create_engine(settings, poolclass=NullPool)  # counts what is held, nothing else
    try:
        return await _watch_sample(settings, console, sample, rate, stop, engine)
    finally:
        await engine.dispose()


async def _watch_sample(
    settings: Settings,
    console: Console,
    sample: Sample,
    rate: float,
    stop: asyncio.Event,
    engine: AsyncEngine,
) -> int:
    port = settings.metrics_port if _port_is_free(settings.metrics_port) else 0
    service = Service(settings, metrics_port=port)
    consumer = asyncio.create_task(service.run())
    while not service.health.is_ready():
        if consumer.done():
            console.print(f"[red]the consumer exited with {consumer.result()}[/]")
            return 1
        if stop.is_set():
            service.request_stop()
            await consumer
            return _INTERRUPTED
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
    publishing = asyncio.create_task(_publish_then_create_rows(settings, sample, rate, console))
    caught_up = False
    deadline: float | None = None
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        await asyncio.sleep(1.0)
        lag = (await measure_lag(settings)).total_lag
        held = (await held_stats(engine)).total if publishing.done() else None
        handled = sum(_counts(service)[0].values())
        note = "" if publishing.done() else "  (still publishing)"
        holding = "" if held is None else f", held {held:>5}"
        console.print(f"  handled {handled:>6} records, lag {lag:>6}{holding}{note}")
        if publishing.done():
            caught_up = lag == 0 and held == 0
            deadline = deadline or time.monotonic() + CATCH_UP_S
            if caught_up:
                break
    if stop.is_set():
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        service.request_stop()
        console.print(f"interrupted; the consumer stopped with exit code {await consumer}")
        return _INTERRUPTED
    published = await publishing
    service.request_stop()
    code = await consumer

    console.rule("summary")
    outcomes, reasons, released = _counts(service)
    ok = _print_summary(console, published, outcomes, reasons, released)
    report = await measure_lag(settings)
    console.print(
        f"lag after the run: [bold]{report.total_lag}[/] records over "
        f"{len(report.partitions)} partitions"
    )
    for table in await _newest_rows(settings):
        console.print(table)
    console.print(f"consumer stopped with exit code {code}")
    if not caught_up:
        console.print(
            f"[red]the consumer did not catch up (or release every held field) within "
            f"{CATCH_UP_S:g} s[/]"
        )
    return 0 if (ok and caught_up and code == 0) else 1


async def run(
    settings: Settings, *, events: int, rate: float, seed: int, publish_only: bool = False
) -> int:
    """The demo (see the module docstring); returns the exit code.

    ``events`` is about how many records to publish, ``rate`` how many per second (0: at once),
    ``seed`` makes the sample reproducible.
    """
    sample = make_sample(
        events, seed=seed, max_payload_bytes=settings.max_payload_bytes, late_share=LATE_SHARE
    )
    if publish_only:
        await seed_database(settings, sample)
        return await _publish_only(settings, sample, rate, seed)
    # The demo prints its own account; the service's routine log lines would drown it.
    configure_logging("WARNING", settings.log_format)
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
    await seed_database(settings, sample)
    console.print(
        f'[bold]tenants[/]  {len(sample.tenants)} in "Tenant", '
        f"{len(sample.execution_records)} execution records created before (Projects C and A); "
        f"{len(sample.late_execution_records)} more are created after their events"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        code = await _consume_sample(settings, console, sample, rate, stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    console.print(f"{time.monotonic() - started:.1f} s in all")
    return code

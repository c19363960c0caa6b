"""``routing-persistence replay``: re-read source topics into the database through ``run``'s path.

Reads the chosen topics and partitions from the beginning or from ``--since`` up to the end
offsets taken at its start, as ``run`` reads (``read_committed``), and hands each batch to
:class:`~consumer.pipeline.batch.BatchProcessor`. Safe beside a live ``run``: no consumer group
(the main group's offsets never move, no rebalance), writes under the version guard (an older
event is ``stale``), dead letters marked ``dlq.group=<group>.replay``. ``--until`` skips records
stamped after it (``after_until``); ``--dry-run`` validates and counts, writing nothing.

Exit codes (:func:`replay_topics`): 0 done, 1 failed part-way (rerunning is harmless), 2 bad
usage or Kafka unreachable at the start, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from aiokafka import AIOKafkaConsumer
from rich.console import Console

from consumer.errors import BrokerUnavailable, ConfigurationError, describe_error
from consumer.logs import get_logger
from consumer.ops._kafka import (
    STALL_TIMEOUT_S,
    OffsetRange,
    bounded,
    offset_range,
    open_clients,
    read_range,
    timestamp_ms,
)
from consumer.ops._render import ProgressReport, print_table, stderr_console
from consumer.outcomes import Outcome
from consumer.settings import Settings

__all__ = [
    "REPLAY_GROUP_SUFFIX",
    "STALL_TIMEOUT_S",
    "ReplaySummary",
    "replay_group",
    "replay_topics",
]

#: ``dlq.group`` of the dead letters a replay writes: ``<group>`` + this.
REPLAY_GROUP_SUFFIX: Final = ".replay"

_log = get_logger(__name__)


def replay_group(settings: Settings) -> str:
    """The ``dlq.group`` marker of a replay's dead letters: ``<group>.replay``."""
    return settings.group_id + REPLAY_GROUP_SUFFIX


@dataclass
class ReplaySummary:
    """What a replay did: outcomes per (event type, outcome), records read, time taken."""

    total: int = 0
    read: int = 0
    after_until: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def _run(
    settings: Settings,
    consumer: AIOKafkaConsumer,
    span: OffsetRange,
    until: datetime | None,
    dry_run: bool,
    console: Console,
) -> ReplaySummary:
    from consumer.db import create_engine
    from consumer.pipeline.batch import BatchProcessor
    from consumer.pipeline.deadletter import new_dead_letter_producer

    summary = ReplaySummary(total=span.size)
    until_ms = timestamp_ms(until) if until is not None else None
    engine = create_engine(settings, application_name="routing-persistence replay")
    producer = None
    if not dry_run:
        producer = new_dead_letter_producer(settings)
        await producer.start()
    try:
        processor = BatchProcessor(
            settings, engine, producer, group_id=replay_group(settings), dry_run=dry_run
        )
        started = time.monotonic()
        with ProgressReport(console, summary.total, label="replay") as progress:
            async for fetched in read_range(consumer, span, max_records=settings.batch_max_records):
                read = sum(len(records) for records in fetched.values())
                batch = fetched
                if until_ms is not None:
                    batch = {
                        tp: kept
                        for tp, records in fetched.items()
                        if (kept := [r for r in records if r.timestamp <= until_ms])
                    }
                    summary.after_until += read - sum(len(r) for r in batch.values())
                if batch:
                    result = await processor.process(batch)
                    for (_, event_type, outcome), n in result.outcomes.items():
                        summary.outcomes[(event_type, outcome)] += n
                    summary.dead_letter_reasons.update(result.dead_letter_reasons)
                summary.read += read
                progress.advance(read)
            progress.complete()
        summary.seconds = time.monotonic() - started
    finally:
        if producer is not None:
            await producer.stop()
        await engine.dispose()
    return summary


_COLUMNS: Final = tuple(str(o) for o in Outcome.counted())
_DRY_RUN_COLUMNS: Final = (str(Outcome.VALID), str(Outcome.DEAD_LETTERED), str(Outcome.IGNORED))


def _print_summary(
    console: Console, summary: ReplaySummary, *, dry_run: bool, group: str, marker: str
) -> None:
    columns = _DRY_RUN_COLUMNS if dry_run else _COLUMNS
    types = sorted({event_type for event_type, _ in summary.outcomes})
    header = ("TYPE", *(c.upper() for c in columns), "TOTAL")
    rows = []
    for event_type in [*types, "TOTAL"]:
        counts = [
            sum(
                n
                for (t, o), n in summary.outcomes.items()
                if o == outcome and event_type in ("TOTAL", t)
            )
            for outcome in columns
        ]
        rows.append([event_type, *map(str, counts), str(sum(counts))])
    rate = summary.read / summary.seconds if summary.seconds > 0 else 0.0
    title = (
        f"{'dry run: nothing written; ' if dry_run else ''}replayed {summary.read} records "
        f"in {summary.seconds:.1f} s ({rate:.0f} rec/s)"
    )
    styles = [None] * len(types) + ["bold"]
    print_table(console, header, rows, title=title, numeric=header[1:], styles=styles)
    notes = []
    if summary.after_until:
        notes.append(f"{summary.after_until} records stamped after --until were skipped")
    if summary.dead_letter_reasons:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(summary.dead_letter_reasons.items()))
        verb = "would be dead-lettered" if dry_run else f"dead-lettered (dlq.group={marker})"
        notes.append(f"{verb}: {reasons}")
    notes.append(f"the offsets of group {group!r} were not touched")
    sys.stdout.write("".join(f"{n}\n" for n in notes))
    sys.stdout.flush()


async def replay_topics(
    settings: Settings,
    *,
    since: datetime | None,
    until: datetime | None = None,
    topics: Sequence[str] | None = None,
    partitions: Sequence[int] | None = None,
    dry_run: bool = False,
) -> int:
    """Replay and return the exit code (see the module docstring).

    ``since=None`` means from the beginning; naive datetimes are UTC. ``topics`` defaults to the
    three source topics. Reading stops at the end offsets taken at the start; what was applied
    stays applied whatever happens next, and running it again is harmless.
    """
    errors = stderr_console()
    console = Console(soft_wrap=True)
    chosen = list(dict.fromkeys(topics or settings.source_topics))
    if since is not None and until is not None and timestamp_ms(until) < timestamp_ms(since):
        errors.print("replay: --until is before --since: nothing to replay")
        return 2
    try:
        async with open_clients(settings, operation="replay") as clients:
            async with bounded(
                f"cannot read offsets from Kafka at {settings.kafka_bootstrap_servers}",
                operation="replay",
            ):
                tps = await clients.partitions(chosen, partitions)
                span = await offset_range(clients.consumer, tps, since=since, until=until)
            _log.info(
                "replay.started",
                topics=chosen,
                partitions=len(span.starts),
                records=span.size,
                dry_run=dry_run,
                since=since.isoformat() if since else None,
                until=until.isoformat() if until else None,
            )
            try:
                summary = await _run(settings, clients.consumer, span, until, dry_run, console)
            except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task
                errors.print(
                    "replay: interrupted; what was applied stays applied, rerun is harmless"
                )
                return 130
            except Exception as exc:
                _log.error("replay.failed", error=describe_error(exc))
                errors.print(
                    f"replay: failed: {describe_error(exc)}; what was applied stays applied, "
                    "running replay again is harmless"
                )
                return 1
    except (BrokerUnavailable, ConfigurationError) as exc:
        errors.print(f"replay: {exc}")
        return 2
    _log.info("replay.finished", records=summary.read, seconds=round(summary.seconds, 3))
    _print_summary(
        console, summary, dry_run=dry_run, group=settings.group_id, marker=replay_group(settings)
    )
    return 0

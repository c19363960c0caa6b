"""``routing-persistence replay``: re-read the source topics into the database (backfill, repair).

Replay reads the configured topics (or ``--topic``/``--partition``) from the beginning or from
``--since`` (the first record stamped at or after it, via ``offsets_for_times``) up to the end
offsets taken when it starts, and hands every batch to
:class:`~consumer.pipeline.batch.BatchProcessor`: the decode and apply path of ``run``,
nothing else.

Safe beside a live ``run``:

* it uses a **manual assignment and no consumer group**: it never joins the main group (no
  rebalance there) and commits no offset anywhere, so the main group's offsets never move;
* writes go through the version guard: an event older than what is stored is ``stale`` and
  changes nothing, so a replay can only fill in what is missing or repair what is older;
* the dead letters it writes carry ``dlq.group = "<group>.replay"``, telling them apart from the
  live consumer's (the same event may then be dead-lettered twice, once by each).

``--until`` ignores records stamped after that time: reading stops at the first offset stamped
after it (``offsets_for_times``) and any later-stamped record before that offset (producer
clocks are not monotonic) is skipped, counted as ``after_until``. ``--dry-run`` decodes and
validates only: no database write, no dead letter (``valid`` counts the events a real run
would offer to the database).

Progress goes to stdout: a rich progress bar (records/s, ETA) on a terminal, a plain line every
few seconds otherwise; then a summary per event type.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from consumer.errors import MissingTopicsError
from consumer.kafka import client_options, describe_partitions
from consumer.logs import get_logger
from consumer.settings import Settings

__all__ = [
    "REPLAY_GROUP_SUFFIX",
    "ReplayError",
    "ReplaySummary",
    "partitions_of",
    "read_ranges",
    "replay_group",
    "replay_topics",
    "start_offsets",
    "timestamp_ms",
]

#: ``dlq.group`` of the dead letters a replay writes: ``<group>`` + this.
REPLAY_GROUP_SUFFIX = ".replay"
#: Bound of each admin call at the start (metadata, offsets).
CALL_TIMEOUT_S = 15.0
#: Without a terminal, one progress line per this many seconds.
PLAIN_PROGRESS_EVERY_S = 5.0
#: Reading fails when no record arrives for this long although some are still expected.
STALL_TIMEOUT_S = 15.0


def timestamp_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def start_offsets(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    ends: Mapping[TopicPartition, int],
    since: datetime | None,
) -> dict[TopicPartition, int]:
    """Where reading starts: the log start, or the first record at or after ``since``.

    A partition with nothing at or after ``since`` starts at its end (nothing to read).
    """
    if since is None:
        return dict(await consumer.beginning_offsets(tps))
    found = await consumer.offsets_for_times({tp: timestamp_ms(since) for tp in tps})
    return {tp: found[tp].offset if found[tp] is not None else ends[tp] for tp in tps}


async def read_ranges(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    *,
    max_records: int = 5000,
    timeout_ms: int = 500,
) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    """Yield batches of the records at offsets ``[starts[tp], ends[tp])`` of each partition.

    ``consumer`` must be started and group-less; this assigns it the partitions with something to
    read (a manual assignment: nothing is committed anywhere) and stops when every partition's
    position has reached its end offset. Raises ``TimeoutError`` when no record arrives for
    ``STALL_TIMEOUT_S`` while some are still expected (broker gone, records deleted).
    """
    remaining = {tp for tp in starts if ends[tp] > starts[tp]}
    if not remaining:
        return
    consumer.assign(sorted(remaining))
    for tp in remaining:
        consumer.seek(tp, starts[tp])
    # Only time spent waiting for records counts towards a stall: the caller may take long
    # over a batch (the database restarting) between two fetches.
    waiting_since: float | None = None
    while remaining:
        async with asyncio.timeout(STALL_TIMEOUT_S):
            fetched = await consumer.getmany(
                *sorted(remaining), timeout_ms=timeout_ms, max_records=max_records
            )
        if fetched:
            waiting_since = None
        elif waiting_since is None:
            waiting_since = time.monotonic()
        else:
            _check_stall(waiting_since)
        batch: dict[TopicPartition, list[Any]] = {}
        for tp, records in fetched.items():
            kept = [r for r in records if r.offset < ends[tp]]
            if kept:
                batch[tp] = kept
        for tp in list(remaining):
            # position() also covers gaps (compaction, transaction markers) before the end.
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
                consumer.pause(tp)
        if batch:
            yield batch


def _check_stall(waiting_since: float) -> None:
    if time.monotonic() - waiting_since > STALL_TIMEOUT_S:
        raise TimeoutError(f"no record for {STALL_TIMEOUT_S:g} s before the end offsets")


_log = get_logger(__name__)


class ReplayError(Exception):
    """Replay cannot start (unknown topic or partition, broker unreachable, bad time range)."""


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


# --- planning -------------------------------------------------------------------------------


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, sorted; raises ReplayError naming the missing topics.

    Never creates a topic (see :func:`consumer.kafka.describe_partitions`).
    """
    admin = AIOKafkaAdminClient(
        **client_options(settings), request_timeout_ms=int(CALL_TIMEOUT_S * 1000)
    )
    try:
        await admin.start()
        return await describe_partitions(admin, topics)
    except MissingTopicsError as exc:
        raise ReplayError(str(exc)) from exc
    finally:
        await admin.close()


async def _plan(
    settings: Settings,
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    partitions: Sequence[int] | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Start and end offsets of every partition to replay (raises ReplayError on bad input)."""
    tps = [
        tp
        for tp in await partitions_of(settings, topics)
        if partitions is None or tp.partition in partitions
    ]
    if partitions is not None:
        absent = sorted(set(partitions) - {tp.partition for tp in tps})
        if absent:
            raise ReplayError(
                f"partition(s) {', '.join(map(str, absent))} exist in none of {', '.join(topics)}"
            )
    ends = dict(await consumer.end_offsets(tps))
    starts = await start_offsets(consumer, tps, ends, since)
    if until is not None:
        after = await consumer.offsets_for_times({tp: timestamp_ms(until) + 1 for tp in tps})
        for tp in tps:
            if after[tp] is not None:
                ends[tp] = min(ends[tp], after[tp].offset)
    return starts, ends


# --- progress -------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Records per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rec/s" if speed is None else f"{speed:,.0f} rec/s", style="cyan")


class _Progress:
    """A rich bar on a terminal, else a plain line every ``PLAIN_PROGRESS_EVERY_S``."""

    def __init__(self, console: Console, total: int) -> None:
        self._console = console
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._task: Any = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("replay"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("replay", total=self._total)
        else:
            self._line()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        else:
            self._line()

    def advance(self, records: int) -> None:
        self._done += records
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)
        elif time.monotonic() - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        share = 100.0 * self._done / self._total if self._total else 100.0
        eta = f"{(self._total - self._done) / rate:.0f}s" if rate > 0 else "-"
        sys.stdout.write(
            f"replay: {self._done}/{self._total} records ({share:.1f}%), "
            f"{rate:.0f} rec/s, elapsed {elapsed:.0f}s, eta {eta}\n"
        )
        sys.stdout.flush()


# --- the replay -----------------------------------------------------------------------------


async def _run(
    settings: Settings,
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    until: datetime | None,
    dry_run: bool,
    console: Console,
) -> ReplaySummary:
    from consumer.db import create_engine
    from consumer.pipeline.batch import BatchProcessor
    from consumer.pipeline.deadletter import new_dead_letter_producer

    summary = ReplaySummary(total=sum(max(0, ends[tp] - starts[tp]) for tp in starts))
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
        with _Progress(console, summary.total) as progress:
            async for fetched in read_ranges(
                consumer, starts, ends, max_records=settings.batch_max_records
            ):
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
        summary.seconds = time.monotonic() - started
    finally:
        if producer is not None:
            await producer.stop()
        await engine.dispose()
    return summary


_OUTCOME_COLUMNS = ("applied", "stale", "dead_lettered", "ignored")
_DRY_RUN_COLUMNS = ("valid", "dead_lettered", "ignored")


def _print_summary(
    console: Console, summary: ReplaySummary, *, dry_run: bool, group: str, marker: str
) -> None:
    columns = _DRY_RUN_COLUMNS if dry_run else _OUTCOME_COLUMNS
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
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, justify="left" if name == "TYPE" else "right")
        for row in rows:
            table.add_row(*row, style="bold" if row[0] == "TOTAL" else None)
        console.print(table)
    else:
        from consumer.ops.lag import render_plain_table

        sys.stdout.write(title + "\n" + render_plain_table(header, rows) + "\n")
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
    """Replay and return the exit code.

    ``since=None`` means from the beginning; naive datetimes are UTC. ``topics`` defaults to the
    three source topics. Returns 0 when every partition reached the end offsets taken at the
    start; 2 on bad usage (unknown topic or partition, ``until`` before ``since``) or when Kafka
    cannot be reached at the start; 1 when the replay failed part-way (a message on stderr),
    130 when interrupted: what was applied stays applied and running it again is harmless.
    """
    errors = Console(stderr=True, soft_wrap=True)
    console = Console(soft_wrap=True)
    chosen = list(dict.fromkeys(topics or settings.source_topics))
    if since is not None and until is not None and timestamp_ms(until) < timestamp_ms(since):
        errors.print("replay: --until is before --since: nothing to replay")
        return 2
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(CALL_TIMEOUT_S * 1000),
    )
    try:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await consumer.start()
                starts, ends = await _plan(settings, consumer, chosen, partitions, since, until)
        except (KafkaError, OSError, TimeoutError) as exc:
            errors.print(
                f"replay: cannot read offsets from Kafka at {settings.kafka_bootstrap_servers}: "
                f"{_describe(exc)}",
                markup=False,
                highlight=False,
            )
            return 2
        except ReplayError as exc:
            errors.print(f"replay: {exc}", markup=False, highlight=False)
            return 2
        _log.info(
            "replay.started",
            topics=chosen,
            partitions=len(starts),
            records=sum(max(0, ends[tp] - starts[tp]) for tp in starts),
            dry_run=dry_run,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
        )
        try:
            summary = await _run(settings, consumer, starts, ends, until, dry_run, console)
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task
            errors.print("replay: interrupted; what was applied stays applied, rerun is harmless")
            return 130
        except Exception as exc:
            _log.exception("replay.failed")
            errors.print(
                f"replay: failed: {_describe(exc)}; what was applied stays applied, running "
                "replay again is harmless",
                markup=False,
                highlight=False,
            )
            return 1
    finally:
        await consumer.stop()
    _log.info("replay.finished", records=summary.read, seconds=round(summary.seconds, 3))
    _print_summary(
        console, summary, dry_run=dry_run, group=settings.group_id, marker=replay_group(settings)
    )
    return 0


def _describe(exc: BaseException) -> str:
    """One secret-free line: SQLAlchemy's own text (statement, parameters) is left out."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {CALL_TIMEOUT_S:g} s"
    inner: BaseException = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    text = " ".join(lines[0].split())[:300] if lines else ""
    name = type(inner).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name

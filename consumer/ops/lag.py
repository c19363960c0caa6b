"""``routing-persistence lag``: how far the consumer group is behind, per topic and partition.

What ``kafka-consumer-groups --describe`` shows, plus the age of the oldest record not yet
committed (LAG-SECONDS), as a table, ``--json`` or a live ``--watch`` view. End offsets are the
last stable offsets: what ``run`` (``read_committed``) can consume. A partition where the group
has committed nothing (or below the log start) counts from the log start, where ``run`` starts.

Exit codes (:func:`show_lag`): 0 within thresholds, 1 over ``--max-lag`` or
``--max-lag-seconds``, 2 bad usage, Kafka unreachable or a topic missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumer.errors import BrokerUnavailable, ConfigurationError
from consumer.ops._kafka import Clients, bounded, open_clients
from consumer.ops._render import render_plain_table, rich_table, stderr_console
from consumer.settings import Settings

__all__ = [
    "WATCH_INTERVAL_S",
    "LagReport",
    "PartitionLag",
    "measure_lag",
    "show_lag",
]

#: How long the LAG-SECONDS fetch may take in all before the missing ages are reported unknown.
_AGE_FETCH_TIMEOUT_S: Final = 10.0
#: Refresh period of ``lag --watch``.
WATCH_INTERVAL_S: Final = 2.0
#: Only the first record of each lagging partition is needed (the broker still returns a whole
#: first batch when it is larger).
_AGE_FETCH_BYTES: Final = 64 * 1024

_COLUMNS = (
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "LAG-SECONDS",
    "CONSUMER-ID",
    "HOST",
)
_NUMERIC = frozenset({"PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS"})


@dataclass(frozen=True)
class PartitionLag:
    """One row of the report.

    ``committed`` is ``None`` when the group has no offset for the partition; ``lag_seconds`` is
    the age of the record at the committed offset (0.0 when ``lag`` is 0, ``None`` when that
    record could not be fetched in time); ``consumer_id``/``host``/``client_id`` are ``None``
    when no live member owns the partition.
    """

    group: str
    topic: str
    partition: int
    committed: int | None
    log_start: int
    log_end: int
    lag: int
    lag_seconds: float | None
    consumer_id: str | None
    host: str | None
    client_id: str | None


@dataclass(frozen=True)
class LagReport:
    """The group's lag at ``measured_at`` (one row per partition, sorted by topic, partition)."""

    group: str
    state: str
    measured_at: datetime
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        """Records not yet committed, over all partitions."""
        return sum(p.lag for p in self.partitions)

    @property
    def max_lag_seconds(self) -> float:
        """The largest known LAG-SECONDS (0.0 when every partition is caught up)."""
        return max((p.lag_seconds or 0.0 for p in self.partitions), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the report, with ``total_lag`` and ``max_lag_seconds``."""
        return {
            "group": self.group,
            "state": self.state,
            "measured_at": self.measured_at.isoformat(),
            "total_lag": self.total_lag,
            "max_lag_seconds": round(self.max_lag_seconds, 3),
            "partitions": [asdict(p) for p in self.partitions],
        }


# --- measuring ------------------------------------------------------------------------------


async def _owners(
    admin: AIOKafkaAdminClient, group: str
) -> tuple[str, dict[TopicPartition, tuple[str, str, str]]]:
    """The group's state and, per assigned partition, (member id, host, client id)."""
    responses = await admin.describe_consumer_groups([group])
    owners: dict[TopicPartition, tuple[str, str, str]] = {}
    state = "Unknown"
    for response in responses:
        for described in response.to_object()["groups"]:
            state = described["state"] or state
            for member in described["members"]:
                raw = member["member_assignment"]
                if not raw:  # a member between join and sync has no assignment yet
                    continue
                assignment = ConsumerProtocolMemberAssignment.decode(raw)
                for tp in assignment.partitions():
                    owners[tp] = (
                        member["member_id"],
                        member["client_host"].lstrip("/"),
                        member["client_id"],
                    )
    return state, owners


async def _record_ages(
    consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int], now_ms: int
) -> dict[TopicPartition, float]:
    """Seconds since the timestamp of the first committed record at or after each position.

    One fetch round per leader for all partitions at once; a partition whose record does not
    arrive within ``_AGE_FETCH_TIMEOUT_S`` is absent from the result.
    """
    ages: dict[TopicPartition, float] = {}
    if not positions:
        return ages
    consumer.assign(list(positions))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + _AGE_FETCH_TIMEOUT_S
    while len(ages) < len(positions) and time.monotonic() < deadline:
        fetched = await consumer.getmany(timeout_ms=200)
        for tp, records in fetched.items():
            if records and tp not in ages:
                ages[tp] = max(0.0, (now_ms - records[0].timestamp) / 1000)
                consumer.pause(tp)
    consumer.assign([])
    return ages


def _open(settings: Settings) -> contextlib.AbstractAsyncContextManager[Clients]:
    return open_clients(
        settings, operation="lag", max_partition_fetch_bytes=_AGE_FETCH_BYTES, fetch_max_wait_ms=100
    )


async def measure_lag(settings: Settings, *, clients: Clients | None = None) -> LagReport:
    """Measure ``settings.group_id``'s lag on the three source topics.

    ``clients`` lets ``--watch`` reuse its connections; without it, clients are opened and closed
    here. Raises :class:`~consumer.errors.BrokerUnavailable` when Kafka cannot be reached or a
    call exceeds its bound, :class:`~consumer.errors.MissingTopicsError` when a topic is missing.
    """
    if clients is None:
        async with _open(settings) as opened:
            return await measure_lag(settings, clients=opened)
    admin, consumer = clients.admin, clients.consumer
    group = settings.group_id
    async with bounded(f"measuring the lag of group {group!r} failed", operation="lag"):
        tps = await clients.partitions(settings.source_topics)
        committed_raw, (state, owners), ends, starts = await asyncio.gather(
            admin.list_consumer_group_offsets(group),
            _owners(admin, group),
            consumer.end_offsets(tps),
            consumer.beginning_offsets(tps),
        )
    now_ms = int(time.time() * 1000)
    committed = {tp: meta.offset for tp, meta in committed_raw.items() if meta.offset >= 0}
    positions = {
        tp: max(committed.get(tp, starts[tp]), starts[tp])
        for tp in tps
        if ends[tp] > max(committed.get(tp, starts[tp]), starts[tp])
    }
    async with bounded(f"measuring the lag of group {group!r} failed", operation="lag"):
        ages = await _record_ages(consumer, positions, now_ms)
    rows = []
    for tp in tps:
        lag = ends[tp] - positions[tp] if tp in positions else 0
        owner = owners.get(tp)
        rows.append(
            PartitionLag(
                group=group,
                topic=tp.topic,
                partition=tp.partition,
                committed=committed.get(tp),
                log_start=starts[tp],
                log_end=ends[tp],
                lag=lag,
                lag_seconds=(round(ages[tp], 3) if tp in ages else None) if lag else 0.0,
                consumer_id=owner[0] if owner else None,
                host=owner[1] if owner else None,
                client_id=owner[2] if owner else None,
            )
        )
    return LagReport(group, state, datetime.now(UTC), rows)


# --- rendering ------------------------------------------------------------------------------


def _cells(row: PartitionLag) -> list[str]:
    return [
        row.group,
        row.topic,
        str(row.partition),
        "-" if row.committed is None else str(row.committed),
        str(row.log_end),
        str(row.lag),
        "-" if row.lag_seconds is None else f"{row.lag_seconds:.1f}",
        row.consumer_id or "-",
        row.host or "-",
    ]


def _total_cells(report: LagReport) -> list[str]:
    return [
        "TOTAL",
        "",
        "",
        "",
        "",
        str(report.total_lag),
        f"{report.max_lag_seconds:.1f}",
        "",
        "",
    ]


def _table(
    report: LagReport, max_lag: int | None, max_lag_seconds: float | None, title: str | None
) -> Table:
    """The report as a rich table: lagging rows yellow, rows over a threshold red."""
    styles: list[str | None] = []
    for row in report.partitions:
        too_old = max_lag_seconds is not None and (row.lag_seconds or 0.0) > max_lag_seconds
        styles.append("red" if too_old else ("yellow" if row.lag else None))
    styles.append("bold red" if max_lag is not None and report.total_lag > max_lag else "bold")
    return rich_table(_COLUMNS, _rows(report), title=title, numeric=_NUMERIC, styles=styles)


def _rows(report: LagReport) -> list[list[str]]:
    return [_cells(p) for p in report.partitions] + [_total_cells(report)]


def _verdict(report: LagReport, max_lag: int | None, max_lag_seconds: float | None) -> list[str]:
    """The thresholds exceeded, as sentences (empty when none is)."""
    problems = []
    if max_lag is not None and report.total_lag > max_lag:
        problems.append(f"total lag {report.total_lag} exceeds --max-lag {max_lag}")
    if max_lag_seconds is not None:
        for row in report.partitions:
            if (row.lag_seconds or 0.0) > max_lag_seconds:
                problems.append(
                    f"{row.topic}[{row.partition}] lags {row.lag_seconds:.1f} s, "
                    f"over --max-lag-seconds {max_lag_seconds:g}"
                )
    return problems


async def _watch(
    settings: Settings,
    console: Console,
    max_lag: int | None,
    max_lag_seconds: float | None,
    as_json: bool,
) -> int:
    """Refresh every ``WATCH_INTERVAL_S`` until interrupted; shows consume/produce rates.

    A live rich table on a terminal; otherwise one JSON document (``as_json``) or one plain
    table per refresh, so ``lag --watch | tee`` and log collectors get whole snapshots.
    """
    async with _open(settings) as clients:
        previous: LagReport | None = None
        is_live = console.is_terminal and not as_json
        live = Live(console=console, auto_refresh=False) if is_live else None
        with live if live is not None else contextlib.nullcontext():
            while True:
                try:
                    report = await measure_lag(settings, clients=clients)
                except (BrokerUnavailable, ConfigurationError) as exc:
                    # An incident view must outlive a broker blip: say so and try again.
                    stderr_console().print(f"lag: {exc}; retrying in {WATCH_INTERVAL_S:g} s")
                    await asyncio.sleep(WATCH_INTERVAL_S)
                    continue
                title = _watch_title(report, previous, max_lag, max_lag_seconds)
                if live is not None:
                    live.update(_table(report, max_lag, max_lag_seconds, title), refresh=True)
                elif as_json:
                    sys.stdout.write(json.dumps(report.to_json()) + "\n")
                else:
                    plain_title = title.replace("[bold red]", "").replace("[/]", "")
                    table = render_plain_table(_COLUMNS, _rows(report))
                    sys.stdout.write(f"{plain_title}\n{table}\n\n")
                sys.stdout.flush()
                previous = report
                await asyncio.sleep(WATCH_INTERVAL_S)


def _watch_title(
    report: LagReport,
    previous: LagReport | None,
    max_lag: int | None,
    max_lag_seconds: float | None,
) -> str:
    title = (
        f"group {report.group} ({report.state}) at {report.measured_at:%H:%M:%S} UTC, "
        f"every {WATCH_INTERVAL_S:g} s, Ctrl-C to quit"
    )
    if previous is not None:
        seconds = (report.measured_at - previous.measured_at).total_seconds() or 1.0
        consumed = sum(
            (p.committed or 0) - (q.committed or 0)
            for p, q in zip(report.partitions, previous.partitions, strict=True)
        )
        produced = sum(
            p.log_end - q.log_end
            for p, q in zip(report.partitions, previous.partitions, strict=True)
        )
        consume_rate, produce_rate = consumed / seconds, produced / seconds
        title += f"\nconsumed {consume_rate:.0f} rec/s, produced {produce_rate:.0f} rec/s"
        if report.total_lag and consume_rate > produce_rate:
            title += f", caught up in ~{report.total_lag / (consume_rate - produce_rate):.0f} s"
    problems = _verdict(report, max_lag, max_lag_seconds)
    if problems:
        title += "\n[bold red]" + "; ".join(problems) + "[/]"
    return title


async def show_lag(
    settings: Settings,
    *,
    as_json: bool = False,
    max_lag: int | None = None,
    max_lag_seconds: float | None = None,
    watch: bool = False,
) -> int:
    """Print the lag report and return the exit code.

    0: within thresholds (or none given); 1: total lag over ``max_lag`` or a partition's
    LAG-SECONDS over ``max_lag_seconds`` (a partition whose age is unknown does not count);
    2: bad usage, Kafka unreachable, topic missing (a message on stderr). ``watch`` refreshes a
    live table (or, with ``as_json``, prints one JSON document per line) until Ctrl-C, then 0.
    """
    errors = stderr_console()
    if (max_lag is not None and max_lag < 0) or (
        max_lag_seconds is not None and max_lag_seconds < 0
    ):
        errors.print("lag: --max-lag and --max-lag-seconds must not be negative")
        return 2
    console = Console()
    try:
        if watch:
            try:
                return await _watch(settings, console, max_lag, max_lag_seconds, as_json)
            except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task
                return 0
        report = await measure_lag(settings)
    except (BrokerUnavailable, ConfigurationError) as exc:
        errors.print(f"lag: {exc}")
        return 2
    problems = _verdict(report, max_lag, max_lag_seconds)
    if as_json:
        document = report.to_json()
        document["exceeded"] = problems
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif console.is_terminal:
        console.print(_table(report, max_lag, max_lag_seconds, None))
    else:
        sys.stdout.write(render_plain_table(_COLUMNS, _rows(report)) + "\n")
    for problem in problems:
        errors.print(f"lag: {problem}")
    return 1 if problems else 0

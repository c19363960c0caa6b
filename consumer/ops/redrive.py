"""``routing-persistence dlq redrive``: publish dead letters back to the topics they came from.

Each selected dead letter is published to its ``dlq.topic`` with its original key, value bytes and
headers (those not starting with ``dlq.``: tracing headers, for example), plus
``dlq.redrive-count`` (how many times this event has been redriven) and ``dlq.redrive-of``
(``<dlq topic>/<partition>/<offset>`` of the letter it was made from). The dead-letter topic is
read as ``run`` reads it (``read_committed``, no consumer group, nothing committed) from the
beginning or ``--since`` up to the end offsets taken at the start, twice, streaming: once for
the ``dlq.redrive-of`` marks, once to decide and publish. A letter redriven
:data:`MAX_REDRIVES` times is refused; one that a later letter names in ``dlq.redrive-of`` is
``superseded``. Delivery is at least once (harmless: the consumer is idempotent).

Exit codes (:func:`redrive`): 0 done (refused letters are listed), 1 publishing failed part-way
(rerunning is safe), 2 bad usage, Kafka unreachable or the topic missing, 130 interrupted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console

from consumer.errors import BrokerUnavailable, ConfigurationError, describe_error
from consumer.ops._kafka import (
    CALL_TIMEOUT_S,
    OffsetRange,
    bounded,
    offset_range,
    open_clients,
    read_range,
    timestamp_ms,
)
from consumer.ops._render import print_table, stderr_console
from consumer.pipeline.deadletter import (
    DLQ_HEADER_PREFIX,
    REDRIVE_COUNT_HEADER,
    REDRIVE_OF_HEADER,
    VALUE_OMITTED_HEADER,
    new_dead_letter_producer,
)
from consumer.settings import Settings

__all__ = [
    "MAX_REDRIVES",
    "REDRIVE_COUNT_HEADER",
    "REDRIVE_OF_HEADER",
    "DeadLetter",
    "Decision",
    "RedrivePlanner",
    "redrive",
]

#: A dead letter redriven this many times is refused: it keeps failing for a reason that needs
#: a person, not another attempt.
MAX_REDRIVES: Final = 3
# The dead-letter writer's dlq.* headers describe the failure, not the event: they are not sent
# back with it. Every other header is the original record's, and goes back with it.


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, its headers decoded."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    error: str
    topic: str | None  # the original topic (``dlq.topic``); None when the header is missing
    redrive_count: int
    redrive_of: str | None

    @property
    def coordinates(self) -> str:
        """``<partition>/<offset>`` in the dead-letter topic (what ``dlq.redrive-of`` ends with)."""
        return f"{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Decision:
    """What happens to one selected dead letter: ``redrive``, ``refused`` or ``superseded``."""

    letter: DeadLetter
    action: str
    why: str = ""


def _header(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _parse(
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> DeadLetter:
    by_name = dict(headers)
    count_text = _header(by_name, REDRIVE_COUNT_HEADER)
    try:
        count = int(count_text) if count_text is not None else 0
    except ValueError:
        count = MAX_REDRIVES  # a mangled count is not trusted to be below the limit
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp,
        key=key,
        value=value,
        headers=tuple(headers),
        reason=_header(by_name, "dlq.reason") or "",
        error=_header(by_name, "dlq.error") or "",
        topic=_header(by_name, "dlq.topic"),
        redrive_count=count,
        redrive_of=_header(by_name, REDRIVE_OF_HEADER),
    )


async def _iter_letters(
    consumer: AIOKafkaConsumer, span: OffsetRange, since_ms: int | None
) -> AsyncIterator[DeadLetter]:
    """The dead letters of ``span``, partition by partition in offset order, streamed."""
    async for batch in read_range(consumer, span):
        for tp, records in batch.items():
            for r in records:
                if since_ms is None or r.timestamp >= since_ms:
                    yield _parse(tp.partition, r.offset, r.timestamp, r.key, r.value, r.headers)


class RedrivePlanner:
    """Decides, one dead letter at a time in reading order, what redrive does with it.

    ``superseded`` holds the ``dlq.redrive-of`` values of the whole range (first pass).
    ``limit`` bounds how many are *redriven*; refused and superseded ones are listed but do not
    count. Only the configured source topics are valid targets: a dead letter naming any other
    topic is refused rather than published somewhere unexpected.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        superseded: set[str],
        reasons: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        self._settings = settings
        self._superseded = superseded
        self._wanted = set(reasons) if reasons else None
        self._limit = limit
        self.redriven = 0

    @property
    def is_exhausted(self) -> bool:
        """True once ``limit`` dead letters have been chosen for redrive."""
        return self._limit is not None and self.redriven >= self._limit

    def decide(self, letter: DeadLetter) -> Decision | None:
        """The decision for ``letter``, or None when ``--reason`` does not select it."""
        if self._wanted is not None and letter.reason not in self._wanted:
            return None
        if f"{self._settings.topic_dlq}/{letter.coordinates}" in self._superseded:
            return Decision(letter, "superseded", "redriven before; a newer copy exists")
        if letter.redrive_count >= MAX_REDRIVES:
            return Decision(letter, "refused", f"redriven {letter.redrive_count} times already")
        if letter.topic is None:
            return Decision(letter, "refused", "no dlq.topic header")
        if any(name == VALUE_OMITTED_HEADER for name, _ in letter.headers):
            # Its value was too large for the dead-letter topic: republishing the key alone would
            # be a tombstone. The original is still on its topic (dlq.topic/partition/offset).
            return Decision(letter, "refused", "value omitted (too large for the DLQ topic)")
        if letter.topic not in self._settings.source_topics:
            return Decision(letter, "refused", f"{letter.topic!r} is not a source topic")
        if self.is_exhausted:
            return None
        self.redriven += 1
        return Decision(letter, "redrive")


def _republished_headers(letter: DeadLetter, dlq: str) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in letter.headers if not k.startswith(DLQ_HEADER_PREFIX)]
    return [
        *kept,
        (REDRIVE_COUNT_HEADER, str(letter.redrive_count + 1).encode()),
        (REDRIVE_OF_HEADER, f"{dlq}/{letter.coordinates}".encode()),
    ]


#: Acknowledgements are awaited every this many records (bounds memory, keeps the pipeline full).
_PUBLISH_CHUNK = 1000


class _Publisher:
    """Sends redriven records with acks=all; :meth:`flush` awaits every acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # The dead-letter producer's settings: its request size covers the largest record the
        # consumer accepts, which is what a redriven record is.
        self._producer = new_dead_letter_producer(
            settings, request_timeout_ms=int(CALL_TIMEOUT_S * 1000)
        )
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        async with bounded(
            f"cannot reach Kafka at {self._settings.kafka_bootstrap_servers}", operation="redrive"
        ):
            await self._producer.start()

    async def send(self, letter: DeadLetter) -> None:
        assert letter.topic is not None  # the planner refuses letters without a topic
        self._pending.append(
            await self._producer.send(
                letter.topic,
                value=letter.value,
                key=letter.key,
                headers=_republished_headers(letter, self._settings.topic_dlq),
            )
        )
        if len(self._pending) >= _PUBLISH_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)

    async def stop(self) -> None:
        await self._producer.stop()


def _key_text(key: bytes | None) -> str:
    if key is None:
        return "-"
    text = key.decode("utf-8", errors="replace")
    return text if len(text) <= 40 else text[:37] + "..."


_PLAN_COLUMNS = (
    "DLQ-PARTITION",
    "DLQ-OFFSET",
    "WRITTEN",
    "REASON",
    "TO-TOPIC",
    "KEY",
    "REDRIVES",
    "ACTION",
)


def _plan_rows(decisions: Sequence[Decision]) -> list[list[str]]:
    rows = []
    for d in decisions:
        letter = d.letter
        written = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
        rows.append(
            [
                str(letter.partition),
                str(letter.offset),
                f"{written:%Y-%m-%d %H:%M:%S}",
                letter.reason or "-",
                letter.topic or "-",
                _key_text(letter.key),
                str(letter.redrive_count),
                d.action if not d.why else f"{d.action} ({d.why})",
            ]
        )
    return rows


def _print_plan(console: Console, decisions: Sequence[Decision]) -> None:
    numeric = ("DLQ-PARTITION", "DLQ-OFFSET", "REDRIVES")
    rows = _plan_rows(decisions)
    print_table(console, _PLAN_COLUMNS, rows, title="dead letters selected", numeric=numeric)


def _summary(decisions: Sequence[Decision], *, dry_run: bool) -> str:
    actions = Counter(d.action for d in decisions)
    by_target = Counter(
        (d.letter.topic, d.letter.reason) for d in decisions if d.action == "redrive"
    )
    verb = "would redrive" if dry_run else "redriven"
    lines = [
        f"{verb}: {actions['redrive']}, refused: {actions['refused']}, "
        f"superseded: {actions['superseded']}"
    ]
    lines.extend(
        f"  {count} x {reason} -> {topic}" for (topic, reason), count in sorted(by_target.items())
    )
    if actions["refused"]:
        lines.append(
            f"refused dead letters stay on the dead-letter topic: fix their cause by hand "
            f"(limit: {MAX_REDRIVES} redrives per event)"
        )
    return "\n".join(lines)


async def redrive(
    settings: Settings,
    *,
    reasons: Sequence[str] | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> int:
    """Redrive the selected dead letters; return the exit code.

    Two streaming passes over the same range (memory stays bounded whatever the topic's size):
    the first collects the ``dlq.redrive-of`` marks, the second decides and publishes.
    0: done (including when some were refused, which the summary lists); 1: publishing failed
    part-way (rerunning is safe: at least once, idempotent consumer); 2: bad usage, Kafka
    unreachable, topic missing. ``dry_run`` prints every decision and publishes nothing;
    otherwise only the refused and superseded ones are listed.
    """
    errors = stderr_console()
    if limit is not None and limit < 0:
        errors.print("dlq redrive: --limit must not be negative")
        return 2
    console = Console(soft_wrap=True)
    publisher = None if dry_run else _Publisher(settings)
    decisions: list[Decision] = []  # value-free copies: only what the table and summary need
    try:
        async with open_clients(settings, operation="redrive") as clients:
            async with bounded(
                f"cannot read {settings.topic_dlq!r} at {settings.kafka_bootstrap_servers}",
                operation="redrive",
            ):
                tps = await clients.partitions([settings.topic_dlq])
                span = await offset_range(clients.consumer, tps, since=since)
            if publisher is not None:
                await publisher.start()
            since_ms = timestamp_ms(since) if since is not None else None
            try:
                letters = _iter_letters(clients.consumer, span, since_ms)
                superseded = {x.redrive_of async for x in letters if x.redrive_of is not None}
                planner = RedrivePlanner(
                    settings, superseded=superseded, reasons=reasons, limit=limit
                )
                async for letter in _iter_letters(clients.consumer, span, since_ms):
                    decision = planner.decide(letter)
                    if decision is None:
                        if planner.is_exhausted:
                            break
                        continue
                    if decision.action == "redrive" and publisher is not None:
                        await publisher.send(letter)
                    decisions.append(_without_value(decision))
                if publisher is not None:
                    await publisher.flush()
            except (KafkaError, OSError, TimeoutError) as exc:
                errors.print(f"dlq redrive: failed: {describe_error(exc)}")
                errors.print(
                    "dlq redrive: nothing is lost; running it again is safe (at least once)"
                )
                return 1
            except asyncio.CancelledError:  # Ctrl-C
                errors.print("dlq redrive: interrupted; running it again is safe (at least once)")
                return 130
    except (BrokerUnavailable, ConfigurationError) as exc:
        errors.print(f"dlq redrive: {exc}")
        return 2
    finally:
        if publisher is not None:
            await publisher.stop()
    shown = decisions if dry_run else [d for d in decisions if d.action != "redrive"]
    if shown:
        _print_plan(console, shown)
    console.print(_summary(decisions, dry_run=dry_run), markup=False, highlight=False)
    return 0


def _without_value(decision: Decision) -> Decision:
    letter = decision.letter
    light = DeadLetter(
        partition=letter.partition,
        offset=letter.offset,
        timestamp_ms=letter.timestamp_ms,
        key=letter.key,
        value=None,
        headers=(),
        reason=letter.reason,
        error=letter.error[:200],
        topic=letter.topic,
        redrive_count=letter.redrive_count,
        redrive_of=letter.redrive_of,
    )
    return Decision(light, decision.action, decision.why)

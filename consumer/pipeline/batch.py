"""One batch, end to end: decode, apply (retried), dead-letter (awaited), report what to commit.

:class:`BatchProcessor` is the part of the consumer that `run` and `replay` share, so both decode
and apply through exactly the same path. It never touches consumer offsets itself: it returns the
offsets the caller may commit, and returns only once everything those offsets cover is durable
(the database transaction committed, every dead letter acknowledged by the broker).

``process(batch)``:

1. Each record is decoded where its topic/partition/offset are known: a tombstone (no value)
   is ``ignored``; a :class:`~schemas.Rejection` becomes a dead letter with its reason.
2. The valid events are applied in **one transaction** by :func:`.apply.apply_events`
   (set-based, version-guarded). The database's own rejections (``tenant_mismatch``,
   ``unknown_tenant``, ``db_rejected``) become dead letters too.
3. Every dead letter is produced (``acks=all``, the caller's producer) and awaited.
4. The result carries ``commit_offsets`` (last offset + 1 per partition of the batch) and the
   outcome counts for the metrics.

``process`` is ``finish(prepare(batch))``: step 1 is :meth:`BatchProcessor.prepare` (CPU only),
steps 2-4 :meth:`BatchProcessor.finish`, so a loop can decode batch N+1 while batch N waits for
PostgreSQL.

Faults: a transient database fault (see :func:`consumer.db.classify_error`) rolls the transaction
back and the whole apply is retried; a transient Kafka error retries the failed dead letters.
Both back off exponentially (capped at ``settings.retry_max_delay_s``, with jitter) and retry
forever when ``settings.retry_max_attempts`` is 0, else raise :class:`~consumer.errors.
TransientError` after that many attempts. Anything else propagates unchanged: the caller must stop
without committing the batch (its records are redelivered, which idempotence makes harmless).

Dry run (``dry_run=True``): decoding and validation only. Nothing is written to the database, no
dead letter is produced, and the producer may be ``None``. Outcomes are ``valid`` (would be offered
to the database: applied, stale or rejected there, which a dry run cannot tell),
``dead_lettered`` (would be dead-lettered by decoding) and ``ignored``; ``dead_letters`` counts
the latter kind, and ``applied_occurred_at`` stays empty.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import transient_error
from consumer.errors import TransientError, sqlstate_of
from consumer.logs import get_logger
from consumer.pipeline.apply import (
    ApplyOutcome,
    IsolationNeeded,
    PendingEvent,
    Verdict,
    apply_events,
)
from consumer.pipeline.deadletter import DeadLetter, DeadLetterWriter, is_transient_kafka_error
from consumer.pipeline.decode import decode_event
from consumer.settings import Settings
from schemas import Rejection

__all__ = [
    "OUTCOME_APPLIED",
    "OUTCOME_DEAD_LETTERED",
    "OUTCOME_IGNORED",
    "OUTCOME_STALE",
    "OUTCOME_VALID",
    "BatchProcessor",
    "BatchResult",
    "PreparedBatch",
]

OUTCOME_APPLIED: Final = "applied"
OUTCOME_STALE: Final = "stale"
OUTCOME_DEAD_LETTERED: Final = "dead_lettered"
OUTCOME_IGNORED: Final = "ignored"
#: Dry run only: a valid event that a real run would offer to the database.
OUTCOME_VALID: Final = "valid"
#: The event-type label of a record whose type is not known (tombstone, undecodable).
UNKNOWN_TYPE: Final = "unknown"

_log = get_logger(__name__)

#: Transient errors where the database is up and merely made this transaction lose a race with
#: another (deadlock, serialization failure, lock timeout): retried without reporting the
#: database unavailable.
_LOST_RACE: Final = frozenset({"40001", "40P01", "55P03"})


@dataclass
class BatchResult:
    """What one :meth:`BatchProcessor.process` did, and what the caller may now commit."""

    #: Per partition of the batch: its last record's offset + 1 (every record up to it handled).
    commit_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: ``(topic, event type or "unknown", outcome) -> records``; outcome is ``applied``,
    #: ``stale``, ``dead_lettered`` or ``ignored`` (dry run: ``valid`` instead of the first two).
    outcomes: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    #: ``occurredAt`` of each applied event (end-to-end latency = now - occurredAt).
    applied_occurred_at: list[datetime] = field(default_factory=list)
    #: Dead letters produced (and acknowledged) for this batch.
    dead_letters: int = 0
    #: The same dead letters by reason code.
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Records in the batch (tombstones included).
    records: int = 0

    def count(self, outcome: str) -> int:
        """Records of this batch with ``outcome``, all topics and types together."""
        return sum(n for (_, _, o), n in self.outcomes.items() if o == outcome)


@dataclass
class PreparedBatch:
    """A decoded batch waiting for :meth:`BatchProcessor.finish` (opaque to callers)."""

    result: BatchResult
    pending: list[PendingEvent] = field(default_factory=list)
    sources: list[ConsumerRecord[Any, Any]] = field(default_factory=list)  # of ``pending``
    letters: list[DeadLetter] = field(default_factory=list)


class _Backoff:
    """Capped exponential backoff with jitter; unbounded when ``max_attempts`` is 0."""

    def __init__(
        self,
        settings: Settings,
        on_retry: Callable[[BaseException, float], None] | None,
    ) -> None:
        self._initial = settings.retry_initial_delay_s
        self._cap = settings.retry_max_delay_s
        self._max_attempts = settings.retry_max_attempts
        self._on_retry = on_retry

    async def pause(self, exc: BaseException, attempt: int, what: str) -> None:
        """Sleep before attempt ``attempt + 1``; raise ``TransientError`` when out of attempts."""
        if self._max_attempts and attempt >= self._max_attempts:
            raise TransientError(
                f"{what}: still failing after {attempt} attempts: {_describe(exc)}", operation=what
            ) from exc
        ceiling = min(self._cap, self._initial * 2 ** min(attempt - 1, 30))
        # "Equal jitter": never less than half the step, so retries still back off, but spread
        # so several consumers do not hammer a restarting server in step.
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (not cryptographic)
        _log.warning(
            f"{what}.retry",
            attempt=attempt,
            delay_s=round(delay, 3),
            error=_describe(exc),
        )
        if self._on_retry is not None:
            self._on_retry(exc, delay)
        await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description: type, SQLSTATE, the driver's first line.

    SQLAlchemy's own message appends the statement and its parameters (whole payloads): use the
    wrapped driver error's message instead.
    """
    inner: BaseException = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    text = lines[0][:300] if lines else ""
    code = sqlstate_of(exc)
    name = type(inner).__name__
    return f"{name}{f' [{code}]' if code else ''}: {text}" if text else name


class BatchProcessor:
    """Processes one consumer batch at a time (see the module docstring for the contract).

    ``producer`` must be started by the caller and built by
    :func:`consumer.pipeline.deadletter.new_dead_letter_producer` (``acks="all"``, not idempotent, a
    ``max_request_size`` above the largest record the consumer accepts). A dead letter too large
    for it or for the dead-letter topic is written without its value rather than blocking the
    batch (see :mod:`consumer.pipeline.deadletter`). It is required unless ``dry_run``.

    ``on_retry(exc, delay_s)`` is called before each backoff sleep (metrics).
    ``on_database_state(ok)`` is called with ``False`` when the database becomes unreachable
    (not for a lost race: deadlock, serialization failure, lock timeout) and with ``True`` when an
    apply succeeds, only on changes (first success included): readiness.

    One batch at a time: no concurrent ``process``/``finish`` calls on one instance.
    """

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        producer: AIOKafkaProducer | None,
        *,
        group_id: str,
        dry_run: bool = False,
        on_retry: Callable[[BaseException, float], None] | None = None,
        on_database_state: Callable[[bool], None] | None = None,
    ) -> None:
        if producer is None and not dry_run:
            raise ValueError("a producer is required to write dead letters (unless dry_run)")
        self._settings = settings
        self._engine = engine
        self._writer = (
            DeadLetterWriter(producer, topic=settings.topic_dlq, group_id=group_id)
            if producer is not None
            else None
        )
        self._dry_run = dry_run
        self._backoff = _Backoff(settings, on_retry)
        self._on_database_state = on_database_state
        self._database_ok: bool | None = None

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]
    ) -> BatchResult:
        """Handle every record of ``batch``; return once all of it is durable.

        The same as ``await self.finish(self.prepare(batch))``. Raises
        :class:`~consumer.errors.TransientError` when ``retry_max_attempts`` is set and
        exhausted, and any non-transient error unchanged; in both cases nothing of this batch
        may be committed.
        """
        return await self.finish(self.prepare(batch))

    def prepare(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]
    ) -> PreparedBatch:
        """Decode and validate ``batch`` (CPU only: no database, no broker, never raises for bad
        records).

        Split from :meth:`finish` so that a loop may decode the next batch while the previous
        one's :meth:`finish` waits for PostgreSQL (the server works on another core meanwhile).
        """
        result = BatchResult()
        prepared = PreparedBatch(result)
        pending, sources, letters = prepared.pending, prepared.sources, prepared.letters
        outcomes = result.outcomes
        max_bytes = self._settings.max_payload_bytes
        for tp, records in batch.items():
            if not records:
                continue
            result.commit_offsets[tp] = max(r.offset for r in records) + 1
            result.records += len(records)
            for record in records:
                value = record.value
                if value is None:
                    outcomes[(record.topic, UNKNOWN_TYPE, OUTCOME_IGNORED)] += 1
                    continue
                # schemas.decode_event's verdict, computed faster (consumer/fastdecode.py).
                decoded = decode_event(value, max_bytes=max_bytes)
                if isinstance(decoded, Rejection):
                    label = str(getattr(decoded, "event_type", None) or UNKNOWN_TYPE)
                    letters.append(DeadLetter(record, str(decoded.reason), decoded.message))
                    outcomes[(record.topic, label, OUTCOME_DEAD_LETTERED)] += 1
                    continue
                # PostgreSQL parses the payload's own text (or, rarely, the record's) to store
                # the payload exactly.
                pending.append(PendingEvent.of(decoded, value))
                sources.append(record)
        return prepared

    async def finish(self, prepared: PreparedBatch) -> BatchResult:
        """Apply a :meth:`prepare`-d batch and write its dead letters; return once durable.

        At most one ``finish`` at a time per processor, batches in the order they were fetched.
        Raises as :meth:`process` does; ``prepared`` is left as it was, so the same batch may be
        finished again (idempotence makes the repeat harmless).
        """
        started = time.perf_counter()
        decoded = prepared.result
        result = BatchResult(
            commit_offsets=dict(decoded.commit_offsets),
            outcomes=collections.Counter(decoded.outcomes),
            records=decoded.records,
        )
        letters = list(prepared.letters)
        outcomes = result.outcomes
        if self._dry_run:
            for record, item in zip(prepared.sources, prepared.pending, strict=True):
                outcomes[(record.topic, str(item.event.type), OUTCOME_VALID)] += 1
            result.dead_letters = len(letters)
            result.dead_letter_reasons.update(letter.reason for letter in letters)
            return result

        if prepared.pending:
            applied = await self._apply(prepared.pending)
            occurred = result.applied_occurred_at
            for record, item, verdict in zip(
                prepared.sources, prepared.pending, applied.results, strict=True
            ):
                event_type = item.event.type.value
                if verdict.verdict is Verdict.APPLIED:
                    outcomes[(record.topic, event_type, OUTCOME_APPLIED)] += 1
                    occurred.append(item.event.occurred_at)
                elif verdict.verdict is Verdict.STALE:
                    outcomes[(record.topic, event_type, OUTCOME_STALE)] += 1
                else:
                    assert verdict.reason is not None  # REJECTED always carries its reason
                    letters.append(DeadLetter(record, str(verdict.reason), verdict.message))
                    outcomes[(record.topic, event_type, OUTCOME_DEAD_LETTERED)] += 1

        if letters:
            await self._dead_letter(letters)
        result.dead_letters = len(letters)
        result.dead_letter_reasons.update(letter.reason for letter in letters)
        _log.debug(
            "batch.processed",
            records=result.records,
            applied=len(result.applied_occurred_at),
            dead_letters=result.dead_letters,
            seconds=round(time.perf_counter() - started, 4),
        )
        return result

    async def _apply(self, pending: list[PendingEvent]) -> ApplyOutcome:
        attempt = 0
        # Savepoints cost two round trips per statement and are needed only when PostgreSQL
        # refuses a record: try without, and isolate only a batch that proved to need it.
        isolate = False
        while True:
            attempt += 1
            try:
                async with self._engine.begin() as conn:
                    outcome = await apply_events(conn, pending, isolate=isolate)
            except IsolationNeeded:
                _log.info("batch.isolating_refused_records")
                isolate = True
                attempt -= 1  # not a fault: the same attempt, done the careful way
                continue
            except Exception as exc:
                transient = transient_error(exc, operation="database")
                if transient is None:
                    raise
                if transient.is_unready:
                    self._set_database_state(ok=False)
                await self._backoff.pause(exc, attempt, "batch.apply")
                continue
            self._set_database_state(ok=True)
            return outcome

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        assert self._writer is not None  # enforced in __init__ unless dry_run
        attempt = 0
        while letters:
            attempt += 1
            failures = await self._writer.write_all(letters)
            if not failures:
                return
            for _, exc in failures:
                if not is_transient_kafka_error(exc):
                    raise exc
            await self._backoff.pause(failures[0][1], attempt, "batch.dead_letter")
            letters = [letter for letter, _ in failures]

    def _set_database_state(self, *, ok: bool) -> None:
        if ok is self._database_ok:
            return
        self._database_ok = ok
        if ok:
            _log.info("database.available")
        else:
            _log.warning("database.unavailable")
        if self._on_database_state is not None:
            self._on_database_state(ok)

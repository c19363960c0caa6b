"""One batch, end to end: bytes -> decision -> SQL -> dead letters; the caller commits.

:meth:`BatchProcessor.process` is shared by ``run`` and ``replay`` and reads top to bottom:

1. decode each record where its topic, partition and offset are known: a tombstone is
   ``ignored``, a rejection becomes a dead letter (:mod:`.decode`);
2. apply the valid events in one transaction, or a full batch in one per lane (:mod:`.lanes`:
   split by row key, run at once, ``ROUTING_DB_LANES``), each retried while the database is
   unavailable or the transaction lost a race; under ``ROUTING_MISSING_ROW_POLICY=park`` the
   snapshots and costs whose row does not exist yet are held in the same transaction
   (:mod:`.held`; :mod:`.release` writes them once the row exists);
3. the database's own rejections (``tenant_mismatch``, ``unknown_tenant``, ``db_rejected``)
   become dead letters too;
4. write every dead letter and wait for the broker's acknowledgement (:mod:`.deadletter`),
   retried likewise;
5. return the offsets the caller may now commit: everything they cover is durable.

It never commits offsets itself. Retries go through :mod:`consumer.retry` (forever by default);
any other error propagates, and the caller must commit nothing of the batch (its records come
again, which idempotence makes harmless). A dry run decodes only: nothing is written, and the
valid events are counted ``valid``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcomes import UNKNOWN_TYPE, Outcome
from consumer.pipeline.apply import STALE, ApplyOutcome, EventResult, PendingEvent, apply_events
from consumer.pipeline.deadletter import DeadLetter, DeadLetterWriter, PendingDeadLetters
from consumer.pipeline.decode import decode_event
from consumer.pipeline.lanes import settle, split
from consumer.retry import retrying
from consumer.settings import Settings
from schemas import Rejection

__all__ = ["Batch", "BatchProcessor", "BatchResult", "Decoded"]

#: What ``getmany()`` returns: records per partition, in offset order.
Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]


@dataclass
class BatchResult:
    """What one batch came to, and what the caller may now commit."""

    #: Per partition of the batch: its last record's offset + 1 (every record up to it handled).
    commit_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: ``(topic, event type or "unknown", outcome) -> records``.
    outcomes: collections.Counter[tuple[str, str, Outcome]] = field(
        default_factory=collections.Counter
    )
    #: ``occurredAt`` of each applied event (end-to-end latency = now - occurredAt).
    applied_occurred_at: list[datetime] = field(default_factory=list)
    #: Dead letters written (acknowledged) for this batch, by reason code.
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Records in the batch (tombstones included).
    records: int = 0
    #: A transaction committed for this batch: the database was writable just now.
    wrote_database: bool = False

    def count(self, outcome: Outcome) -> int:
        """Records of this batch with ``outcome``, all topics and types together."""
        return sum(n for (_, _, o), n in self.outcomes.items() if o is outcome)

    @property
    def dead_letters(self) -> int:
        """Dead letters written for this batch."""
        return sum(self.dead_letter_reasons.values())


@dataclass
class Decoded:
    """A batch decoded, nothing of it written yet: what :meth:`BatchProcessor.submit` takes."""

    result: BatchResult = field(default_factory=BatchResult)
    pending: list[PendingEvent] = field(default_factory=list)
    #: The record of each pending event.
    sources: list[ConsumerRecord[Any, Any]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)


class BatchProcessor:
    """Makes batches durable (see the module docstring).

    ``producer`` is started by the caller and built by
    :func:`~consumer.pipeline.deadletter.new_dead_letter_producer`; it may be ``None`` only
    for a dry run. Batches may be in flight together (:meth:`submit`).
    """

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        producer: AIOKafkaProducer | None,
        *,
        group_id: str,
        dry_run: bool = False,
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
        #: Per lane, the transaction submitted last: the next batch's waits for it.
        self._tails: list[asyncio.Task[ApplyOutcome] | None] = [None] * settings.lanes
        #: Every lane's transaction not ended yet (:meth:`abandon`).
        self._running: set[asyncio.Task[ApplyOutcome]] = set()

    async def process(self, batch: Batch) -> BatchResult:
        """Handle every record of ``batch``; return once all of it is durable."""
        decoded = self.decode(batch)
        return await self.submit(decoded, in_lanes=self.is_full(decoded))

    def is_full(self, decoded: Decoded) -> bool:
        """Whether the batch is as large as a fetch may be (``batch_max_records``): a backlog."""
        return decoded.result.records >= self._settings.batch_max_records

    def decode(self, batch: Batch) -> Decoded:
        """Step 1 for all of ``batch``: CPU only, nothing written."""
        decoded = Decoded()
        for _ in self._decoding(batch, decoded, every=None):
            pass
        return decoded

    async def decode_yielding(self, batch: Batch, *, every: int) -> Decoded:
        """:meth:`decode`, letting other tasks (the batches in the database) run after each
        ``every`` records."""
        decoded = Decoded()
        for _ in self._decoding(batch, decoded, every=every):
            await asyncio.sleep(0)
        return decoded

    def _decoding(self, batch: Batch, decoded: Decoded, *, every: int | None) -> Iterator[None]:
        """Decode ``batch`` into ``decoded``, pausing after each ``every`` records (or each
        partition's records)."""
        for tp, records in batch.items():
            if records:
                decoded.result.commit_offsets[tp] = records[-1].offset + 1
                step = every or len(records)
                for start in range(0, len(records), step):
                    self._decode_into(decoded, records[start : start + step])
                    yield

    def submit(self, decoded: Decoded, *, in_lanes: bool) -> asyncio.Task[BatchResult]:
        """Steps 2 to 5 for a decoded batch, started now; the task's result is the batch's.

        ``in_lanes``: one transaction per lane (:mod:`.lanes`; meant for full batches, a
        backlog), else one for the batch (live traffic: a second transaction costs more than
        it overlaps). Batches may be in flight together: each lane of this batch starts after
        the same lane of the batch submitted before it has ended (a batch in one transaction,
        after all of them), so every row sees its transactions in submission order (submit in
        the order the batches were fetched).
        """
        lanes: list[tuple[list[int], asyncio.Task[ApplyOutcome]]] = []
        if decoded.pending and not self._dry_run:
            lanes = self._queue_lanes(decoded.pending, in_lanes=in_lanes)
        return asyncio.ensure_future(self._finish(decoded, lanes))

    async def abandon(self) -> None:
        """Cancel every transaction in flight and wait for it to end (rolled back)."""
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    async def _finish(
        self, decoded: Decoded, lanes: list[tuple[list[int], asyncio.Task[ApplyOutcome]]]
    ) -> BatchResult:
        result, pending, sources, letters = (
            decoded.result,
            decoded.pending,
            decoded.sources,
            decoded.letters,
        )
        if self._dry_run:
            for record, item in zip(sources, pending, strict=True):
                result.outcomes[(record.topic, item.event.type.value, Outcome.VALID)] += 1
        else:
            # 2. Decision -> SQL, one transaction per lane.
            if pending:
                applied = await self._results(len(pending), lanes)
                result.wrote_database = True
                # 3. What the database refused joins the dead letters.
                letters += self._tally(sources, pending, applied, result)
            # 4. Dead letters, acknowledged.
            await self._dead_letter(letters)
        result.dead_letter_reasons.update(letter.reason for letter in letters)
        # 5. The caller commits result.commit_offsets.
        return result

    def _decode_into(self, decoded: Decoded, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        pending, sources, letters = decoded.pending, decoded.sources, decoded.letters
        outcomes = decoded.result.outcomes
        max_bytes = self._settings.max_payload_bytes
        decoded.result.records += len(records)
        for record in records:
            value = record.value
            if value is None:
                outcomes[(record.topic, UNKNOWN_TYPE, Outcome.IGNORED)] += 1
                continue
            event = decode_event(value, max_bytes=max_bytes)
            if isinstance(event, Rejection):
                letters.append(DeadLetter(record, str(event.reason), event.message))
                kind = event.event_type
                label = UNKNOWN_TYPE if kind is None else kind.value
                outcomes[(record.topic, label, Outcome.DEAD_LETTERED)] += 1
                continue
            pending.append(PendingEvent.of(event, value, record))
            sources.append(record)

    def _queue_lanes(
        self, pending: list[PendingEvent], *, in_lanes: bool
    ) -> list[tuple[list[int], asyncio.Task[ApplyOutcome]]]:
        """Start each lane's transaction behind the same lane's previous one (:mod:`.lanes`);
        without ``in_lanes``, one transaction behind every lane's, and every lane's next."""
        tails = self._tails
        if not in_lanes:
            whole = self._start(list(tails), pending)  # a copy: tails is rebound next
            tails[:] = [whole] * len(tails)
            return [(list(range(len(pending))), whole)]
        queued: list[tuple[list[int], asyncio.Task[ApplyOutcome]]] = []
        for n, lane in enumerate(split(pending, len(tails))):
            if lane:
                task = self._start([tails[n]], [pending[i] for i in lane])
                tails[n] = task
                queued.append((lane, task))
        return queued

    def _start(
        self, after: Sequence[asyncio.Task[ApplyOutcome] | None], pending: list[PendingEvent]
    ) -> asyncio.Task[ApplyOutcome]:
        task = asyncio.ensure_future(self._apply_lane(after, pending))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _results(
        self, size: int, lanes: list[tuple[list[int], asyncio.Task[ApplyOutcome]]]
    ) -> list[EventResult]:
        """Each event's result once every lane has committed (the first failure propagates)."""
        outcomes = await settle([task for _, task in lanes])
        results: list[EventResult] = [STALE] * size
        for (lane, _), outcome in zip(lanes, outcomes, strict=True):
            for i, result in zip(lane, outcome.results, strict=True):
                results[i] = result
        return results

    async def _apply_lane(
        self, after: Sequence[asyncio.Task[ApplyOutcome] | None], pending: list[PendingEvent]
    ) -> ApplyOutcome:
        before = {task for task in after if task is not None and not task.done()}
        if before:
            await asyncio.wait(before)  # their outcomes are their own batches' business
        async for attempt in retrying(self._settings):
            with attempt:
                return await apply_events(
                    self._engine, pending, policy=self._settings.missing_row_policy
                )
        raise AssertionError("retrying() ends with a result or an error")  # pragma: no cover

    @staticmethod
    def _tally(
        sources: list[ConsumerRecord[Any, Any]],
        pending: list[PendingEvent],
        applied: list[EventResult],
        result: BatchResult,
    ) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        outcomes, occurred = result.outcomes, result.applied_occurred_at
        for record, item, verdict in zip(sources, pending, applied, strict=True):
            outcome = verdict.outcome
            outcomes[(record.topic, item.event.type.value, outcome)] += 1
            if outcome is Outcome.APPLIED:
                occurred.append(item.event.occurred_at)
            elif outcome is Outcome.DEAD_LETTERED:
                letters.append(DeadLetter(record, str(verdict.reason), verdict.message))
        return letters

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        assert self._writer is not None  # enforced in __init__ unless dry_run
        left = letters
        async for attempt in retrying(self._settings):
            with attempt:
                try:
                    await self._writer.write(left)
                except PendingDeadLetters as exc:
                    left = exc.pending
                    raise

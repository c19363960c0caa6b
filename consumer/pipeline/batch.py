"""One batch, end to end: bytes -> decision -> SQL -> dead letters; the caller commits.

:meth:`BatchProcessor.process` is shared by ``run`` and ``replay`` and reads top to bottom:

1. decode each record where its topic, partition and offset are known: a tombstone is
   ``ignored``, a rejection becomes a dead letter (:mod:`.decode`);
2. apply the valid events in one transaction (:mod:`.apply`), retried while the database is
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

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcomes import UNKNOWN_TYPE, Outcome
from consumer.pipeline.apply import ApplyOutcome, PendingEvent, apply_events
from consumer.pipeline.deadletter import DeadLetter, DeadLetterWriter, PendingDeadLetters
from consumer.pipeline.decode import decode_event
from consumer.retry import retrying
from consumer.settings import Settings
from schemas import Rejection

__all__ = ["Batch", "BatchProcessor", "BatchResult"]

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


class BatchProcessor:
    """Processes one batch at a time (see the module docstring).

    ``producer`` is started by the caller and built by
    :func:`~consumer.pipeline.deadletter.new_dead_letter_producer`; it may be ``None`` only
    for a dry run. One batch at a time per instance.
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

    async def process(self, batch: Batch) -> BatchResult:
        """Handle every record of ``batch``; return once all of it is durable."""
        result = BatchResult()
        # 1. Bytes -> decision.
        pending, sources, letters = self._decode(batch, result)
        if self._dry_run:
            for record, item in zip(sources, pending, strict=True):
                result.outcomes[(record.topic, item.event.type.value, Outcome.VALID)] += 1
        else:
            # 2. Decision -> SQL, one transaction.
            if pending:
                applied = await self._apply(pending)
                result.wrote_database = True
                # 3. What the database refused joins the dead letters.
                letters += self._tally(sources, pending, applied, result)
            # 4. Dead letters, acknowledged.
            await self._dead_letter(letters)
        result.dead_letter_reasons.update(letter.reason for letter in letters)
        # 5. The caller commits result.commit_offsets.
        return result

    def _decode(
        self, batch: Batch, result: BatchResult
    ) -> tuple[list[PendingEvent], list[ConsumerRecord[Any, Any]], list[DeadLetter]]:
        pending: list[PendingEvent] = []
        sources: list[ConsumerRecord[Any, Any]] = []  # the record of each pending event
        letters: list[DeadLetter] = []
        outcomes = result.outcomes
        max_bytes = self._settings.max_payload_bytes
        for tp, records in batch.items():
            if not records:
                continue
            result.commit_offsets[tp] = records[-1].offset + 1
            result.records += len(records)
            for record in records:
                value = record.value
                if value is None:
                    outcomes[(record.topic, UNKNOWN_TYPE, Outcome.IGNORED)] += 1
                    continue
                decoded = decode_event(value, max_bytes=max_bytes)
                if isinstance(decoded, Rejection):
                    letters.append(DeadLetter(record, str(decoded.reason), decoded.message))
                    kind = decoded.event_type
                    label = UNKNOWN_TYPE if kind is None else kind.value
                    outcomes[(record.topic, label, Outcome.DEAD_LETTERED)] += 1
                    continue
                pending.append(PendingEvent.of(decoded, value, record))
                sources.append(record)
        return pending, sources, letters

    async def _apply(self, pending: list[PendingEvent]) -> ApplyOutcome:
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
        applied: ApplyOutcome,
        result: BatchResult,
    ) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        outcomes, occurred = result.outcomes, result.applied_occurred_at
        for record, item, verdict in zip(sources, pending, applied.results, strict=True):
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

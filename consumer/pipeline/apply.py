"""Valid events into PostgreSQL: version-guarded, set-based, one transaction per batch.

:func:`apply_events` implements docs/contract.md §3 for a batch: each row and field ends with
the payload of the newest event by ``(occurredAt, eventId)``, whatever the order and however
often events come; an equal version is the same event (``stale``); an event of another tenant
than the row's is ``tenant_mismatch`` and the row untouched; a policy for a tenant without a
``"Tenant"`` row is ``unknown_tenant``; a record PostgreSQL itself refuses (class 22 or 23,
e.g. ``\\u0000`` in a JSON string) is ``db_rejected`` and the rest of the batch is applied.
A snapshot or cost whose ``"ExecutionRecord"`` row does not exist is ``held`` under the ``park``
policy (written to the service's own table in the same transaction, :mod:`.held`; a copy of an
event held already is ``stale``) and creates the row with its key columns under ``create``.

How (:mod:`.rounds`, :mod:`.sql`): per table, **one statement per round** whatever the batch
size. Only the newest candidate per row and field is offered; a row whose candidate was
rejected offers its next-newest in the next round, so a bad newest event never hides an older
valid one. The stored JSON is parsed by PostgreSQL from the record's own text, so numbers stay
exact and unknown fields are kept. The first attempt takes no savepoints; when PostgreSQL refuses a
record, the transaction is redone with a savepoint per statement, halving the refused
statement's input until the record is alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.db import translate_error
from consumer.logs import get_logger
from consumer.outcomes import Outcome
from consumer.pipeline.columns import APPLIED, HELD, STALE, Columns, EventResult, PendingEvent
from consumer.pipeline.held import held_key, hold_events
from consumer.pipeline.rounds import Rounds
from consumer.pipeline.statement import Refused
from consumer.settings import MissingRowPolicy
from consumer.tables import EXECUTION_RECORD, TENANT
from schemas import EventType

__all__ = [
    "APPLIED",
    "HELD",
    "STALE",
    "ApplyOutcome",
    "EventResult",
    "PendingEvent",
    "apply_events",
    "settle_events",
]

_log = get_logger(__name__)

_TABLES: Final = (EXECUTION_RECORD, TENANT)


@dataclass(slots=True)
class ApplyOutcome:
    """The result of :func:`apply_events`: ``results[i]`` is what happened to ``events[i]``."""

    results: list[EventResult]
    #: SQL statements executed (savepoints excluded): one per table per round plus the splits.
    statements: int = 0

    def count(self, outcome: Outcome) -> int:
        """How many events had ``outcome``."""
        return sum(1 for r in self.results if r.outcome is outcome)


async def apply_events(
    engine: AsyncEngine,
    events: Sequence[PendingEvent],
    *,
    policy: MissingRowPolicy = MissingRowPolicy.PARK,
) -> ApplyOutcome:
    """Apply ``events`` in one transaction of its own and return what happened to each.

    Under ``park`` the held events are written in the same transaction (each needs its
    ``source`` record: ``ValueError`` otherwise).

    Raises a :class:`~consumer.errors.TransientError` (its cause kept) when the database is
    unavailable or the transaction lost a race: nothing of the batch was written, retry it; a
    :class:`~consumer.errors.ConfigurationError` when the database refuses this service for
    good. Anything else (a missing permission or column) propagates unchanged: a bug, never a
    verdict on the records.
    """
    try:
        park = policy is MissingRowPolicy.PARK
        try:
            return await _in_transaction(engine, events, isolate=False, park=park)
        except Refused:
            _log.info("batch.isolating_refused_records", events=len(events))
            return await _in_transaction(engine, events, isolate=True, park=park)
    except Exception as exc:
        translated = translate_error(exc, operation="database")
        if translated is None:
            raise
        raise translated from exc


async def _in_transaction(
    engine: AsyncEngine, events: Sequence[PendingEvent], *, isolate: bool, park: bool
) -> ApplyOutcome:
    async with engine.begin() as conn:
        results, statements = await settle_events(conn, events, isolate=isolate, park=park)
        held = [i for i, result in enumerate(results) if result is HELD]
        if held:
            new = await hold_events(conn, [events[i] for i in held])
            statements += 1
            for i in held:
                key = held_key(events[i])
                if key in new:
                    new.discard(key)  # the first copy of the event is the one held
                else:
                    results[i] = STALE  # held already: the same event, nothing written
    return ApplyOutcome(results, statements)


async def settle_events(
    conn: AsyncConnection, events: Sequence[PendingEvent], *, isolate: bool, park: bool
) -> tuple[list[EventResult], int]:
    """The rounds of every table for ``events`` in the caller's transaction: each event's
    result (``held`` ones are not written anywhere here) and the statements run.

    Raises :class:`~.statement.Refused` for a record PostgreSQL refuses unless ``isolate``.
    """
    results: list[EventResult | None] = [None] * len(events)
    cols = Columns.of(events)
    by_type: dict[EventType, list[int]] = {}
    for i, pending in enumerate(events):
        by_type.setdefault(pending.event.type, []).append(i)
    statements = 0
    for table in _TABLES:
        if any(f.event_type in by_type for f in table.fields):
            rounds = Rounds(conn, table, cols, results, isolate, park=park)
            statements += await rounds.run(by_type)
    final: list[EventResult] = []
    for i, result in enumerate(results):
        if result is None:  # every path sets each index: a gap is a bug
            raise RuntimeError(f"no outcome for event {events[i].event.event_id}")
        final.append(result)
    return final, statements

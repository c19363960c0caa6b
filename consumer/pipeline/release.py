"""Releasing held fields once their row exists, and dead-lettering them when it never comes.

:meth:`Releaser.cycle` is one pass, run by the service about every second
(``ROUTING_HELD_RELEASE_INTERVAL_S``); each step is one transaction of its own:

1. **Release.** Held rows whose ``"ExecutionRecord"`` row now exists, locked ``FOR UPDATE SKIP
   LOCKED`` (several consumers split the work, none waits for another), are decoded again from
   their record bytes and applied through the same rounds as any batch (version guard, tenant
   isolation, a refused record isolated). Applied and stale ones are deleted; ``tenant_mismatch``
   and ``db_rejected`` become dead letters built from the held record and are deleted; one whose
   row vanished meanwhile stays held. Dead letters are acknowledged before the commit: if they
   fail, everything rolls back and the next cycle tries again (duplicates are harmless).
   Which held rows are looked at is bounded per cycle (``ROUTING_HELD_CHUNK`` each): the most
   recently held (the usual race: the row appears within seconds), and the next chunk of a
   keyset sweep over all of them by ``request_id`` (a row that appears late). So a row that
   appears long after its events is found within one sweep: ``ceil(held / chunk)`` cycles.
2. **Expiry.** Held rows older than ``ROUTING_MISSING_ROW_TTL`` whose row still does not exist
   are dead-lettered as ``row_missing`` (original key, bytes and headers; ``dlq.*`` pointing at
   the source record), then deleted, in bounded chunks, in the same way.

Errors propagate to the caller (the service logs transient ones and tries again next cycle).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.outcomes import Outcome
from consumer.pipeline.apply import HELD, settle_events
from consumer.pipeline.columns import PendingEvent
from consumer.pipeline.deadletter import DeadLetter, DeadLetterWriter
from consumer.pipeline.decode import decode_event
from consumer.pipeline.held import HELD_COLUMNS, QUALIFIED_HELD_TABLE, HeldEvent
from consumer.settings import Settings
from schemas import ReasonCode, Rejection

__all__ = ["ReleaseReport", "Releaser"]

_ROW_EXISTS: Final = (
    'EXISTS (SELECT FROM "ExecutionRecord" AS r WHERE r."requestId" = h.request_id)'
)
# The newest held rows (the held_at index, backwards) whose row now exists.
_RECENT_SQL: Final = f"""
SELECT {HELD_COLUMNS} FROM {QUALIFIED_HELD_TABLE} AS h
WHERE (h.request_id, h.field, h.event_id) IN (
    SELECT request_id, field, event_id FROM {QUALIFIED_HELD_TABLE}
    ORDER BY held_at DESC LIMIT $1)
  AND {_ROW_EXISTS}
FOR UPDATE OF h SKIP LOCKED
"""
# The sweep's next chunk: request ids after the cursor (the primary key's first column).
_SWEEP_BOUNDS_SQL: Final = f"""
SELECT max(request_id), count(*) FROM (
    SELECT request_id FROM {QUALIFIED_HELD_TABLE} WHERE request_id > $1
    ORDER BY request_id LIMIT $2) AS scan
"""
_SWEEP_SQL: Final = f"""
SELECT {HELD_COLUMNS} FROM {QUALIFIED_HELD_TABLE} AS h
WHERE h.request_id > $1 AND h.request_id <= $2 AND {_ROW_EXISTS}
FOR UPDATE OF h SKIP LOCKED
"""
# The oldest held rows past the TTL whose row still does not exist.
_EXPIRED_SQL: Final = f"""
SELECT {HELD_COLUMNS} FROM {QUALIFIED_HELD_TABLE} AS h
WHERE h.held_at < now() - $1::interval AND NOT {_ROW_EXISTS}
ORDER BY h.held_at LIMIT $2
FOR UPDATE OF h SKIP LOCKED
"""
_DELETE_SQL: Final = f"""
DELETE FROM {QUALIFIED_HELD_TABLE} AS h
USING unnest($1::text[], $2::text[], $3::uuid[]) AS d(k, f, e)
WHERE h.request_id = d.k AND h.field = d.f AND h.event_id = d.e
"""


@dataclass
class ReleaseReport:
    """What one :meth:`Releaser.cycle` did."""

    #: ``(event type, outcome) -> held events settled``: applied, stale or dead_lettered.
    released: collections.Counter[tuple[str, Outcome]] = field(default_factory=collections.Counter)
    #: Dead letters written (acknowledged), by reason code (``row_missing`` for expiries).
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    #: ``occurredAt`` of each applied event (end-to-end latency).
    applied_occurred_at: list[datetime] = field(default_factory=list)
    #: Held rows looked at whose row exists (released or, when it vanished, kept).
    candidates: int = 0
    #: Whether the sweep came back to the start of the table in this cycle.
    swept: bool = False

    def count(self, outcome: Outcome) -> int:
        """Held events settled with ``outcome`` in this cycle."""
        return sum(n for (_, o), n in self.released.items() if o is outcome)


class Releaser:
    """Releases and expires held fields (module docstring); one cycle at a time."""

    def __init__(self, settings: Settings, engine: AsyncEngine, writer: DeadLetterWriter) -> None:
        self._settings = settings
        self._engine = engine
        self._writer = writer
        #: The sweep's position: the last request id of the previous chunk ("" = the start).
        self._cursor = ""

    async def cycle(self) -> ReleaseReport:
        """One release step and one expiry step (module docstring); returns what they did."""
        report = ReleaseReport()
        await self.release(report)
        await self.expire(report)
        return report

    async def release(self, report: ReleaseReport) -> None:
        """Release the recent and the next swept held rows whose row now exists."""
        chunk = self._settings.held_chunk
        async with self._engine.begin() as conn:
            found = {h.key: h for h in await _held(conn, _RECENT_SQL, chunk)}
            bounds = await conn.exec_driver_sql(_SWEEP_BOUNDS_SQL, (self._cursor, chunk))
            row: Any = bounds.one()
            last, scanned = row
            if last is not None:
                for held in await _held(conn, _SWEEP_SQL, self._cursor, last):
                    found.setdefault(held.key, held)
            # A short chunk reached the end of the table: the next sweep starts over.
            next_cursor = last if scanned >= chunk else ""
            report.swept = next_cursor == ""
            report.candidates += len(found)
            if found:
                await self._settle(conn, list(found.values()), report)
        self._cursor = next_cursor

    async def expire(self, report: ReleaseReport) -> None:
        """Dead-letter as ``row_missing`` the held rows past the TTL whose row never came."""
        ttl = self._settings.missing_row_ttl
        async with self._engine.begin() as conn:
            expired = await _held(conn, _EXPIRED_SQL, ttl, self._settings.held_chunk)
            if not expired:
                return
            letters = [
                DeadLetter(h.record, str(ReasonCode.ROW_MISSING), _missing_message(h, ttl))
                for h in expired
            ]
            await _delete(conn, expired)
            await self._writer.write(letters)
        for held in expired:
            report.released[(held.event_type, Outcome.DEAD_LETTERED)] += 1
        report.dead_letter_reasons[str(ReasonCode.ROW_MISSING)] += len(expired)

    async def _settle(
        self, conn: AsyncConnection, found: Sequence[HeldEvent], report: ReleaseReport
    ) -> None:
        pending: list[PendingEvent] = []
        sources: list[HeldEvent] = []
        letters: list[DeadLetter] = []
        settled: list[HeldEvent] = []
        for held in found:
            value = held.record.value or b""
            # Within the limit when it was held: a limit lowered since does not refuse it now.
            limit = max(self._settings.max_payload_bytes, len(value))
            decoded = decode_event(value, max_bytes=limit)
            if isinstance(decoded, Rejection):
                # Valid when held, refused now: a newer version of this service is stricter.
                letters.append(DeadLetter(held.record, str(decoded.reason), decoded.message))
                settled.append(held)
                report.released[(held.event_type, Outcome.DEAD_LETTERED)] += 1
                continue
            pending.append(PendingEvent.of(decoded, value, held.record))
            sources.append(held)
        # Savepoints from the start: a refused record must not undo the locks taken above.
        results, _ = await settle_events(conn, pending, isolate=True, park=True)
        for held, item, result in zip(sources, pending, results, strict=True):
            if result is HELD:
                continue  # the row was deleted again meanwhile: it stays held
            settled.append(held)
            report.released[(held.event_type, result.outcome)] += 1
            if result.outcome is Outcome.APPLIED:
                report.applied_occurred_at.append(item.event.occurred_at)
            elif result.outcome is Outcome.DEAD_LETTERED:
                letters.append(DeadLetter(held.record, str(result.reason), result.message))
        await _delete(conn, settled)
        if letters:
            await self._writer.write(letters)
            report.dead_letter_reasons.update(letter.reason for letter in letters)


async def _held(conn: AsyncConnection, sql: str, *params: object) -> list[HeldEvent]:
    result = await conn.exec_driver_sql(sql, params)
    return [HeldEvent.of_row(row) for row in result.all()]


async def _delete(conn: AsyncConnection, held: Sequence[HeldEvent]) -> None:
    if held:
        keys = [h.request_id for h in held], [h.field for h in held], [h.event_id for h in held]
        await conn.exec_driver_sql(_DELETE_SQL, keys)


def _missing_message(held: HeldEvent, ttl: timedelta) -> str:
    return (
        f'no "ExecutionRecord" row for requestId {held.request_id!r} appeared within '
        f"ROUTING_MISSING_ROW_TTL ({ttl}) of holding its {held.field} "
        f"(held since {held.held_at.isoformat()}); redrive it once the row exists"
    )

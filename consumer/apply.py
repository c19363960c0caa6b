"""The set-based, version-guarded upserts: a batch of decoded events into PostgreSQL.

:func:`apply_events` writes a batch inside the caller's transaction with **one SQL statement per
field per round** (usually one round), whatever the batch size. It implements ``CONTRACT.md`` §3:

* **Convergent and idempotent.** Every field carries its version, ``(occurredAt, eventId)``, in
  two bookkeeping columns. A write happens only when the stored version is null or older
  (``WHERE`` in the statement, so concurrent consumers and replays agree); an equal version is the
  same event, a no-op counted ``stale``. Within the batch only the newest event per row and field
  is offered (ON CONFLICT cannot touch a row twice in one statement); the older ones are ``stale``
  once the newest is applied or found stale.
* **Rows.** ``"ExecutionRecord"`` rows are created when missing (``"id"`` = ``"requestId"``,
  ``"tenantId"`` from the event); ``"Tenant"`` rows never are (``unknown_tenant``).
* **Tenant isolation.** An event whose ``tenantId`` differs from the row's non-null
  ``"tenantId"`` is rejected ``tenant_mismatch`` and the row is untouched; a null ``"tenantId"``
  accepts any tenant and stays null (only the service's own columns are ever updated).
* **Exact payloads.** The stored JSON is taken by PostgreSQL from the record's own bytes,
  ``($raw::jsonb) -> 'payload'``: every field as received, numbers exact, unknown fields kept.
* **A record PostgreSQL refuses** (SQLSTATE class 22 or 23, e.g. ``\\u0000`` in a JSON string) is
  isolated by rolling back to a savepoint and splitting the statement's input in halves until the
  refused record is alone: ``db_rejected``; the others are applied.

Rounds: after a round, a row whose candidate was rejected (``db_rejected``, ``tenant_mismatch``)
offers its next-newest candidate in the next round, so a bad or mismatching newest event never
hides an older valid one. Candidates of another tenant than the row's are rejected at once.

Everything else (a transient fault, a bug, a missing permission) propagates unchanged to the
caller, who rolls the transaction back: see :mod:`consumer.pipeline`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db import ErrorClass, classify_error, sqlstate_of
from schemas.codes import EventType, ReasonCode

if TYPE_CHECKING:
    from schemas import DecodedEvent

__all__ = [
    "APPLIED",
    "STALE",
    "ApplyOutcome",
    "EventResult",
    "PendingEvent",
    "Verdict",
    "apply_events",
]

#: Bound on the rounds of one field in one batch. A round only repeats for rows whose candidate
#: was rejected (each round consumes at least one candidate per such row), so this is reached only
#: if rows keep vanishing under us (deleted by another writer between our statements).
_MAX_ROUNDS: Final = 1000


class Verdict(enum.StrEnum):
    """What happened to one event."""

    APPLIED = "applied"  # its payload is now the stored value of its field
    STALE = "stale"  # the stored version is the same or newer: nothing written
    REJECTED = "rejected"  # cannot be applied: dead-letter it with ``reason``


@dataclass(frozen=True, slots=True)
class EventResult:
    """The verdict on one event; ``reason``/``message`` are set when it is ``REJECTED``."""

    verdict: Verdict
    reason: ReasonCode | None = None
    message: str = ""


APPLIED: Final = EventResult(Verdict.APPLIED)
STALE: Final = EventResult(Verdict.STALE)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A decoded event and the record value it came from (``raw``: the UTF-8 text of the bytes)."""

    event: DecodedEvent
    raw: str


@dataclass(slots=True)
class ApplyOutcome:
    """The result of :func:`apply_events`: ``results[i]`` is the verdict on ``events[i]``."""

    results: list[EventResult]
    #: SQL statements executed (savepoints excluded): one per field per round plus the splits.
    statements: int = 0

    def count(self, verdict: Verdict) -> int:
        """How many events got ``verdict``."""
        return sum(1 for r in self.results if r.verdict is verdict)


@dataclass(frozen=True, slots=True)
class _Field:
    """One JSON field this service writes, with its two version columns."""

    event_type: EventType
    table: str
    column: str
    sql: str  # the round's statement; returns only the candidates it did NOT apply

    @property
    def creates_rows(self) -> bool:
        return self.table == "ExecutionRecord"


def _execution_record_sql(column: str) -> str:
    # $1 keys (requestId), $2 tenantIds, $3 occurredAt, $4 eventIds, $5 raw record texts.
    # The data-modifying CTE runs to completion; the outer query reads the table as it was
    # *before* the statement, which is what classifying a candidate that was not applied needs:
    # the row it met (its "tenantId"), or no row at all (a concurrent insert: next round).
    at, eid = f'"{column}OccurredAt"', f'"{column}EventId"'
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[])
        AS u(k, t, o, e, raw)
), up AS (
    INSERT INTO "ExecutionRecord" AS r ("id", "requestId", "tenantId", "{column}", {at}, {eid})
    SELECT i.k, i.k, i.t, (i.raw::jsonb) -> 'payload', i.o, i.e FROM i
    ON CONFLICT ("requestId") DO UPDATE
        SET "{column}" = EXCLUDED."{column}", {at} = EXCLUDED.{at}, {eid} = EXCLUDED.{eid}
        WHERE (r."tenantId" IS NULL OR r."tenantId" = EXCLUDED."tenantId")
          AND (r.{at} IS NULL OR (r.{at}, r.{eid}) < (EXCLUDED.{at}, EXCLUDED.{eid}))
    RETURNING r."requestId" AS k
)
SELECT i.k, (cur."requestId" IS NOT NULL) AS found, cur."tenantId"
FROM i LEFT JOIN "ExecutionRecord" AS cur ON cur."requestId" = i.k
WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.k = i.k)
"""


def _tenant_sql(column: str) -> str:
    # $1 keys (tenant ids), $2 tenantIds (unused: the key is the tenant), $3 occurredAt,
    # $4 eventIds, $5 raw record texts. Same shape as above so both kinds share one call.
    at, eid = f'"{column}OccurredAt"', f'"{column}EventId"'
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[])
        AS u(k, t, o, e, raw)
), up AS (
    UPDATE "Tenant" AS r
    SET "{column}" = (i.raw::jsonb) -> 'payload', {at} = i.o, {eid} = i.e
    FROM i
    WHERE r."id" = i.k AND (r.{at} IS NULL OR (r.{at}, r.{eid}) < (i.o, i.e))
    RETURNING r."id" AS k
)
SELECT i.k, (cur."id" IS NOT NULL) AS found, cur."id" AS t
FROM i LEFT JOIN "Tenant" AS cur ON cur."id" = i.k
WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.k = i.k)
"""


_FIELDS: Final = (
    _Field(
        EventType.SNAPSHOT,
        "ExecutionRecord",
        "routingSnapshot",
        _execution_record_sql("routingSnapshot"),
    ),
    _Field(EventType.COST, "ExecutionRecord", "actualCost", _execution_record_sql("actualCost")),
    _Field(EventType.POLICY, "Tenant", "routingPolicy", _tenant_sql("routingPolicy")),
)


def _row_key(event: DecodedEvent, spec: _Field) -> str:
    if spec.creates_rows:
        if event.request_id is None:  # the decoder guarantees it for these types
            raise ValueError(f"{event.type} event {event.event_id} has no requestId")
        return event.request_id
    return event.tenant_id


@dataclass(frozen=True, slots=True)
class _Miss:
    """A candidate the statement did not apply, and the row it met."""

    found: bool
    row_tenant: str | None


async def _run(
    conn: AsyncConnection, spec: _Field, idx: list[int], batch: Sequence[PendingEvent]
) -> dict[str, _Miss]:
    keys: list[str] = []
    tenants: list[str] = []
    occurred: list[datetime] = []
    ids: list[uuid.UUID] = []
    raws: list[str] = []
    for i in idx:
        pending = batch[i]
        ev = pending.event
        keys.append(_row_key(ev, spec))
        tenants.append(ev.tenant_id)
        occurred.append(ev.occurred_at)
        ids.append(ev.event_id)
        raws.append(pending.raw)
    result = await conn.exec_driver_sql(spec.sql, (keys, tenants, occurred, ids, raws))
    rows = cast("list[tuple[str, bool, str | None]]", result.all())
    return {key: _Miss(found, tenant) for key, found, tenant in rows}


async def _run_isolating(
    conn: AsyncConnection,
    spec: _Field,
    idx: list[int],
    batch: Sequence[PendingEvent],
    rejected: dict[int, EventResult],
    counter: list[int],
) -> dict[str, _Miss]:
    """Run the statement for ``idx``; isolate the records PostgreSQL refuses (into ``rejected``).

    Returns the misses of the candidates that ran without error; a refused candidate appears in
    ``rejected`` only. Errors other than a record's own (class 22/23) propagate.
    """
    counter[0] += 1
    try:
        async with conn.begin_nested():
            return await _run(conn, spec, idx, batch)
    except Exception as exc:
        if classify_error(exc) is not ErrorClass.RECORD_PERMANENT:
            raise
        if len(idx) == 1:
            rejected[idx[0]] = EventResult(
                Verdict.REJECTED, ReasonCode.DB_REJECTED, _refusal_message(exc, spec)
            )
            return {}
        half = len(idx) // 2
        misses = await _run_isolating(conn, spec, idx[:half], batch, rejected, counter)
        misses.update(await _run_isolating(conn, spec, idx[half:], batch, rejected, counter))
        return misses


def _refusal_message(exc: BaseException, spec: _Field) -> str:
    # The driver's message names what PostgreSQL disliked (e.g. "unsupported Unicode escape
    # sequence"); keep its first line only: later lines may quote long SQL text.
    cause: BaseException = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    text = text.removeprefix("<class ").split(">: ", 1)[-1]
    return (
        f'PostgreSQL refused the record writing "{spec.table}"."{spec.column}" '
        f"(SQLSTATE {sqlstate_of(exc)}): {text}"
    )


async def _apply_field(
    conn: AsyncConnection,
    spec: _Field,
    idx: list[int],
    batch: Sequence[PendingEvent],
    results: list[EventResult | None],
) -> int:
    """Apply the candidates ``idx`` (all of one type) into ``results``; return the statements."""
    queues: dict[str, list[int]] = {}
    for i in idx:
        queues.setdefault(_row_key(batch[i].event, spec), []).append(i)
    for queue in queues.values():
        if len(queue) > 1:
            queue.sort(key=lambda i: batch[i].event.version, reverse=True)
    counter = [0]
    for _ in range(_MAX_ROUNDS):
        if not queues:
            return counter[0]
        heads = [queue[0] for queue in queues.values()]
        rejected: dict[int, EventResult] = {}
        misses = await _run_isolating(conn, spec, heads, batch, rejected, counter)
        next_queues: dict[str, list[int]] = {}
        for key, queue in queues.items():
            head = queue[0]
            if head in rejected:
                results[head] = rejected[head]
                if len(queue) > 1:
                    next_queues[key] = queue[1:]
                continue
            miss = misses.get(key)
            if miss is None:  # applied: every older candidate is stale now
                results[head] = APPLIED
                for i in queue[1:]:
                    results[i] = STALE
                continue
            if not miss.found:
                if spec.creates_rows:
                    # The row was created (or deleted) concurrently after our snapshot: the
                    # next round sees it.
                    next_queues[key] = queue
                else:
                    for i in queue:
                        results[i] = EventResult(
                            Verdict.REJECTED,
                            ReasonCode.UNKNOWN_TENANT,
                            f'tenantId {batch[i].event.tenant_id!r}: no such "Tenant" row',
                        )
                continue
            row_tenant = miss.row_tenant if spec.creates_rows else None
            remaining: list[int] = []
            for i in queue:
                if row_tenant is not None and batch[i].event.tenant_id != row_tenant:
                    results[i] = EventResult(
                        Verdict.REJECTED,
                        ReasonCode.TENANT_MISMATCH,
                        f"tenantId {batch[i].event.tenant_id!r} differs from the tenantId of "
                        f'"ExecutionRecord" {key!r}; the row is left untouched',
                    )
                else:
                    remaining.append(i)
            if remaining and remaining[0] == head:
                # The head matched the row's tenant and was not applied: the stored version is
                # the same or newer, so it and everything older are stale.
                for i in remaining:
                    results[i] = STALE
            elif remaining:
                next_queues[key] = remaining
        queues = next_queues
    raise RuntimeError(
        f'applying "{spec.table}"."{spec.column}": rows kept changing under the batch '
        f"for {_MAX_ROUNDS} rounds ({len(queues)} rows left)"
    )


async def apply_events(conn: AsyncConnection, events: Sequence[PendingEvent]) -> ApplyOutcome:
    """Apply ``events`` inside the caller's open transaction on ``conn``; return each verdict.

    The caller owns the transaction: it commits when this returns and rolls back when it raises.
    Records PostgreSQL refuses are rolled back to a savepoint and reported ``REJECTED``
    (``db_rejected``); tenant and unknown-tenant rejections likewise. Any other error — transient
    (see :func:`consumer.db.classify_error`) or not — propagates unchanged, and the transaction
    must then be rolled back by the caller.
    """
    results: list[EventResult | None] = [None] * len(events)
    by_field: dict[str, list[int]] = {}
    for i, pending in enumerate(events):
        by_field.setdefault(str(pending.event.type), []).append(i)
    statements = 0
    for spec in _FIELDS:
        idx = by_field.pop(spec.event_type, None)
        if idx:
            statements += await _apply_field(conn, spec, idx, events, results)
    if by_field:
        raise ValueError(f"no field for event types {sorted(by_field)}")
    final: list[EventResult] = []
    for i, verdict in enumerate(results):
        if verdict is None:  # every path above sets each index: a gap is a bug
            raise RuntimeError(f"no verdict for event {events[i].event.event_id}")
        final.append(verdict)
    return ApplyOutcome(final, statements)

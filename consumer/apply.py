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
  ``"tenantId"`` is rejected ``tenant_mismatch`` and the row is untouched, whatever its version
  (an old one too: a tenant rule is never downgraded to ``stale``); a null ``"tenantId"``
  accepts any tenant and stays null (only the service's own columns are ever updated). Which
  tenant owns a row this service creates is first come, first served: its creating event's.
* **Exact payloads.** The stored JSON is taken by PostgreSQL from the record's own bytes,
  ``($raw::jsonb) -> 'payload'``: every field as received, numbers exact, unknown fields kept.
  Only records that pass the guards are parsed, so replaying stale records parses nothing.
* **A record PostgreSQL refuses** (SQLSTATE class 22 or 23, e.g. ``\\u0000`` in a JSON string)
  when offered for writing is isolated by rolling back to a savepoint and splitting the
  statement's input in halves until the refused record is alone: ``db_rejected``; the others are
  applied. (Older than the stored value, such a record is never parsed: it is ``stale``.)

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
    "IsolationNeeded",
    "PendingEvent",
    "Verdict",
    "apply_events",
]

#: Bound on the rounds of one field in one batch. A round repeats only for rows whose candidate
#: was rejected (which consumes it) or lost a race with a concurrent writer (the next round sees
#: the row's new state), so this is reached only if rows keep changing under us.
_MAX_ROUNDS: Final = 1000


class IsolationNeeded(Exception):
    """PostgreSQL refused a record while applying without ``isolate``; the transaction is aborted.

    Roll it back and apply the same batch again with ``isolate=True``.
    """


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


# Both statements take the same five arrays: $1 row keys ("requestId", or the tenant id for
# policies), $2 tenantIds, $3 occurredAt, $4 eventIds, $5 the raw record texts; one entry per
# candidate, at most one candidate per key. Both return one row per candidate, except those a
# concurrent writer got in between (the caller offers them again in the next round):
#
#   (key, applied = true,  found = null,           tenant = the row's "tenantId" now)
#   (key, applied = false, found = row existed?,    tenant = the row's "tenantId")
#
# `c` pairs each candidate with its row as it is before the statement and decides there whether
# the candidate may be written (`ok`: tenant and version guards). Only those are offered for
# writing, so PostgreSQL parses the JSON of the records it may write and of no other (a replay of
# stale records parses nothing). The write re-checks both guards on the row as it is *now*
# (ON CONFLICT / UPDATE see the latest committed version), which is what keeps concurrent
# consumers correct. Plans stay sound without estimates: every join is a key lookup, and the
# output never joins the written rows back to the input.


def _execution_record_sql(column: str) -> str:
    at, eid = f'"{column}OccurredAt"', f'"{column}EventId"'
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[])
        AS u(k, t, o, e, raw)
), c AS (
    SELECT i.k, i.t, i.o, i.e, i.raw,
        (cur."requestId" IS NOT NULL) AS found, cur."tenantId" AS cur_t,
        (cur."requestId" IS NULL OR coalesce(
            (cur."tenantId" IS NULL OR cur."tenantId" = i.t)
            AND (cur.{at} IS NULL OR (cur.{at}, cur.{eid}) < (i.o, i.e)), false)) AS ok
    FROM i LEFT JOIN "ExecutionRecord" AS cur ON cur."requestId" = i.k
), up AS (
    INSERT INTO "ExecutionRecord" AS r ("id", "requestId", "tenantId", "{column}", {at}, {eid})
    SELECT c.k, c.k, c.t, (c.raw::jsonb) -> 'payload', c.o, c.e FROM c WHERE c.ok
    ON CONFLICT ("requestId") DO UPDATE
        SET "{column}" = EXCLUDED."{column}", {at} = EXCLUDED.{at}, {eid} = EXCLUDED.{eid}
        WHERE (r."tenantId" IS NULL OR r."tenantId" = EXCLUDED."tenantId")
          AND (r.{at} IS NULL OR (r.{at}, r.{eid}) < (EXCLUDED.{at}, EXCLUDED.{eid}))
    RETURNING r."requestId" AS k, r."tenantId" AS t
)
SELECT k, true, NULL::boolean, t FROM up
UNION ALL
SELECT k, false, found, cur_t FROM c WHERE NOT ok
"""


def _tenant_sql(column: str) -> str:
    at, eid = f'"{column}OccurredAt"', f'"{column}EventId"'
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[])
        AS u(k, t, o, e, raw)
), c AS (
    SELECT i.k, i.o, i.e, i.raw, (cur."id" IS NOT NULL) AS found,
        (cur."id" IS NOT NULL
         AND coalesce(cur.{at} IS NULL OR (cur.{at}, cur.{eid}) < (i.o, i.e), false)) AS ok
    FROM i LEFT JOIN "Tenant" AS cur ON cur."id" = i.k
), up AS (
    UPDATE "Tenant" AS r
    SET "{column}" = (c.raw::jsonb) -> 'payload', {at} = c.o, {eid} = c.e
    FROM c
    WHERE c.ok AND r."id" = c.k AND (r.{at} IS NULL OR (r.{at}, r.{eid}) < (c.o, c.e))
    RETURNING r."id" AS k
)
SELECT k, true, NULL::boolean, k FROM up
UNION ALL
SELECT k, false, found, k FROM c WHERE NOT ok
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
class _Seen:
    """What the statement reports about one candidate (see the SQL above)."""

    applied: bool
    found: bool | None  # not applied: whether the row existed before the statement
    row_tenant: str | None  # the row's "tenantId" (after the write when applied)


async def _run(
    conn: AsyncConnection, spec: _Field, idx: list[int], batch: Sequence[PendingEvent]
) -> dict[str, _Seen]:
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
    rows = cast("list[tuple[str, bool, bool | None, str | None]]", result.all())
    return {key: _Seen(applied, found, tenant) for key, applied, found, tenant in rows}


async def _run_isolating(
    conn: AsyncConnection,
    spec: _Field,
    idx: list[int],
    batch: Sequence[PendingEvent],
    rejected: dict[int, EventResult],
    counter: list[int],
    isolate: bool,
) -> dict[str, _Seen]:
    """Run the statement for ``idx``; isolate the records PostgreSQL refuses (into ``rejected``).

    Returns what the statement reports of the candidates that ran without error; a refused
    candidate appears in ``rejected`` only. Without ``isolate`` (no savepoint), a refusal raises
    :class:`IsolationNeeded`. Errors other than a record's own (class 22/23) propagate.
    """
    counter[0] += 1
    if not isolate:
        try:
            return await _run(conn, spec, idx, batch)
        except Exception as exc:
            if classify_error(exc) is ErrorClass.RECORD_PERMANENT:
                raise IsolationNeeded(_refusal_message(exc, spec)) from exc
            raise
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
        seen = await _run_isolating(conn, spec, idx[:half], batch, rejected, counter, isolate)
        seen.update(await _run_isolating(conn, spec, idx[half:], batch, rejected, counter, isolate))
        return seen


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


def _mismatch(tenant: str, request: str) -> EventResult:
    # The row's own tenant is not named: the dead-letter topic must not leak it.
    return EventResult(
        Verdict.REJECTED,
        ReasonCode.TENANT_MISMATCH,
        f'tenantId {tenant!r} differs from the tenantId of "ExecutionRecord" {request!r}; '
        "the row is left untouched",
    )


async def _apply_field(
    conn: AsyncConnection,
    spec: _Field,
    idx: list[int],
    batch: Sequence[PendingEvent],
    results: list[EventResult | None],
    isolate: bool,
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
        reported = await _run_isolating(conn, spec, heads, batch, rejected, counter, isolate)
        next_queues: dict[str, list[int]] = {}
        for key, queue in queues.items():
            head = queue[0]
            if head in rejected:
                results[head] = rejected[head]
                if len(queue) > 1:
                    next_queues[key] = queue[1:]
                continue
            seen = reported.get(key)
            if seen is None:
                # Passed the guards before the statement, refused by them during it: a
                # concurrent writer changed the row. The next round sees its new state.
                next_queues[key] = queue
                continue
            if seen.applied:
                results[head] = APPLIED
                row_tenant: str | None = seen.row_tenant if spec.creates_rows else None
                for i in queue[1:]:
                    tenant = batch[i].event.tenant_id
                    results[i] = (
                        _mismatch(tenant, key) if row_tenant and tenant != row_tenant else STALE
                    )
                continue
            if not seen.found:
                if spec.creates_rows:  # impossible: a missing row is always written
                    raise RuntimeError(f'"ExecutionRecord" {key!r} was neither found nor written')
                for i in queue:
                    results[i] = EventResult(
                        Verdict.REJECTED,
                        ReasonCode.UNKNOWN_TENANT,
                        f'tenantId {batch[i].event.tenant_id!r}: no such "Tenant" row',
                    )
                continue
            row_tenant = seen.row_tenant if spec.creates_rows else None
            remaining: list[int] = []
            for i in queue:
                if row_tenant is not None and batch[i].event.tenant_id != row_tenant:
                    results[i] = _mismatch(batch[i].event.tenant_id, key)
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


async def apply_events(
    conn: AsyncConnection, events: Sequence[PendingEvent], *, isolate: bool = True
) -> ApplyOutcome:
    """Apply ``events`` inside the caller's open transaction on ``conn``; return each verdict.

    The caller owns the transaction: it commits when this returns and rolls back when it raises.
    With ``isolate`` (the default) each statement runs under a savepoint, and records PostgreSQL
    refuses are rolled back to it, isolated and reported ``REJECTED`` (``db_rejected``).
    Without, no savepoint is taken (two round trips fewer per statement) and the first refusal
    raises :class:`IsolationNeeded`: roll back, then apply the batch again with ``isolate``.
    Tenant and unknown-tenant rejections are always reported as verdicts. Any other error —
    transient (see :func:`consumer.db.classify_error`) or not — propagates unchanged, and the
    caller must roll the transaction back.
    """
    results: list[EventResult | None] = [None] * len(events)
    by_field: dict[str, list[int]] = {}
    for i, pending in enumerate(events):
        by_field.setdefault(str(pending.event.type), []).append(i)
    statements = 0
    for spec in _FIELDS:
        idx = by_field.pop(spec.event_type, None)
        if idx:
            statements += await _apply_field(conn, spec, idx, events, results, isolate)
    if by_field:
        raise ValueError(f"no field for event types {sorted(by_field)}")
    final: list[EventResult] = []
    for i, verdict in enumerate(results):
        if verdict is None:  # every path above sets each index: a gap is a bug
            raise RuntimeError(f"no verdict for event {events[i].event.event_id}")
        final.append(verdict)
    return ApplyOutcome(final, statements)

"""The set-based, version-guarded upserts: a batch of decoded events into PostgreSQL.

:func:`apply_events` writes a batch inside the caller's transaction with **one SQL statement per
table per round** (usually one round), whatever the batch size: a request's snapshot and cost
in one batch are written to their ``"ExecutionRecord"`` row together, by one row update. It
implements ``CONTRACT.md`` §3:

* **Convergent and idempotent.** Every field carries its version, ``(occurredAt, eventId)``, in
  two bookkeeping columns. A write happens only when the stored version is null or older
  (``WHERE`` in the statement, so concurrent consumers and replays agree); an equal version is the
  same event, a no-op counted ``stale``. Each field is guarded on its own. Within the batch only
  the newest event per row and field is offered (ON CONFLICT cannot touch a row twice in one
  statement); the older ones are ``stale`` once the newest is applied or found stale.
* **Rows.** ``"ExecutionRecord"`` rows are created when missing (``"id"`` = ``"requestId"``,
  ``"tenantId"`` from the event); ``"Tenant"`` rows never are (``unknown_tenant``).
* **Tenant isolation.** An event whose ``tenantId`` differs from the row's non-null
  ``"tenantId"`` is rejected ``tenant_mismatch`` and the row is untouched, whatever its version
  (an old one too: a tenant rule is never downgraded to ``stale``); a null ``"tenantId"``
  accepts any tenant and stays null (only the service's own columns are ever updated). Which
  tenant owns a row this service creates is first come, first served: its creating event's.
* **Exact payloads.** The stored JSON is parsed by PostgreSQL from the record's own bytes: the
  payload's JSON text as it appears in the record (``$payload::jsonb``), or, for the rare record
  whose payload text alone could be stored or refused differently (see
  :mod:`consumer.pipeline.decode`), the whole record's (``($raw::jsonb) -> 'payload'``): every field
  as received, numbers exact, unknown fields kept, the same value either way. Only records
  that pass the guards are parsed, so replaying stale records parses nothing.
* **Existing rows are updated, missing ones inserted**, in the same statement (a data-modifying
  CTE: ``UPDATE`` for the rows found, ``INSERT ... ON CONFLICT`` for the others), never one
  upsert for all: PostgreSQL checks an ``INSERT``'s NOT NULL constraints before it resolves the
  conflict, and Project A's table may have NOT NULL columns without a default (Prisma's
  ``@updatedAt``), which would make every write fail. On such a table a missing row cannot be
  created: that event is ``db_rejected`` (below) with a message naming the column.
* **A record PostgreSQL refuses** (SQLSTATE class 22 or 23, e.g. ``\\u0000`` in a JSON string)
  when offered for writing is isolated by rolling back to a savepoint and splitting the
  statement's input in halves (a row holding two records, into its two) until the refused record
  is alone: ``db_rejected``; the others are applied. (Older than the stored value, such a record
  is never parsed: it is ``stale``.)

Rounds: after a round, a row whose candidate was rejected (``db_rejected``, ``tenant_mismatch``)
offers its next-newest candidate in the next round, so a bad or mismatching newest event never
hides an older valid one. Candidates of another tenant than the row's are rejected at once. A
request whose newest snapshot and newest cost carry different tenants offers the cost a round
later (the row can only be created with one tenant).

Everything else (a transient fault, a bug, a missing permission) propagates unchanged to the
caller, who rolls the transaction back: see :mod:`consumer.pipeline.batch`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db import ErrorClass, classify_error
from consumer.errors import sqlstate_of
from schemas.codes import EventType, ReasonCode

if TYPE_CHECKING:
    from consumer.pipeline.decode import ConsumerEvent
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

#: Bound on the rounds of one table in one batch. A round repeats only for rows whose candidate
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
    """A decoded event and the JSON text PostgreSQL stores its payload from.

    Exactly one of the two texts is set: ``payload``, the payload's JSON text as it appears in
    the record (:attr:`consumer.pipeline.decode.ConsumerEvent.payload_json`), or else ``raw``, the
    whole record's text (the UTF-8 text of its bytes), whose ``payload`` PostgreSQL then takes.
    """

    event: DecodedEvent | ConsumerEvent
    raw: str | None
    payload: str | None = None

    @classmethod
    def of(cls, event: ConsumerEvent, value: bytes) -> PendingEvent:
        """The event the consumer decoded from record ``value`` (valid, so UTF-8)."""
        text = event.payload_json
        if text is None:
            return cls(event, value.decode("utf-8"))
        return cls(event, None, text)


@dataclass(slots=True)
class ApplyOutcome:
    """The result of :func:`apply_events`: ``results[i]`` is the verdict on ``events[i]``."""

    results: list[EventResult]
    #: SQL statements executed (savepoints excluded): one per table per round plus the splits.
    statements: int = 0

    def count(self, verdict: Verdict) -> int:
        """How many events got ``verdict``."""
        return sum(1 for r in self.results if r.verdict is verdict)


@dataclass(frozen=True, slots=True)
class _Field:
    """One JSON column this service writes, with its two version columns."""

    event_type: EventType
    column: str


@dataclass(frozen=True, slots=True)
class _Table:
    """A table this service writes: its fields and the round statement (see the SQL below)."""

    name: str
    fields: tuple[_Field, ...]
    sql: str

    @property
    def creates_rows(self) -> bool:
        return self.name == "ExecutionRecord"


# A round statement takes, per row: $1 the key ("requestId", or the tenant id for a policy),
# $2 the events' tenantId, then for each field of the table four arrays: occurredAt, eventId, the
# raw record text and the payload text (NULLs where the row has no candidate for that field; of
# the two texts of a candidate, one is NULL: see PendingEvent). It returns rows
# (written, key, found, tenant, eid_1, pass_1[, eid_2, pass_2]) of two kinds:
#
# * written = true: a row written; tenant and eid_n are its "tenantId" and "<field n>EventId"
#   after the statement (found and pass_n null);
# * written = false: a row with a candidate that was not offered for writing; found says whether
#   the row existed, tenant is its "tenantId" then, pass_n whether field n's candidate was offered.
#
# A candidate offered for writing that is not the row's value afterwards lost a race with a
# concurrent writer: the caller offers it again in the next round.
#
# `c` pairs each row with its state before the statement and decides there, per field, whether the
# candidate may be written (tenant and version guards). Only those are offered, so PostgreSQL
# parses the JSON of the records it may write and of no other (a replay of stale records parses
# nothing). The write re-checks the guards on the row as it is *now* (ON CONFLICT / UPDATE see the
# latest committed version), which keeps concurrent consumers correct. The plans need no good
# estimates: every join is a key lookup, and the output never joins written rows back to the input.


def _stored(raw: str, payload: str) -> str:
    """The stored JSON of a candidate: its payload text, or its record's payload (one is NULL).

    coalesce evaluates its second argument only when the first is NULL: each text is parsed
    only when it is the one given.
    """
    return f"coalesce({payload}::jsonb, ({raw}::jsonb) -> 'payload')"


def _execution_record_sql() -> str:
    names = ("routingSnapshot", "actualCost")
    at = {n: f'"{n}OccurredAt"' for n in names}
    eid = {n: f'"{n}EventId"' for n in names}

    # Field 1 is the snapshot, field 2 the cost. The version guard of a field against a row and a
    # candidate version (o, e): the stored version is null or older. (coalesce: a row comparison
    # with a null eventId, which only a foreign writer could leave, is "not newer".)
    def newer(row: str, n: str, o: str, e: str) -> str:
        return f"({row}.{at[n]} IS NULL OR ({row}.{at[n]}, {row}.{eid[n]}) < ({o}, {e}))"

    s, k = names

    def excluded_newer(n: str) -> str:
        new_o, new_e = f"EXCLUDED.{at[n]}", f"EXCLUDED.{eid[n]}"
        return f"({new_o} IS NOT NULL AND {newer('r', n, new_o, new_e)})"

    excl_s, excl_k = excluded_newer(s), excluded_newer(k)

    def keep_or_take(n: str, guard: str) -> str:
        return ", ".join(
            f"{col} = CASE WHEN {guard} THEN EXCLUDED.{col} ELSE r.{col} END"
            for col in (f'"{n}"', at[n], eid[n])
        )

    # The guards of the UPDATE of an existing row, on the row as it is now: field n's candidate
    # passed the pre-check in `c` and is newer than the row's value.
    upd_s = f"(c.pass1 AND {newer('r', s, 'c.o1', 'c.e1')})"
    upd_k = f"(c.pass2 AND {newer('r', k, 'c.o2', 'c.e2')})"

    def update_field(n: str, guard: str, o: str, e: str, raw: str, payload: str) -> str:
        values = (_stored(raw, payload), o, e)
        return ", ".join(
            f"{col} = CASE WHEN {guard} THEN {value} ELSE r.{col} END"
            for col, value in zip((f'"{n}"', at[n], eid[n]), values, strict=True)
        )

    returned = f'r."requestId", r."tenantId", r.{eid[s]}, r.{eid[k]}'
    # Rows that exist take a plain UPDATE, rows that do not an INSERT ... ON CONFLICT (a
    # concurrent writer may create them meanwhile). Not an upsert for every row: PostgreSQL
    # checks the proposed INSERT row's NOT NULL constraints before resolving the conflict, and
    # Project A's Prisma table has columns (e.g. "updatedAt", @updatedAt) that are NOT NULL
    # without a default: an upsert would fail on every row, existing ones too.
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[],
        $3::timestamptz[], $4::uuid[], $5::text[], $6::text[],
        $7::timestamptz[], $8::uuid[], $9::text[], $10::text[])
        AS u(k, t, o1, e1, raw1, pl1, o2, e2, raw2, pl2)
), c AS (
    SELECT i.*, (cur."requestId" IS NOT NULL) AS found, cur."tenantId" AS cur_t,
        (i.o1 IS NOT NULL AND coalesce((cur."tenantId" IS NULL OR cur."tenantId" = i.t)
            AND {newer("cur", s, "i.o1", "i.e1")}, false)) AS pass1,
        (i.o2 IS NOT NULL AND coalesce((cur."tenantId" IS NULL OR cur."tenantId" = i.t)
            AND {newer("cur", k, "i.o2", "i.e2")}, false)) AS pass2
    FROM i LEFT JOIN "ExecutionRecord" AS cur ON cur."requestId" = i.k
), upd AS (
    UPDATE "ExecutionRecord" AS r
    SET {update_field(s, upd_s, "c.o1", "c.e1", "c.raw1", "c.pl1")},
        {update_field(k, upd_k, "c.o2", "c.e2", "c.raw2", "c.pl2")}
    FROM c
    WHERE c.found AND (c.pass1 OR c.pass2) AND r."requestId" = c.k
        AND (r."tenantId" IS NULL OR r."tenantId" = c.t) AND ({upd_s} OR {upd_k})
    RETURNING {returned}
), ins AS (
    INSERT INTO "ExecutionRecord" AS r ("id", "requestId", "tenantId",
        "{s}", {at[s]}, {eid[s]}, "{k}", {at[k]}, {eid[k]})
    SELECT c.k, c.k, c.t,
        CASE WHEN c.pass1 THEN {_stored("c.raw1", "c.pl1")} END,
        CASE WHEN c.pass1 THEN c.o1 END, CASE WHEN c.pass1 THEN c.e1 END,
        CASE WHEN c.pass2 THEN {_stored("c.raw2", "c.pl2")} END,
        CASE WHEN c.pass2 THEN c.o2 END, CASE WHEN c.pass2 THEN c.e2 END
    FROM c WHERE NOT c.found AND (c.pass1 OR c.pass2)
    ON CONFLICT ("requestId") DO UPDATE SET {keep_or_take(s, excl_s)}, {keep_or_take(k, excl_k)}
    WHERE (r."tenantId" IS NULL OR r."tenantId" = EXCLUDED."tenantId") AND ({excl_s} OR {excl_k})
    RETURNING {returned}
), up AS (
    SELECT * FROM upd UNION ALL SELECT * FROM ins
)
SELECT true, "requestId", NULL::boolean, "tenantId", {eid[s]}, NULL::boolean, {eid[k]},
    NULL::boolean
FROM up
UNION ALL
SELECT false, k, found, cur_t, NULL, pass1, NULL, pass2 FROM c
WHERE (o1 IS NOT NULL AND NOT pass1) OR (o2 IS NOT NULL AND NOT pass2)
"""


def _tenant_sql() -> str:
    at, eid = '"routingPolicyOccurredAt"', '"routingPolicyEventId"'
    return f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::text[],
        $6::text[]) AS u(k, t, o1, e1, raw1, pl1)
), c AS (
    SELECT i.k, i.o1, i.e1, i.raw1, i.pl1, (cur."id" IS NOT NULL) AS found,
        (cur."id" IS NOT NULL AND coalesce(cur.{at} IS NULL
            OR (cur.{at}, cur.{eid}) < (i.o1, i.e1), false)) AS pass1
    FROM i LEFT JOIN "Tenant" AS cur ON cur."id" = i.k
), up AS (
    UPDATE "Tenant" AS r
    SET "routingPolicy" = {_stored("c.raw1", "c.pl1")}, {at} = c.o1, {eid} = c.e1
    FROM c
    WHERE c.pass1 AND r."id" = c.k AND (r.{at} IS NULL OR (r.{at}, r.{eid}) < (c.o1, c.e1))
    RETURNING r."id", r.{eid}
)
SELECT true, "id", NULL::boolean, NULL::text, {eid}, NULL::boolean FROM up
UNION ALL
SELECT false, k, found, NULL, NULL, pass1 FROM c WHERE NOT pass1
"""


_TABLES: Final = (
    _Table(
        "ExecutionRecord",
        (_Field(EventType.SNAPSHOT, "routingSnapshot"), _Field(EventType.COST, "actualCost")),
        _execution_record_sql(),
    ),
    _Table("Tenant", (_Field(EventType.POLICY, "routingPolicy"),), _tenant_sql()),
)


def _row_key(event: DecodedEvent | ConsumerEvent) -> str:
    if event.type is EventType.POLICY:
        return event.tenant_id
    if event.request_id is None:  # the decoder guarantees it for these types
        raise ValueError(f"{event.type} event {event.event_id} has no requestId")
    return event.request_id


@dataclass(frozen=True, slots=True)
class _Columns:
    """The batch as columns, indexed like it (the hot loops read these, not the events)."""

    key: list[str]
    tenant: list[str]
    occurred: list[datetime]
    event_id: list[uuid.UUID]
    raw: list[str | None]
    payload: list[str | None]

    @classmethod
    def of(cls, events: Sequence[PendingEvent]) -> _Columns:
        key: list[str] = []
        tenant: list[str] = []
        occurred: list[datetime] = []
        event_id: list[uuid.UUID] = []
        raw: list[str | None] = []
        payload: list[str | None] = []
        # One pass, bound methods: this runs for every event of every batch.
        add_key, add_tenant, add_occurred = key.append, tenant.append, occurred.append
        add_event_id, add_raw, add_payload = event_id.append, raw.append, payload.append
        policy = EventType.POLICY
        for pending in events:
            event = pending.event
            # The decoder guarantees a requestId for snapshots and costs (_row_key checks).
            add_key(
                event.tenant_id if event.type is policy else event.request_id or _row_key(event)
            )
            add_tenant(event.tenant_id)
            add_occurred(event.occurred_at)
            add_event_id(event.event_id)
            add_raw(pending.raw)
            add_payload(pending.payload)
        return cls(key, tenant, occurred, event_id, raw, payload)

    def version(self, i: int) -> tuple[datetime, uuid.UUID]:
        """The contract's version of event ``i``: (occurredAt, eventId)."""
        return (self.occurred[i], self.event_id[i])


@dataclass(slots=True)
class _Item:
    """One row of a round statement: its key and, per field of the table, a candidate or None."""

    key: str
    heads: tuple[int | None, ...]


@dataclass(slots=True)
class _Written:
    tenant: str | None  # the row's "tenantId" after the statement
    event_ids: tuple[uuid.UUID | None, ...]  # per field, the stored eventId after it


@dataclass(slots=True)
class _Held:
    found: bool  # the row existed before the statement
    tenant: str | None  # its "tenantId" then
    passes: tuple[bool | None, ...]  # per field: could its candidate be written (None: none)


@dataclass(slots=True)
class _Report:
    written: dict[str, _Written]
    held: dict[str, _Held]


def _first_head(heads: tuple[int | None, ...]) -> int:
    # Every item has at least one candidate; its tenant is the row's (one tenant per statement).
    first = heads[0]
    if first is None:
        first = heads[-1]
        assert first is not None
    return first


async def _run(
    conn: AsyncConnection, table: _Table, items: Sequence[_Item], cols: _Columns
) -> _Report:
    params: list[list[Any]] = [
        [item.key for item in items],
        [cols.tenant[_first_head(item.heads)] for item in items],
    ]
    for n in range(len(table.fields)):
        heads = [item.heads[n] for item in items]
        params.append([None if i is None else cols.occurred[i] for i in heads])
        params.append([None if i is None else cols.event_id[i] for i in heads])
        params.append([None if i is None else cols.raw[i] for i in heads])
        params.append([None if i is None else cols.payload[i] for i in heads])
    result = await conn.exec_driver_sql(table.sql, tuple(params))
    rows: list[Any] = list(result.all())
    written: dict[str, _Written] = {}
    held: dict[str, _Held] = {}
    if len(table.fields) == 2:
        for row in rows:
            if row[0]:
                written[row[1]] = _Written(row[3], (row[4], row[6]))
            else:
                held[row[1]] = _Held(row[2], row[3], (row[5], row[7]))
    else:
        for row in rows:
            if row[0]:
                written[row[1]] = _Written(row[3], (row[4],))
            else:
                held[row[1]] = _Held(row[2], row[3], (row[5],))
    return _Report(written, held)


async def _run_isolating(
    conn: AsyncConnection,
    table: _Table,
    items: Sequence[_Item],
    cols: _Columns,
    rejected: dict[int, EventResult],
    counter: list[int],
    isolate: bool,
    unfillable: set[int],
) -> _Report:
    """Run the statement for ``items``; isolate the records PostgreSQL refuses (into ``rejected``).

    A refused record whose row is missing and cannot be created (a not-null column the service
    cannot fill) is also added to ``unfillable``: the older candidates of its row and field
    would fail the same way.

    Returns the report of the rows that ran without error; a refused candidate appears in
    ``rejected`` only. Without ``isolate`` (no savepoint), a refusal raises
    :class:`IsolationNeeded`. Errors other than a record's own (class 22/23) propagate.
    """
    counter[0] += 1
    if not isolate:
        try:
            return await _run(conn, table, items, cols)
        except Exception as exc:
            if classify_error(exc) is ErrorClass.RECORD:
                raise IsolationNeeded(_refusal_message(exc, f'"{table.name}"')) from exc
            raise
    try:
        async with conn.begin_nested():
            return await _run(conn, table, items, cols)
    except Exception as exc:
        if classify_error(exc) is not ErrorClass.RECORD:
            raise
        if len(items) > 1:
            parts: list[Sequence[_Item]] = [items[: len(items) // 2], items[len(items) // 2 :]]
        else:
            [item] = items
            heads = [(n, i) for n, i in enumerate(item.heads) if i is not None]
            if len(heads) == 1:
                n, i = heads[0]
                column = _not_null_column(exc)
                if column is not None and table.creates_rows:
                    message = _cannot_create_message(exc, table.name, item.key, column)
                    unfillable.add(i)
                else:
                    where = f'"{table.name}"."{table.fields[n].column}"'
                    message = _refusal_message(exc, where)
                rejected[i] = EventResult(Verdict.REJECTED, ReasonCode.DB_REJECTED, message)
                return _Report({}, {})
            # A row with two records: which one PostgreSQL refuses, each alone will tell.
            width = len(item.heads)
            parts = [
                [_Item(item.key, tuple(i if m == n else None for m in range(width)))]
                for n, i in heads
            ]
        report = _Report({}, {})
        for part in parts:
            sub = await _run_isolating(
                conn, table, part, cols, rejected, counter, isolate, unfillable
            )
            _merge(report, sub)
        return report


def _merge(into: _Report, other: _Report) -> None:
    # The halves hold different keys, except a row split into its two records: keep what each
    # statement said about its own field.
    for key, written in other.written.items():
        into.written[key] = written
    for key, held in other.held.items():
        mine = into.held.get(key)
        if mine is None:
            into.held[key] = held
        else:
            passes = tuple(
                a if a is not None else b for a, b in zip(mine.passes, held.passes, strict=True)
            )
            into.held[key] = _Held(mine.found or held.found, mine.tenant, passes)


def _refusal_message(exc: BaseException, where: str) -> str:
    # The driver's message names what PostgreSQL disliked (e.g. "unsupported Unicode escape
    # sequence"); keep its first line only: later lines may quote long SQL text.
    cause: BaseException = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    text = text.removeprefix("<class ").split(">: ", 1)[-1]
    return f"PostgreSQL refused the record writing {where} (SQLSTATE {sqlstate_of(exc)}): {text}"


def _not_null_column(exc: BaseException) -> str | None:
    """The column named by a not-null violation (SQLSTATE 23502), else None."""
    if sqlstate_of(exc) != "23502":
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        column = getattr(current, "column_name", None)
        if isinstance(column, str) and column:
            return column
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return "?"


def _cannot_create_message(exc: BaseException, table: str, key: str, column: str) -> str:
    # Only the service's own columns are ever updated, and they are nullable: a not-null
    # violation comes from creating a missing row of a table with a column it cannot fill
    # (Project A's Prisma "updatedAt", filled client-side, has no database default).
    return (
        f'no "{table}" row for requestId {key!r}, and this service cannot create it: the table '
        f'requires column "{column}" (NOT NULL without a default), which this service cannot '
        f"fill (SQLSTATE {sqlstate_of(exc)}); redrive the event once the row exists"
    )


def _mismatch(tenant: str, request: str) -> EventResult:
    # The row's own tenant is not named: the dead-letter topic must not leak it.
    return EventResult(
        Verdict.REJECTED,
        ReasonCode.TENANT_MISMATCH,
        f'tenantId {tenant!r} differs from the tenantId of "ExecutionRecord" {request!r}; '
        "the row is left untouched",
    )


def _unknown_tenant(tenant: str) -> EventResult:
    return EventResult(
        Verdict.REJECTED, ReasonCode.UNKNOWN_TENANT, f'tenantId {tenant!r}: no such "Tenant" row'
    )


def _settle(
    table: _Table,
    key: str,
    n: int,
    queue: list[int],
    report: _Report,
    cols: _Columns,
    results: list[EventResult | None],
) -> list[int]:
    """Give verdicts for field ``n`` of row ``key`` from the round's report; return what is left.

    ``queue`` holds the row's candidates for the field, newest first; its head was offered.
    """
    head = queue[0]
    held = report.held.get(key)
    if held is not None and held.passes[n] is False:
        # Refused by the guards before writing: an unknown tenant, another tenant, or stale.
        if not held.found:
            if table.creates_rows:  # a missing row is always offered: cannot happen
                return queue
            for i in queue:
                results[i] = _unknown_tenant(cols.tenant[i])
            return []
        row_tenant = held.tenant if table.creates_rows else None
        remaining: list[int] = []
        for i in queue:
            tenant = cols.tenant[i]
            if row_tenant is not None and tenant != row_tenant:
                results[i] = _mismatch(tenant, key)
            else:
                remaining.append(i)
        if remaining and remaining[0] == head:
            # The head matched the row's tenant: the stored version is the same or newer, so it
            # and everything older are stale.
            for i in remaining:
                results[i] = STALE
            return []
        return remaining  # the newest of the row's tenant goes next round
    written = report.written.get(key)
    if written is not None and written.event_ids[n] == cols.event_id[head]:
        results[head] = APPLIED
        row_tenant = written.tenant if table.creates_rows else None
        for i in queue[1:]:
            tenant = cols.tenant[i]
            results[i] = _mismatch(tenant, key) if row_tenant and tenant != row_tenant else STALE
        return []
    # Offered, yet not the row's value: a concurrent writer got in between. Next round.
    return queue


async def _apply_table(
    conn: AsyncConnection,
    table: _Table,
    by_type: dict[str, list[int]],
    cols: _Columns,
    results: list[EventResult | None],
    isolate: bool,
) -> int:
    """Apply the candidates of ``table``'s event types into ``results``; return the statements."""
    queues: list[dict[str, list[int]]] = []
    for spec in table.fields:
        per_key: dict[str, list[int]] = {}
        for i in by_type.get(spec.event_type, ()):
            per_key.setdefault(cols.key[i], []).append(i)
        for queue in per_key.values():
            if len(queue) > 1:
                queue.sort(key=cols.version, reverse=True)
        queues.append(per_key)
    counter = [0]
    width = len(table.fields)
    for _ in range(_MAX_ROUNDS):
        keys: dict[str, None] = {}
        for per_key in queues:
            keys.update(dict.fromkeys(per_key))
        if not keys:
            return counter[0]
        items: list[_Item] = []
        for key in keys:
            heads = [per_key[key][0] if key in per_key else None for per_key in queues]
            first, second = heads[0], heads[-1]
            if (
                width == 2
                and first is not None
                and second is not None
                and cols.tenant[first] != cols.tenant[second]
            ):
                heads[1] = None  # one tenant per row statement: the cost waits a round
            items.append(_Item(key, tuple(heads)))
        rejected: dict[int, EventResult] = {}
        unfillable: set[int] = set()
        report = await _run_isolating(
            conn, table, items, cols, rejected, counter, isolate, unfillable
        )
        for item in items:
            for n, head in enumerate(item.heads):
                if head is None:
                    continue
                queue = queues[n][item.key]
                if head in unfillable:
                    # The row is missing and cannot be created: no older candidate can do better.
                    for i in queue:
                        results[i] = rejected[head]
                    left = []
                elif head in rejected:
                    results[head] = rejected[head]
                    left = queue[1:]
                else:
                    left = _settle(table, item.key, n, queue, report, cols, results)
                if left:
                    queues[n][item.key] = left
                else:
                    del queues[n][item.key]
    raise RuntimeError(
        f'applying "{table.name}": rows kept changing under the batch for {_MAX_ROUNDS} rounds'
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
    cols = _Columns.of(events)
    by_type: dict[str, list[int]] = {}
    for i, pending in enumerate(events):
        by_type.setdefault(pending.event.type.value, []).append(i)
    statements = 0
    for table in _TABLES:
        if any(spec.event_type in by_type for spec in table.fields):
            statements += await _apply_table(conn, table, by_type, cols, results, isolate)
    known = {spec.event_type.value for table in _TABLES for spec in table.fields}
    if set(by_type) - known:
        raise ValueError(f"no field for event types {sorted(set(by_type) - known)}")
    final: list[EventResult] = []
    for i, verdict in enumerate(results):
        if verdict is None:  # every path above sets each index: a gap is a bug
            raise RuntimeError(f"no verdict for event {events[i].event.event_id}")
        final.append(verdict)
    return ApplyOutcome(final, statements)

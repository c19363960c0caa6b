"""The rounds of one table in one transaction: offer candidates, settle them, repeat.

The batch arrives as :class:`Columns`. Per table, each round offers the newest remaining
candidate of every row and field in one statement (:mod:`.sql`) and settles what the statement
reports: applied, stale, another tenant's, an unknown tenant, held (``park``: its
``"ExecutionRecord"`` row does not exist; every candidate of the row and field is held, the
caller keeps them), or offered again next round (a concurrent writer won, or an older candidate
stands behind a rejected one). With
``isolate``, each statement runs under a savepoint and a record PostgreSQL refuses is isolated
by halving the statement's input; without, the first refusal raises :class:`Refused`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db import ErrorClass, classify_error
from consumer.errors import error_text, sqlstate_of
from consumer.outcomes import Outcome
from consumer.pipeline.decode import ConsumerEvent
from consumer.pipeline.sql import round_sql
from consumer.tables import EXECUTION_RECORD, TargetTable
from schemas import EventType, ReasonCode

__all__ = [
    "APPLIED",
    "HELD",
    "STALE",
    "Columns",
    "EventResult",
    "PendingEvent",
    "Refused",
    "Rounds",
]

#: Bound on consecutive rounds that settle nothing: every other round settles at least one
#: candidate, so rounds are bounded by the batch; these repeat only while concurrent writers
#: keep changing the same rows under us.
_MAX_IDLE_ROUNDS: Final = 1000


@dataclass(frozen=True, slots=True)
class EventResult:
    """What happened to one event: ``applied``, ``stale`` or ``dead_lettered`` with a reason."""

    outcome: Outcome
    reason: ReasonCode | None = None
    message: str = ""


APPLIED: Final = EventResult(Outcome.APPLIED)
STALE: Final = EventResult(Outcome.STALE)
HELD: Final = EventResult(Outcome.HELD)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A decoded event and the JSON text PostgreSQL stores its payload from.

    Exactly one text is set: ``payload``, the payload's JSON text as it stands in the record
    (:attr:`.decode.ConsumerEvent.payload_json`), or else ``raw``, the whole record's text,
    whose ``payload`` PostgreSQL then takes. ``source`` is the Kafka record it came from: what
    holding it needs (``park``), and its dead letter.
    """

    event: ConsumerEvent
    raw: str | None
    payload: str | None = None
    source: ConsumerRecord[Any, Any] | None = None

    @classmethod
    def of(
        cls, event: ConsumerEvent, value: bytes, source: ConsumerRecord[Any, Any] | None = None
    ) -> PendingEvent:
        """The event the consumer decoded from record ``value`` (valid, so UTF-8)."""
        if event.payload_json is None:
            return cls(event, value.decode("utf-8"), None, source)
        return cls(event, None, event.payload_json, source)


class Refused(Exception):
    """PostgreSQL refused a record while applying without savepoints: redo with ``isolate``."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The batch as columns, indexed like it (the hot loops read these, not the events)."""

    key: list[str]
    tenant: list[str]
    occurred: list[datetime]
    event_id: list[uuid.UUID]
    raw: list[str | None]
    payload: list[str | None]

    @classmethod
    def of(cls, events: Sequence[PendingEvent]) -> Columns:
        cols = cls([], [], [], [], [], [])
        # One pass, bound methods: this runs for every event of every batch.
        add_key, add_tenant, add_occurred = (
            cols.key.append,
            cols.tenant.append,
            cols.occurred.append,
        )
        add_event_id, add_raw, add_payload = (
            cols.event_id.append,
            cols.raw.append,
            cols.payload.append,
        )
        policy = EventType.POLICY
        for pending in events:
            event = pending.event
            # The decoder guarantees a requestId for snapshots and costs.
            add_key(event.tenant_id if event.type is policy else event.request_id or "")
            add_tenant(event.tenant_id)
            add_occurred(event.occurred_at)
            add_event_id(event.event_id)
            add_raw(pending.raw)
            add_payload(pending.payload)
        return cols

    def version(self, i: int) -> tuple[datetime, uuid.UUID]:
        """The contract's version of event ``i``: (occurredAt, eventId)."""
        return (self.occurred[i], self.event_id[i])

    def is_copy(self, i: int, j: int) -> bool:
        """Whether events ``i`` and ``j`` are the same record: same version, same JSON text."""
        return (
            self.event_id[i] == self.event_id[j]
            and self.occurred[i] == self.occurred[j]
            and self.payload[i] == self.payload[j]
            and self.raw[i] == self.raw[j]
        )


@dataclass(slots=True)
class _Item:
    """One row of a round statement: its key and, per field of the table, a candidate or None."""

    key: str
    heads: tuple[int | None, ...]


@dataclass(slots=True)
class _Written:
    tenant: str | None  # the row's tenant after the statement
    event_ids: tuple[uuid.UUID | None, ...]  # per field, the stored eventId after it


@dataclass(slots=True)
class _Unwritten:
    found: bool  # the row existed before the statement
    tenant: str | None  # its tenant then
    passes: tuple[bool | None, ...]  # per field: could its candidate be written (None: none)


@dataclass(slots=True)
class _Report:
    written: dict[str, _Written]
    unwritten: dict[str, _Unwritten]

    def merge(self, other: _Report) -> None:
        """Add a part's report. Parts hold different keys, except a row split into its two
        records: keep what each statement said about its own field."""
        self.written.update(other.written)
        for key, theirs in other.unwritten.items():
            mine = self.unwritten.get(key)
            if mine is None:
                self.unwritten[key] = theirs
                continue
            passes = tuple(
                a if a is not None else b for a, b in zip(mine.passes, theirs.passes, strict=True)
            )
            self.unwritten[key] = _Unwritten(mine.found or theirs.found, mine.tenant, passes)


class Rounds:
    """The rounds of one table in one transaction: offer candidates, settle, repeat.

    ``park``: a missing ``"ExecutionRecord"`` row is never created; its candidates are ``held``.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        table: TargetTable,
        cols: Columns,
        results: list[EventResult | None],
        isolate: bool,
        *,
        park: bool = False,
    ) -> None:
        self._conn = conn
        self._table = table
        self._sql = round_sql(table, creates_rows=not park)
        self._cols = cols
        self._results = results
        self._isolate = isolate
        #: Rows of this table carry a tenant and may be missing (else: "Tenant", never created).
        self._is_execution = table is EXECUTION_RECORD
        self._creates_rows = self._is_execution and not park
        self.statements = 0

    async def run(self, by_type: dict[EventType, list[int]]) -> int:
        """Settle every candidate of this table's event types; return the statements run."""
        cols, width = self._cols, len(self._table.fields)
        # Per field, per row key: the row's candidates, newest first.
        queues: list[dict[str, list[int]]] = []
        for field in self._table.fields:
            per_key: dict[str, list[int]] = {}
            for i in by_type.get(field.event_type, ()):
                per_key.setdefault(cols.key[i], []).append(i)
            for queue in per_key.values():
                if len(queue) > 1:
                    queue.sort(key=cols.version, reverse=True)
            queues.append(per_key)
        left = sum(len(q) for per_key in queues for q in per_key.values())
        idle = 0
        while left:
            keys: dict[str, None] = {}
            for per_key in queues:
                keys.update(dict.fromkeys(per_key))
            items = [self._item(key, queues, width) for key in keys]
            rejected: dict[int, EventResult] = {}
            unfillable: set[int] = set()
            report = await self._offer(items, rejected, unfillable)
            for item in items:
                for n, head in enumerate(item.heads):
                    if head is not None:
                        self._settle_field(
                            item.key, n, head, queues[n], report, rejected, unfillable
                        )
            before, left = left, sum(len(q) for per_key in queues for q in per_key.values())
            idle = idle + 1 if left == before else 0
            if idle >= _MAX_IDLE_ROUNDS:
                raise RuntimeError(
                    f'applying "{self._table.name}": rows kept changing under the batch for '
                    f"{_MAX_IDLE_ROUNDS} rounds"
                )
        return self.statements

    def _item(self, key: str, queues: list[dict[str, list[int]]], width: int) -> _Item:
        heads = [per_key[key][0] if key in per_key else None for per_key in queues]
        first, second = heads[0], heads[-1]
        tenants = self._cols.tenant
        if (
            width == 2
            and first is not None
            and second is not None
            and tenants[first] != tenants[second]
        ):
            heads[1] = None  # one tenant per row statement: the cost waits a round
        return _Item(key, tuple(heads))

    def _settle_field(
        self,
        key: str,
        n: int,
        head: int,
        per_key: dict[str, list[int]],
        report: _Report,
        rejected: dict[int, EventResult],
        unfillable: set[int],
    ) -> None:
        queue = per_key[key]
        if head in unfillable:
            # The row is missing and cannot be created: no older candidate can do better.
            for i in queue:
                self._results[i] = rejected[head]
            left: list[int] = []
        elif head in rejected:
            # Copies of the refused record (a producer's retry storm re-sending it) share its
            # verdict: same version, same text, the same refusal; no statement each.
            verdict = rejected[head]
            cols = self._cols
            same = 1
            while same < len(queue) and cols.is_copy(queue[same], head):
                same += 1
            for i in queue[:same]:
                self._results[i] = verdict
            left = queue[same:]
        else:
            left = self._settle(key, n, queue, report)
        if left:
            per_key[key] = left
        else:
            del per_key[key]

    def _settle(self, key: str, n: int, queue: list[int], report: _Report) -> list[int]:
        """Outcomes for field ``n`` of row ``key`` from the round's report; return what is left.

        ``queue`` holds the row's candidates for the field, newest first; its head was offered.
        """
        cols, results = self._cols, self._results
        head = queue[0]
        unwritten = report.unwritten.get(key)
        if unwritten is not None and unwritten.passes[n] is False:
            # Refused by the guards before writing: no row, another tenant, or stale.
            if not unwritten.found:
                if self._creates_rows:  # a missing row is always offered: cannot happen
                    return queue
                # Every version is held, not just the newest: which one wins is decided once
                # the row exists (its tenant may refuse the newest).
                verdict = HELD if self._is_execution else None
                for i in queue:
                    results[i] = verdict or _unknown_tenant(cols.tenant[i])
                return []
            row_tenant = unwritten.tenant if self._is_execution else None
            remaining: list[int] = []
            for i in queue:
                if row_tenant is not None and cols.tenant[i] != row_tenant:
                    results[i] = _mismatch(cols.tenant[i], key)
                else:
                    remaining.append(i)
            if remaining and remaining[0] == head:
                # The head matched the row's tenant: the stored version is the same or newer,
                # so it and everything older are stale.
                for i in remaining:
                    results[i] = STALE
                return []
            return remaining  # the newest of the row's tenant goes next round
        written = report.written.get(key)
        if written is not None and written.event_ids[n] == cols.event_id[head]:
            results[head] = APPLIED
            row_tenant = written.tenant if self._is_execution else None
            for i in queue[1:]:
                tenant = cols.tenant[i]
                mismatched = row_tenant is not None and tenant != row_tenant
                results[i] = _mismatch(tenant, key) if mismatched else STALE
            return []
        return queue  # offered, yet not the row's value: a concurrent writer won. Next round.

    async def _offer(
        self, items: Sequence[_Item], rejected: dict[int, EventResult], unfillable: set[int]
    ) -> _Report:
        """Run the statement for ``items``; isolate the records PostgreSQL refuses.

        A refused record goes to ``rejected`` (and to ``unfillable`` when its row is missing
        and cannot be created: a not-null column the service cannot fill, so its older
        candidates would fail the same way). Without isolation a refusal raises
        :class:`Refused`. Errors other than a record's own (class 22/23) propagate.
        """
        self.statements += 1
        if not self._isolate:
            try:
                return await self._execute(items)
            except Exception as exc:
                if classify_error(exc) is ErrorClass.RECORD:
                    raise Refused from exc
                raise
        try:
            async with self._conn.begin_nested():
                return await self._execute(items)
        except Exception as exc:
            if classify_error(exc) is not ErrorClass.RECORD:
                raise
            parts = self._split(items, exc, rejected, unfillable)
        report = _Report({}, {})
        for part in parts:
            report.merge(await self._offer(part, rejected, unfillable))
        return report

    def _split(
        self,
        items: Sequence[_Item],
        exc: Exception,
        rejected: dict[int, EventResult],
        unfillable: set[int],
    ) -> list[Sequence[_Item]]:
        """The parts to offer again after a refusal; a single refused record is judged here."""
        if len(items) > 1:
            return [items[: len(items) // 2], items[len(items) // 2 :]]
        [item] = items
        heads = [(n, i) for n, i in enumerate(item.heads) if i is not None]
        if len(heads) > 1:
            # A row with two records: which one PostgreSQL refuses, each alone will tell.
            width = len(item.heads)
            return [
                [_Item(item.key, tuple(i if m == n else None for m in range(width)))]
                for n, i in heads
            ]
        [(n, i)] = heads
        column = _not_null_column(exc)
        if column is not None and self._creates_rows:
            message = _cannot_create_message(exc, self._table.name, item.key, column)
            unfillable.add(i)
        else:
            where = f'"{self._table.name}"."{self._table.fields[n].column}"'
            message = (
                f"PostgreSQL refused the record writing {where} "
                f"(SQLSTATE {sqlstate_of(exc)}): {error_text(exc)}"
            )
        rejected[i] = EventResult(Outcome.DEAD_LETTERED, ReasonCode.DB_REJECTED, message)
        return []

    async def _execute(self, items: Sequence[_Item]) -> _Report:
        cols = self._cols
        params: list[list[Any]] = [
            [item.key for item in items],
            [cols.tenant[_first(item.heads)] for item in items],
        ]
        for n in range(len(self._table.fields)):
            heads = [item.heads[n] for item in items]
            params.append([None if i is None else cols.occurred[i] for i in heads])
            params.append([None if i is None else cols.event_id[i] for i in heads])
            params.append([None if i is None else cols.raw[i] for i in heads])
            params.append([None if i is None else cols.payload[i] for i in heads])
        result = await self._conn.exec_driver_sql(self._sql, tuple(params))
        report = _Report({}, {})
        width = len(self._table.fields)
        rows: list[Any] = list(result.all())
        for row in rows:
            # (written, key, found, tenant, eid_1, pass_1[, eid_2, pass_2]): see .sql
            if row[0]:
                report.written[row[1]] = _Written(
                    row[3], tuple(row[4 + 2 * n] for n in range(width))
                )
            else:
                passes = tuple(row[5 + 2 * n] for n in range(width))
                report.unwritten[row[1]] = _Unwritten(row[2], row[3], passes)
        return report


def _first(heads: tuple[int | None, ...]) -> int:
    # Every item has at least one candidate; its tenant is the row's (one tenant per statement).
    first = heads[0] if heads[0] is not None else heads[-1]
    assert first is not None
    return first


def _not_null_column(exc: BaseException) -> str | None:
    """The column named by a not-null violation (SQLSTATE 23502), else None."""
    if sqlstate_of(exc) != "23502":
        return None
    current: BaseException | None = exc
    while current is not None:
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
        Outcome.DEAD_LETTERED,
        ReasonCode.TENANT_MISMATCH,
        f'tenantId {tenant!r} differs from the tenantId of "ExecutionRecord" {request!r}; '
        "the row is left untouched",
    )


def _unknown_tenant(tenant: str) -> EventResult:
    return EventResult(
        Outcome.DEAD_LETTERED,
        ReasonCode.UNKNOWN_TENANT,
        f'tenantId {tenant!r}: no such "Tenant" row',
    )

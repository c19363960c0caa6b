"""One round's statement for one table, and what PostgreSQL reported back.

:class:`RoundStatement` offers an :class:`Item` per row (the newest remaining candidate of each
of its fields) in one statement (:mod:`.sql`) and returns a :class:`Report`: per row key, what
was written, or what stood in the way. With ``isolate``, the statement runs under a savepoint
and a record PostgreSQL refuses is isolated by halving the statement's input, its verdict
(``db_rejected``) recorded; without, the first refusal raises :class:`Refused`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db import ErrorClass, classify_error
from consumer.errors import error_text, sqlstate_of
from consumer.outcomes import Outcome
from consumer.pipeline.columns import Columns, EventResult
from consumer.pipeline.sql import SEPARATOR, round_sql
from consumer.tables import TargetTable
from schemas import ReasonCode

__all__ = ["Item", "Refused", "Report", "RoundStatement", "Unwritten", "Written"]


class Refused(Exception):
    """PostgreSQL refused a record while applying without savepoints: redo with ``isolate``."""


@dataclass(slots=True)
class Item:
    """One row of a round statement: its key and, per field of the table, a candidate or None."""

    key: str
    heads: tuple[int | None, ...]


@dataclass(slots=True)
class Written:
    """A row the statement wrote."""

    tenant: str | None  # the row's tenant after the statement
    event_ids: tuple[uuid.UUID | None, ...]  # per field, the stored eventId after it


@dataclass(slots=True)
class Unwritten:
    """A row the statement offered candidates for and did not write."""

    found: bool  # the row existed before the statement
    tenant: str | None  # its tenant then
    passes: tuple[bool | None, ...]  # per field: could its candidate be written (None: none)


@dataclass(slots=True)
class Report:
    """Per row key, what the statement did."""

    written: dict[str, Written]
    unwritten: dict[str, Unwritten]

    def merge(self, other: Report) -> None:
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
            self.unwritten[key] = Unwritten(mine.found or theirs.found, mine.tenant, passes)


class RoundStatement:
    """Runs one table's round statements within the batch's transaction (module docstring)."""

    def __init__(
        self,
        conn: AsyncConnection,
        table: TargetTable,
        cols: Columns,
        *,
        isolate: bool,
        creates_rows: bool,
    ) -> None:
        self._conn = conn
        self._table = table
        self._sql = round_sql(table, creates_rows=creates_rows)
        self._cols = cols
        self._isolate = isolate
        self._creates_rows = creates_rows
        self.count = 0

    async def offer(
        self, items: Sequence[Item], rejected: dict[int, EventResult], unfillable: set[int]
    ) -> Report:
        """Run the statement for ``items``; isolate the records PostgreSQL refuses.

        A refused record goes to ``rejected`` (and to ``unfillable`` when its row is missing
        and cannot be created: a not-null column the service cannot fill, so its older
        candidates would fail the same way). Without isolation a refusal raises
        :class:`Refused`. Errors other than a record's own (class 22/23) propagate.
        """
        self.count += 1
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
        report = Report({}, {})
        for part in parts:
            report.merge(await self.offer(part, rejected, unfillable))
        return report

    def _split(
        self,
        items: Sequence[Item],
        exc: Exception,
        rejected: dict[int, EventResult],
        unfillable: set[int],
    ) -> list[Sequence[Item]]:
        """The parts to offer again after a refusal; a single refused record is judged here."""
        if len(items) > 1:
            return [items[: len(items) // 2], items[len(items) // 2 :]]
        [item] = items
        heads = [(n, i) for n, i in enumerate(item.heads) if i is not None]
        if len(heads) > 1:
            # A row with two records: which one PostgreSQL refuses, each alone will tell.
            width = len(item.heads)
            return [
                [Item(item.key, tuple(i if m == n else None for m in range(width)))]
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

    async def _execute(self, items: Sequence[Item]) -> Report:
        cols = self._cols
        params: list[list[Any] | bytes] = [
            [item.key for item in items],
            [cols.tenant[_first(item.heads)] for item in items],
        ]
        for n in range(len(self._table.fields)):
            heads = [item.heads[n] for item in items]
            params.append([None if i is None else cols.occurred[i] for i in heads])
            params.append([None if i is None else cols.event_id[i] for i in heads])
            params.append(_joined([None if i is None else cols.raw[i] for i in heads]))
            params.append(_joined([None if i is None else cols.payload[i] for i in heads]))
        result = await self._conn.exec_driver_sql(self._sql, tuple(params))
        report = Report({}, {})
        width = len(self._table.fields)
        rows: list[Any] = list(result.all())
        for row in rows:
            # (written, key, found, tenant, eid_1, pass_1[, eid_2, pass_2]): see .sql
            if row[0]:
                report.written[row[1]] = Written(
                    row[3], tuple(row[4 + 2 * n] for n in range(width))
                )
            else:
                passes = tuple(row[5 + 2 * n] for n in range(width))
                report.unwritten[row[1]] = Unwritten(row[2], row[3], passes)
        return report


def _joined(texts: list[bytes | None]) -> bytes:
    """A column of JSON texts as one parameter (:data:`.sql.SEPARATOR` between them, NULL as
    nothing): one bytes to send instead of an array of ``str`` to encode element by element.

    No JSON text holds the separator (a control character, escaped in strings): a text that
    did would be a bug upstream, and would shift every text after it, so it raises here.
    """
    joined = SEPARATOR.join([b"" if text is None else text for text in texts])
    if joined.count(SEPARATOR) != max(len(texts) - 1, 0):
        raise AssertionError("a JSON text holds the separator byte: the decoder let it through")
    return joined


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

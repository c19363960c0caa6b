"""One round's statement for one table, and what PostgreSQL reported back.

:class:`RoundStatement` offers an :class:`Item` per row (the newest remaining candidate of each
of its fields) in one statement (:mod:`.sql`) and returns a :class:`Report`: the rows whose
candidates were not all written as offered, and why. With ``isolate``, the statement runs
under a savepoint and a record PostgreSQL refuses is isolated by halving the statement's
input, its verdict (``db_rejected``) recorded; without, the first refusal raises
:class:`Refused`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db import ErrorClass, classify_error
from consumer.errors import error_text, sqlstate_of
from consumer.outcomes import Outcome
from consumer.pipeline.columns import Columns, EventResult
from consumer.pipeline.sql import SEPARATOR, round_sql
from consumer.tables import TargetTable
from schemas import ReasonCode

__all__ = ["Item", "Refused", "Report", "Reported", "RoundStatement", "literal"]

_ENCODE: Final = msgspec.json.Encoder().encode


class Refused(Exception):
    """PostgreSQL refused a record while applying without savepoints: redo with ``isolate``."""


@dataclass(slots=True)
class Item:
    """One row of a round statement: its key and, per field of the table, a candidate or None."""

    key: str
    heads: tuple[int | None, ...]


@dataclass(slots=True)
class Reported:
    """A row the statement reported: not all of its candidates were written as offered, or
    its tenant afterwards is not theirs (see :mod:`.sql`). Per-field tuples are ``None`` where
    the row had no candidate for that field."""

    found: bool  # the row existed before the statement
    tenant: str | None  # its tenant then
    written: bool  # the statement wrote the row
    tenant_after: str | None  # its tenant after the statement, when written
    passes: tuple[bool | None, ...]  # could field n's candidate be written (False: the guards)
    lost: tuple[bool | None, ...]  # it could, yet is not the row's value: offer it again

    def joined(self, later: Reported) -> Reported:
        """This report and a later statement's on the same row (a row split into its two
        records): each field as the statement that offered it said."""
        written = later if later.written else self
        return Reported(
            self.found or later.found,
            self.tenant,
            self.written or later.written,
            written.tenant_after,
            _either(self.passes, later.passes),
            _either(self.lost, later.lost),
        )


@dataclass(slots=True)
class Report:
    """Per row key, what the statement reported; a row offered and not here had every
    candidate written as offered, and keeps the candidates' tenant (or its own)."""

    rows: dict[str, Reported]

    def merge(self, other: Report) -> None:
        """Add a later part's report (parts hold different keys, except a row split into its
        two records)."""
        for key, theirs in other.rows.items():
            mine = self.rows.get(key)
            self.rows[key] = theirs if mine is None else mine.joined(theirs)


def _either(
    first: tuple[bool | None, ...], second: tuple[bool | None, ...]
) -> tuple[bool | None, ...]:
    return tuple(a if a is not None else b for a, b in zip(first, second, strict=True))


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
        report = Report({})
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
        params: list[bytes] = [
            literal([item.key for item in items]),
            literal([cols.tenant[_first(item.heads)] for item in items]),
        ]
        for n in range(len(self._table.fields)):
            heads = [item.heads[n] for item in items]
            params.append(literal([None if i is None else cols.micros[i] for i in heads]))
            params.append(literal([None if i is None else cols.event_id[i] for i in heads]))
            params.append(_joined([None if i is None else cols.raw[i] for i in heads]))
            params.append(_joined([None if i is None else cols.payload[i] for i in heads]))
        result = await self._conn.exec_driver_sql(self._sql, tuple(params))
        rows: dict[str, Reported] = {}
        returned: list[Any] = list(result.all())
        for row in returned:
            # (key, found, tenant, written, tenant_after, pass_1, lost_1[, ...]): see .sql
            key, found, tenant, written, tenant_after, *flags = row
            rows[key] = Reported(
                found, tenant, written, tenant_after, tuple(flags[0::2]), tuple(flags[1::2])
            )
        return Report(rows)


def literal(values: Sequence[str | int | uuid.UUID | None]) -> bytes:
    """``values`` as a PostgreSQL array literal (UTF-8), encoded in one call instead of element
    by element: the JSON array msgspec writes, its brackets made braces.

    The two grammars agree on ``null``, numbers, and strings but for one thing: JSON escapes a
    control character as ``\\n`` or ``\\u001f``, which an array literal reads as ``n`` or
    ``u001f``. A batch whose strings hold a backslash escape (rare: a key with a control
    character, a quote or a backslash) is quoted the array literal's way instead.
    """
    text = _ENCODE(values)
    if b"\\" in text:
        text = _quoted(values)
    return b"{" + text[1:-1] + b"}"


def _quoted(values: Sequence[str | int | uuid.UUID | None]) -> bytes:
    # Inside double quotes an array literal takes every character as it is but \ and ".
    parts = [
        "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    ]
    return ("[" + ",".join(parts) + "]").encode()


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

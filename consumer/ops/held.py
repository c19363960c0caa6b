"""``routing-persistence held``: snapshots and costs waiting for their ``"ExecutionRecord"`` row.

Per field: how many are held, since when, and the age of the oldest; how many have a row by now
(the running service releases them within a cycle or a sweep) and how many are past
``ROUTING_MISSING_ROW_TTL`` (about to be dead-lettered as ``row_missing``). A table, or
``--json``. Reads the database only (no Kafka).

Exit codes (:func:`show_held`): 0 within the threshold, 1 when the oldest held field is older
than ``--max-age`` seconds, 2 when the database cannot be read (unreachable, not migrated).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy.pool import NullPool

from consumer.db import create_engine, translate_error
from consumer.errors import describe_error, sqlstate_of
from consumer.ops._render import render_plain_table, stderr_console
from consumer.pipeline.held import QUALIFIED_HELD_TABLE
from consumer.settings import Settings

__all__ = ["HeldReport", "measure_held", "show_held"]

_REPORT_SQL: Final = f"""
SELECT h.field, count(*) AS held, min(h.held_at) AS oldest,
    coalesce(extract(epoch FROM clock_timestamp() - min(h.held_at)), 0)::float8 AS age_s,
    count(*) FILTER (WHERE EXISTS (
        SELECT FROM "ExecutionRecord" AS r WHERE r."requestId" = h.request_id)) AS with_row,
    count(*) FILTER (WHERE h.held_at < clock_timestamp() - $1::interval) AS past_ttl
FROM {QUALIFIED_HELD_TABLE} AS h GROUP BY h.field ORDER BY h.field
"""
#: Not migrated (no such table or schema) or no privilege: a usage problem, not a bug.
_CANNOT_READ: Final = frozenset({"42P01", "3F000", "42501"})
_COLUMNS: Final = ("FIELD", "HELD", "OLDEST-HELD-AT", "OLDEST-AGE-S", "WITH-ROW", "PAST-TTL")


@dataclass(frozen=True)
class FieldHeld:
    """One field's held events."""

    field: str
    held: int
    oldest_held_at: datetime
    oldest_age_s: float
    with_row: int
    past_ttl: int


@dataclass(frozen=True)
class HeldReport:
    """Every field's held events, and the TTL they are measured against."""

    fields: list[FieldHeld]
    ttl_s: float

    @property
    def total(self) -> int:
        """Held events in all."""
        return sum(f.held for f in self.fields)

    @property
    def oldest_age_s(self) -> float:
        """Age of the oldest held event (0.0 when nothing is held)."""
        return max((f.oldest_age_s for f in self.fields), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: totals and one entry per field."""
        return {
            "total": self.total,
            "oldest_age_s": round(self.oldest_age_s, 3),
            "with_row": sum(f.with_row for f in self.fields),
            "past_ttl": sum(f.past_ttl for f in self.fields),
            "ttl_s": self.ttl_s,
            "fields": [
                {
                    "field": f.field,
                    "held": f.held,
                    "oldest_held_at": f.oldest_held_at.isoformat(),
                    "oldest_age_s": round(f.oldest_age_s, 3),
                    "with_row": f.with_row,
                    "past_ttl": f.past_ttl,
                }
                for f in self.fields
            ],
        }


async def measure_held(settings: Settings) -> HeldReport:
    """Read the held table (one query); raises the database's errors as they are."""
    engine = create_engine(settings, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            result = await conn.exec_driver_sql(_REPORT_SQL, (settings.missing_row_ttl,))
            rows: list[Any] = list(result.all())
    finally:
        await engine.dispose()
    return HeldReport(
        [FieldHeld(str(r[0]), int(r[1]), r[2], float(r[3]), int(r[4]), int(r[5])) for r in rows],
        settings.missing_row_ttl.total_seconds(),
    )


async def show_held(
    settings: Settings, *, as_json: bool = False, max_age_s: float | None = None
) -> int:
    """Print the report; the exit code (module docstring)."""
    errors = stderr_console()
    try:
        report = await measure_held(settings)
    except Exception as exc:
        known = translate_error(exc, operation="held") is not None
        if not known and sqlstate_of(exc) not in _CANNOT_READ:
            raise
        errors.print(f"held: cannot read the held fields: {describe_error(exc)}")
        return 2
    problem = None
    if max_age_s is not None and report.oldest_age_s > max_age_s:
        problem = (
            f"held: the oldest held field is {report.oldest_age_s:.0f} s old "
            f"(over --max-age {max_age_s:g})"
        )
    if as_json:
        document = report.to_json()
        document["exceeded"] = [problem] if problem else []
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        rows = [
            (
                f.field,
                str(f.held),
                f.oldest_held_at.isoformat(timespec="seconds"),
                f"{f.oldest_age_s:.1f}",
                str(f.with_row),
                str(f.past_ttl),
            )
            for f in report.fields
        ]
        rows.append(
            (
                "TOTAL",
                str(report.total),
                "-",
                f"{report.oldest_age_s:.1f}",
                str(sum(f.with_row for f in report.fields)),
                str(sum(f.past_ttl for f in report.fields)),
            )
        )
        sys.stdout.write(render_plain_table(_COLUMNS, rows) + "\n")
        sys.stdout.write(
            f"held until their ExecutionRecord row exists; WITH-ROW are released by the running "
            f"service within seconds; PAST-TTL ({report.ttl_s:g} s) become row_missing dead "
            "letters\n"
        )
    if problem:
        errors.print(problem)
    return 1 if problem else 0

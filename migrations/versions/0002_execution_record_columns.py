"""Additive: the service's nullable columns on "ExecutionRecord" (Project A's table).

Revision ID: 0002_execution_record_columns
Revises: 0001_baseline
Create Date: 2026-11-25

The payloads ("routingSnapshot", "actualCost", jsonb) and, per payload, the version of the event
that wrote it ("...OccurredAt" timestamptz, "...EventId" uuid): the version guard that keeps the
writes idempotent and convergent (docs/architecture.md). Nullable, no defaults: a catalog-only
change, no table rewrite, whatever the table's size. Columns that already exist (Prisma added
"routingSnapshot" and "actualCost" in the B6 design) are kept, and the downgrade leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migrations import set_lock_timeout
from migrations.ddl import NewColumn, add_columns_sql, drop_added_columns_sql

revision: str = "0002_execution_record_columns"
down_revision: str | Sequence[str] | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "ExecutionRecord"
_COLUMNS = (
    NewColumn("routingSnapshot", "jsonb", "payload of the newest routing.snapshot event"),
    NewColumn(
        "routingSnapshotOccurredAt",
        "timestamp with time zone",
        "occurredAt of the event that wrote routingSnapshot",
    ),
    NewColumn("routingSnapshotEventId", "uuid", "eventId of the event that wrote routingSnapshot"),
    NewColumn("actualCost", "jsonb", "payload of the newest routing.cost event"),
    NewColumn(
        "actualCostOccurredAt",
        "timestamp with time zone",
        "occurredAt of the event that wrote actualCost",
    ),
    NewColumn("actualCostEventId", "uuid", "eventId of the event that wrote actualCost"),
)


def upgrade() -> None:
    set_lock_timeout()
    op.execute(add_columns_sql(_TABLE, _COLUMNS))


def downgrade() -> None:
    set_lock_timeout()
    op.execute(drop_added_columns_sql(_TABLE, [c.name for c in _COLUMNS]))

"""Additive: the service's nullable columns on "Tenant" (Project C's table).

Revision ID: 0003_tenant_columns
Revises: 0002_execution_record_columns
Create Date: 2026-11-25

"routingPolicy" (jsonb) and the version of the event that wrote it. A revision of its own, so it
never holds "ExecutionRecord"'s lock while it waits for "Tenant"'s (or the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migrations import set_lock_timeout
from migrations.ddl import NewColumn, add_columns_sql, drop_added_columns_sql

revision: str = "0003_tenant_columns"
down_revision: str | Sequence[str] | None = "0002_execution_record_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "Tenant"
_COLUMNS = (
    NewColumn("routingPolicy", "jsonb", "payload of the newest tenant.policy event"),
    NewColumn(
        "routingPolicyOccurredAt",
        "timestamp with time zone",
        "occurredAt of the event that wrote routingPolicy",
    ),
    NewColumn("routingPolicyEventId", "uuid", "eventId of the event that wrote routingPolicy"),
)


def upgrade() -> None:
    set_lock_timeout()
    op.execute(add_columns_sql(_TABLE, _COLUMNS))


def downgrade() -> None:
    set_lock_timeout()
    op.execute(drop_added_columns_sql(_TABLE, [c.name for c in _COLUMNS]))

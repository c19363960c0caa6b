"""Baseline: "ExecutionRecord" and "Tenant", created only when missing.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-25

Projects A and C own these tables (Prisma). On their databases this revision changes nothing; on an
empty database it creates minimal stand-ins with Prisma's names ("<Table>_pkey",
"<Table>_<column>_key"), so the service, its tests and a developer's stack work alone.

Ownership: a table this revision creates gets BASELINE_TABLE_COMMENT (see consumer/tables.py), and
the downgrade drops a table only when it carries that comment, so downgrading on a database where
Project A or C created the table leaves it alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migrations import set_lock_timeout

revision: str = "0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of consumer.tables.BASELINE_TABLE_COMMENT (a revision never imports live code that
# may change after it shipped); tests/test_migrations.py checks the two agree.
_MARKER = (
    "Created by the routing-persistence baseline migration as a stand-in for the owning project "
    "table; its downgrade drops it."
)

# One DO block: the existence check and the creation happen in the same statement, so the
# rendered --sql script is as conditional as the online run.
_UPGRADE = f"""
DO $baseline$
BEGIN
    IF to_regclass('"ExecutionRecord"') IS NULL THEN
        CREATE TABLE "ExecutionRecord" (
            "id" text NOT NULL,
            "requestId" text NOT NULL,
            "tenantId" text,
            "createdAt" timestamp with time zone NOT NULL DEFAULT now(),
            CONSTRAINT "ExecutionRecord_pkey" PRIMARY KEY ("id")
        );
        CREATE UNIQUE INDEX "ExecutionRecord_requestId_key" ON "ExecutionRecord" ("requestId");
        COMMENT ON TABLE "ExecutionRecord" IS '{_MARKER}';
    END IF;
    IF to_regclass('"Tenant"') IS NULL THEN
        CREATE TABLE "Tenant" (
            "id" text NOT NULL,
            "name" text,
            CONSTRAINT "Tenant_pkey" PRIMARY KEY ("id")
        );
        COMMENT ON TABLE "Tenant" IS '{_MARKER}';
    END IF;
END
$baseline$
"""

_DOWNGRADE = f"""
DO $baseline$
BEGIN
    IF obj_description(to_regclass('"ExecutionRecord"'), 'pg_class') = '{_MARKER}' THEN
        DROP TABLE "ExecutionRecord";
    END IF;
    IF obj_description(to_regclass('"Tenant"'), 'pg_class') = '{_MARKER}' THEN
        DROP TABLE "Tenant";
    END IF;
END
$baseline$
"""


def upgrade() -> None:
    set_lock_timeout()
    op.execute(_UPGRADE)


def downgrade() -> None:
    set_lock_timeout()
    op.execute(_DOWNGRADE)

"""The service's own table of held fields, in a schema of its own.

Revision ID: 0004_held_fields
Revises: 0003_tenant_columns
Create Date: 2026-11-27

A snapshot or cost whose "ExecutionRecord" row does not exist yet is held here until the row
appears (docs/contract.md §3, ROUTING_MISSING_ROW_POLICY=park): one row per event, with what
applying it needs and what its dead letter needs. The schema is not `public`: Project A's Prisma
introspects and diffs `public`, and must never see this table.

Primary key (request_id, field, event_id): holding the same event again (redelivery, replay,
another consumer) is a no-op. The held_at index serves the release of recent rows and the
expiry after ROUTING_MISSING_ROW_TTL. Nothing here touches another project's table, so this
revision takes no lock anyone else waits for.

The downgrade drops the table and the schema, and refuses while fields are held (dropping them
would lose events that were never written nor dead-lettered).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migrations import set_lock_timeout

revision: str = "0004_held_fields"
down_revision: str | Sequence[str] | None = "0003_tenant_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies (a revision never imports live code that may change after it shipped);
# tests/test_migrations.py checks them against consumer.tables.
_SCHEMA = "routing_persistence"
_TABLE_COMMENT = (
    'Created by routing-persistence: snapshots and costs held until their "ExecutionRecord" row '
    "exists (docs/contract.md §3)."
)
_SCHEMA_COMMENT = "Created by routing-persistence: its own tables (held fields)."

# One DO block (one statement: the online run sends it as one, and --sql prints it as one).
_UPGRADE = f"""
DO $held$
BEGIN
    IF to_regnamespace('{_SCHEMA}') IS NULL THEN
        CREATE SCHEMA {_SCHEMA};
        COMMENT ON SCHEMA {_SCHEMA} IS '{_SCHEMA_COMMENT}';
    END IF;
    CREATE TABLE IF NOT EXISTS {_SCHEMA}.held_field (
        request_id text NOT NULL,
        field text NOT NULL,
        event_id uuid NOT NULL,
        occurred_at timestamp with time zone NOT NULL,
        tenant_id text NOT NULL,
        held_at timestamp with time zone NOT NULL DEFAULT now(),
        record_key bytea,
        record_value bytea NOT NULL,
        record_headers text,
        source_topic text NOT NULL,
        source_partition integer NOT NULL,
        source_offset bigint NOT NULL,
        source_timestamp bigint NOT NULL,
        CONSTRAINT held_field_pkey PRIMARY KEY (request_id, field, event_id)
    );
    CREATE INDEX IF NOT EXISTS held_field_held_at_idx ON {_SCHEMA}.held_field (held_at);
    COMMENT ON TABLE {_SCHEMA}.held_field IS '{_TABLE_COMMENT}';
END
$held$
"""

_DOWNGRADE = f"""
DO $held$
DECLARE
    held bigint;
BEGIN
    IF to_regclass('{_SCHEMA}.held_field') IS NOT NULL THEN
        SELECT count(*) INTO held FROM {_SCHEMA}.held_field;
        IF held > 0 THEN
            RAISE EXCEPTION '% fields are held in {_SCHEMA}.held_field; dropping them would '
                'lose their events: let them be released or expire first', held;
        END IF;
        DROP TABLE {_SCHEMA}.held_field;
    END IF;
    IF obj_description(to_regnamespace('{_SCHEMA}'), 'pg_namespace') = '{_SCHEMA_COMMENT}' THEN
        DROP SCHEMA {_SCHEMA};
    END IF;
END
$held$
"""


def upgrade() -> None:
    set_lock_timeout()
    op.execute(_UPGRADE)


def downgrade() -> None:
    set_lock_timeout()
    op.execute(_DOWNGRADE)

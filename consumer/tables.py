"""SQLAlchemy Core metadata of the two tables this service writes, as the migrations leave them.

Identifiers follow Prisma's default mapping (``CONTRACT.md`` §2), so they are quoted camelCase:
``execution_record.c.requestId`` is the column ``"requestId"`` of ``"ExecutionRecord"``.

This metadata describes an *empty* database brought to head by ``migrations/``: the baseline's
stand-in tables (``"ExecutionRecord"`` of Project A, ``"Tenant"`` of Project C) plus the service's
nullable columns. On a production database the real tables have more columns of their own, which
this service neither reads nor declares. ``tests/test_migrations.py`` checks with Alembic's
autogenerate comparison that this metadata and the migrations agree.

The table and column comments are the migrations' ownership markers: the baseline comments a table
only when it created it, the additive revision comments a column only when it added it, and each
downgrade removes only what carries its marker (see ``migrations/versions``).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

__all__ = [
    "ADDED_COLUMN_COMMENT_PREFIX",
    "BASELINE_TABLE_COMMENT",
    "VERSION_TABLE",
    "execution_record",
    "metadata",
    "tenant",
]

#: Alembic's version table for this service (its own name: other projects may use Alembic too).
VERSION_TABLE = "routing_persistence_version"

#: The comment the baseline puts on a table it created (and only then).
BASELINE_TABLE_COMMENT = (
    "Created by the routing-persistence baseline migration as a stand-in for the owning project "
    "table; its downgrade drops it."
)
#: Every column the additive revision added carries a comment starting with this.
ADDED_COLUMN_COMMENT_PREFIX = "Added by routing-persistence"


def _added(meaning: str) -> str:
    return f"{ADDED_COLUMN_COMMENT_PREFIX}: {meaning}"


metadata = MetaData()

execution_record = Table(
    "ExecutionRecord",
    metadata,
    # --- Project A's columns (the baseline's stand-in; never updated by this service) ----------
    Column("id", Text, primary_key=True),
    Column("requestId", Text, nullable=False),
    Column("tenantId", Text, nullable=True),
    Column("createdAt", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    # --- this service's columns: nullable, no defaults ----------------------------------------
    Column(
        "routingSnapshot", JSONB, comment=_added("payload of the newest routing.snapshot event")
    ),
    Column(
        "routingSnapshotOccurredAt",
        TIMESTAMP(timezone=True),
        comment=_added("occurredAt of the event that wrote routingSnapshot"),
    ),
    Column(
        "routingSnapshotEventId",
        UUID(as_uuid=True),
        comment=_added("eventId of the event that wrote routingSnapshot"),
    ),
    Column("actualCost", JSONB, comment=_added("payload of the newest routing.cost event")),
    Column(
        "actualCostOccurredAt",
        TIMESTAMP(timezone=True),
        comment=_added("occurredAt of the event that wrote actualCost"),
    ),
    Column(
        "actualCostEventId",
        UUID(as_uuid=True),
        comment=_added("eventId of the event that wrote actualCost"),
    ),
    # Prisma names its unique indexes "<Table>_<column>_key"; ON CONFLICT ("requestId") uses it.
    Index("ExecutionRecord_requestId_key", "requestId", unique=True),
    comment=BASELINE_TABLE_COMMENT,
)

tenant = Table(
    "Tenant",
    metadata,
    # --- Project C's columns (the baseline's stand-in; never updated by this service) ----------
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=True),
    # --- this service's columns ---------------------------------------------------------------
    Column("routingPolicy", JSONB, comment=_added("payload of the newest tenant.policy event")),
    Column(
        "routingPolicyOccurredAt",
        TIMESTAMP(timezone=True),
        comment=_added("occurredAt of the event that wrote routingPolicy"),
    ),
    Column(
        "routingPolicyEventId",
        UUID(as_uuid=True),
        comment=_added("eventId of the event that wrote routingPolicy"),
    ),
    comment=BASELINE_TABLE_COMMENT,
)

"""The tables this service writes, defined once: their key columns and the JSON fields it owns.

Identifiers follow Prisma's default mapping (docs/contract.md §2): quoted camelCase. Each
:class:`JsonField` is one payload column and its two version columns; the SQL of the pipeline
(:mod:`consumer.pipeline.sql`) and the SQLAlchemy :data:`metadata` below are both built from
these definitions. The metadata describes an empty database at the newest migration (the
baseline's stand-in tables plus the service's columns); ``tests/test_migrations.py`` checks
with Alembic's autogenerate comparison that it and the migrations agree.

Comments are the migrations' ownership markers: the baseline comments a table only when it
created it, the additive revisions comment the columns they added, and each downgrade removes
only what carries its marker.

:data:`held_field` is the service's own table, in a schema of its own (:data:`HELD_SCHEMA`,
never ``public``, which Project A's Prisma introspects): one row per held event, a snapshot or
cost whose ``"ExecutionRecord"`` row did not exist yet (docs/contract.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

from schemas import EventType

__all__ = [
    "ACTUAL_COST",
    "ADDED_COLUMN_COMMENT_PREFIX",
    "BASELINE_TABLE_COMMENT",
    "EXECUTION_RECORD",
    "HELD_SCHEMA",
    "HELD_TABLE",
    "HELD_TABLE_COMMENT",
    "ROUTING_POLICY",
    "ROUTING_SNAPSHOT",
    "TENANT",
    "VERSION_TABLE",
    "JsonField",
    "TargetTable",
    "execution_record",
    "held_field",
    "metadata",
    "table_of",
    "tenant",
]

#: Alembic's version table for this service (its own name: other projects may use Alembic too).
VERSION_TABLE: Final = "routing_persistence_version"

#: The service's own schema and its table of held fields.
HELD_SCHEMA: Final = "routing_persistence"
HELD_TABLE: Final = "held_field"
#: The comment revision 0004 puts on the held table.
HELD_TABLE_COMMENT: Final = (
    'Created by routing-persistence: snapshots and costs held until their "ExecutionRecord" row '
    "exists (docs/contract.md §3)."
)

#: The comment the baseline puts on a table it created (and only then).
BASELINE_TABLE_COMMENT: Final = (
    "Created by the routing-persistence baseline migration as a stand-in for the owning project "
    "table; its downgrade drops it."
)
#: Every column an additive revision added carries a comment starting with this.
ADDED_COLUMN_COMMENT_PREFIX: Final = "Added by routing-persistence"


@dataclass(frozen=True, slots=True)
class JsonField:
    """A payload column and its version, ``(occurredAt, eventId)`` of the event that wrote it."""

    column: str
    event_type: EventType

    @property
    def occurred_at(self) -> str:
        """The column of the writing event's ``occurredAt`` (timestamptz)."""
        return f"{self.column}OccurredAt"

    @property
    def event_id(self) -> str:
        """The column of the writing event's ``eventId`` (uuid)."""
        return f"{self.column}EventId"


@dataclass(frozen=True, slots=True)
class TargetTable:
    """A table the service writes: its name, the key its events address rows by, its fields."""

    name: str
    key: str
    fields: tuple[JsonField, ...]
    #: The owner's tenant column (tenant isolation), when rows carry one.
    tenant: str | None


ROUTING_SNAPSHOT: Final = JsonField("routingSnapshot", EventType.SNAPSHOT)
ACTUAL_COST: Final = JsonField("actualCost", EventType.COST)
ROUTING_POLICY: Final = JsonField("routingPolicy", EventType.POLICY)

#: Project A's table; rows addressed by ``"requestId"`` (unique).
EXECUTION_RECORD: Final = TargetTable(
    "ExecutionRecord", "requestId", (ROUTING_SNAPSHOT, ACTUAL_COST), tenant="tenantId"
)
#: Project C's table; rows addressed by ``"id"``, the tenant id.
TENANT: Final = TargetTable("Tenant", "id", (ROUTING_POLICY,), tenant=None)

_TABLE_OF: Final = {f.event_type: t for t in (EXECUTION_RECORD, TENANT) for f in t.fields}


def table_of(event_type: EventType) -> TargetTable:
    """The table an event of ``event_type`` writes."""
    return _TABLE_OF[event_type]


def _added(meaning: str) -> str:
    return f"{ADDED_COLUMN_COMMENT_PREFIX}: {meaning}"


def _field_columns(field: JsonField) -> list[Column[object]]:
    event = field.event_type.value
    return [
        Column(field.column, JSONB, comment=_added(f"payload of the newest {event} event")),
        Column(
            field.occurred_at,
            TIMESTAMP(timezone=True),
            comment=_added(f"occurredAt of the event that wrote {field.column}"),
        ),
        Column(
            field.event_id,
            UUID(as_uuid=True),
            comment=_added(f"eventId of the event that wrote {field.column}"),
        ),
    ]


metadata = MetaData()

execution_record = Table(
    EXECUTION_RECORD.name,
    metadata,
    # Project A's columns (the baseline's stand-in; never updated by this service).
    Column("id", Text, primary_key=True),
    Column("requestId", Text, nullable=False),
    Column("tenantId", Text, nullable=True),
    Column("createdAt", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    *[c for f in EXECUTION_RECORD.fields for c in _field_columns(f)],
    # Prisma names its unique indexes "<Table>_<column>_key"; ON CONFLICT ("requestId") uses it.
    Index("ExecutionRecord_requestId_key", "requestId", unique=True),
    comment=BASELINE_TABLE_COMMENT,
)

tenant = Table(
    TENANT.name,
    metadata,
    # Project C's columns (the baseline's stand-in; never updated by this service).
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=True),
    *[c for f in TENANT.fields for c in _field_columns(f)],
    comment=BASELINE_TABLE_COMMENT,
)

held_field = Table(
    HELD_TABLE,
    metadata,
    # What the pipeline needs to apply the event once the row exists ...
    Column("request_id", Text, primary_key=True),
    Column("field", Text, primary_key=True),  # the JsonField's column: "routingSnapshot", ...
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("occurred_at", TIMESTAMP(timezone=True), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("held_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
    # ... and what its dead letter needs: the record as it was consumed, and where it was.
    Column("record_key", LargeBinary, nullable=True),
    Column("record_value", LargeBinary, nullable=False),
    # JSON text [[name, base64 value or null], ...]: text, not jsonb, which refuses \u0000.
    Column("record_headers", Text, nullable=True),
    Column("source_topic", Text, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("source_timestamp", BigInteger, nullable=False),  # ms, as the record had it
    Index("held_field_held_at_idx", "held_at"),
    schema=HELD_SCHEMA,
    comment=HELD_TABLE_COMMENT,
)

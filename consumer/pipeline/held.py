"""Held fields: snapshots and costs whose ``"ExecutionRecord"`` row does not exist yet.

Under ``ROUTING_MISSING_ROW_POLICY=park`` (docs/contract.md §3) such an event is written to the
service's own table (:data:`consumer.tables.held_field`) in the same transaction as the rest of
its batch, so committing the batch's offsets afterwards loses nothing. A row keeps the event's
row key, field and version (to apply it later through the same rounds) and the Kafka record as
it was consumed: key, value bytes, headers, topic, partition, offset and timestamp (to
dead-letter it later exactly like any other record).

:func:`hold_events` writes them (one statement; the same event held again is a no-op);
:class:`HeldEvent` is one read back; :func:`held_stats` counts them. Releasing and expiring
them is :mod:`.release`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.pipeline.columns import PendingEvent
from consumer.tables import EXECUTION_RECORD, HELD_SCHEMA, HELD_TABLE
from schemas import EventType

__all__ = [
    "HELD_COLUMNS",
    "QUALIFIED_HELD_TABLE",
    "HeldEvent",
    "HeldKey",
    "HeldStats",
    "field_of",
    "held_key",
    "held_stats",
    "hold_events",
]

#: The held table, schema-qualified (the service never relies on ``search_path`` for it).
QUALIFIED_HELD_TABLE: Final = f"{HELD_SCHEMA}.{HELD_TABLE}"

#: The columns :class:`HeldEvent` is read from, in order (``SELECT {HELD_COLUMNS} FROM ...``).
HELD_COLUMNS: Final = (
    "request_id, field, event_id, occurred_at, tenant_id, held_at, record_key, record_value, "
    "record_headers, source_topic, source_partition, source_offset, source_timestamp"
)

_FIELD_OF: Final = {f.event_type: f.column for f in EXECUTION_RECORD.fields}
_TYPE_OF: Final = {f.column: str(f.event_type) for f in EXECUTION_RECORD.fields}

# held_at is left to its default, now(): the transaction's start, the same for the whole batch.
_HOLD_SQL: Final = f"""
INSERT INTO {QUALIFIED_HELD_TABLE} (request_id, field, event_id, occurred_at, tenant_id,
    record_key, record_value, record_headers, source_topic, source_partition, source_offset,
    source_timestamp)
SELECT k, f, e, o, t, rk, rv, rh, st, sp, so, ts
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[], $5::text[], $6::bytea[],
    $7::bytea[], $8::text[], $9::text[], $10::int[], $11::bigint[], $12::bigint[])
    AS u(k, f, e, o, t, rk, rv, rh, st, sp, so, ts)
ON CONFLICT (request_id, field, event_id) DO NOTHING
RETURNING request_id, field, event_id
"""

_STATS_SQL: Final = f"""
SELECT field, count(*) AS n, min(held_at) AS oldest,
    extract(epoch FROM clock_timestamp() - min(held_at)) AS age_s
FROM {QUALIFIED_HELD_TABLE} GROUP BY field
"""


def field_of(event_type: EventType) -> str:
    """The ``"ExecutionRecord"`` column an event of ``event_type`` writes (the held ``field``)."""
    return _FIELD_OF[event_type]


def _encode_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    # JSON for operators' eyes (names readable), values base64: they are arbitrary bytes.
    if not headers:
        return None
    return json.dumps(
        [[name, None if v is None else base64.b64encode(v).decode()] for name, v in headers]
    )


def _decode_headers(text: str | None) -> tuple[tuple[str, bytes], ...]:
    if not text:
        return ()
    return tuple(
        (str(name), b"" if value is None else base64.b64decode(value))
        for name, value in json.loads(text)
    )


HeldKey = tuple[str, str, uuid.UUID]


def held_key(event: PendingEvent) -> HeldKey:
    """The held table's primary key of ``event``: ``(request_id, field, event_id)``."""
    return (event.event.request_id or "", field_of(event.event.type), event.event.event_id)


async def hold_events(conn: AsyncConnection, events: Sequence[PendingEvent]) -> set[HeldKey]:
    """Hold ``events`` (snapshots and costs, each with its ``source`` record) in one statement;
    return the keys (:func:`held_key`) of those held now.

    Part of the caller's transaction. An event held already (same row key, field and eventId:
    a copy, redelivered or replayed) is left as it was and its key is not returned. Raises
    ``ValueError`` for an event without its source record (a bug).
    """
    if not events:
        return set()
    columns: list[list[Any]] = [[] for _ in range(12)]
    for pending in events:
        record, event = pending.source, pending.event
        if record is None or record.value is None:
            raise ValueError(f"event {event.event_id} cannot be held without its source record")
        row = (
            event.request_id,
            field_of(event.type),
            event.event_id,
            event.occurred_at,
            event.tenant_id,
            record.key,
            record.value,
            _encode_headers(record.headers),
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    result = await conn.exec_driver_sql(_HOLD_SQL, tuple(columns))
    rows: list[Any] = list(result.all())
    return {(str(r[0]), str(r[1]), r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """One held row, read back with :data:`HELD_COLUMNS`."""

    request_id: str
    field: str
    event_id: uuid.UUID
    occurred_at: datetime
    tenant_id: str
    held_at: datetime
    record: ConsumerRecord[bytes, bytes]

    @property
    def event_type(self) -> str:
        """The held event's ``type`` (``routing.snapshot`` or ``routing.cost``)."""
        return _TYPE_OF[self.field]

    @property
    def key(self) -> HeldKey:
        """The primary key: ``(request_id, field, event_id)``."""
        return (self.request_id, self.field, self.event_id)

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> HeldEvent:
        (request_id, field, event_id, occurred_at, tenant_id, held_at, key, value, headers,
         topic, partition, offset, timestamp) = row  # fmt: skip
        key, value = (bytes(key) if key is not None else None), bytes(value)
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=-1 if key is None else len(key),
            serialized_value_size=len(value),
            headers=_decode_headers(headers),
        )
        return cls(request_id, field, event_id, occurred_at, tenant_id, held_at, record)


@dataclass(frozen=True, slots=True)
class HeldStats:
    """How many fields are held, per field, and the age of the oldest (``None``: none held)."""

    by_field: dict[str, int]
    oldest: datetime | None
    oldest_age_s: float | None

    @property
    def total(self) -> int:
        """Held fields in all."""
        return sum(self.by_field.values())


async def held_stats(engine: AsyncEngine) -> HeldStats:
    """Count the held fields (one short read-only query; the age uses the database's clock)."""
    async with engine.connect() as conn:
        rows: list[Any] = list((await conn.exec_driver_sql(_STATS_SQL)).all())
    by_field = {str(r[0]): int(r[1]) for r in rows}
    if not rows:
        return HeldStats(by_field, None, None)
    oldest_row = min(rows, key=lambda r: r[2])
    return HeldStats(by_field, oldest_row[2], float(max(r[3] for r in rows)))

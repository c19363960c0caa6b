"""The batch as the hot loops read it: each event's result, its stored text, and the columns.

:class:`PendingEvent` is a decoded event with the JSON text PostgreSQL stores its payload from;
:class:`Columns` holds the batch column by column, indexed like it; :class:`EventResult` is what
happened to one event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiokafka.structs import ConsumerRecord

from consumer.outcomes import Outcome
from consumer.pipeline.decode import ConsumerEvent
from schemas import EventType, ReasonCode

__all__ = ["APPLIED", "HELD", "STALE", "Columns", "EventResult", "PendingEvent"]


@dataclass(frozen=True, slots=True)
class EventResult:
    """What happened to one event: ``applied``, ``stale`` or ``dead_lettered`` with a reason."""

    outcome: Outcome
    reason: ReasonCode | None = None
    message: str = ""


APPLIED: Final = EventResult(Outcome.APPLIED)
STALE: Final = EventResult(Outcome.STALE)
HELD: Final = EventResult(Outcome.HELD)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class PendingEvent(msgspec.Struct, frozen=True, gc=False):
    """A decoded event and the JSON text (UTF-8) PostgreSQL stores its payload from.

    Exactly one text is set: ``payload``, the payload's JSON text as it stands in the record
    (:attr:`.decode.ConsumerEvent.payload_json`), or else ``raw``, the whole record,
    whose ``payload`` PostgreSQL then takes. ``source`` is the Kafka record it came from: what
    holding it needs (``park``), and its dead letter. A msgspec struct, not a frozen
    dataclass: one is made per record, and it is built in a tenth of the time.
    """

    event: ConsumerEvent
    raw: bytes | None
    payload: bytes | None = None
    source: ConsumerRecord[Any, Any] | None = None

    @classmethod
    def of(
        cls, event: ConsumerEvent, value: bytes, source: ConsumerRecord[Any, Any] | None = None
    ) -> PendingEvent:
        """The event the consumer decoded from record ``value`` (valid, so UTF-8)."""
        if event.payload_json is None:
            return cls(event, value, None, source)
        return cls(event, None, event.payload_json, source)


@dataclass(frozen=True, slots=True)
class Columns:
    """The batch as columns, indexed like it (the hot loops read these, not the events)."""

    key: list[str]
    tenant: list[str]
    occurred: list[datetime]
    micros: list[int]  # occurred, as integer microseconds since 1970-01-01 UTC
    event_id: list[uuid.UUID]
    raw: list[bytes | None]
    payload: list[bytes | None]

    @classmethod
    def of(cls, events: Sequence[PendingEvent]) -> Columns:
        cols = cls([], [], [], [], [], [], [])
        # One pass, bound methods: this runs for every event of every batch.
        add_key, add_tenant, add_occurred = (
            cols.key.append,
            cols.tenant.append,
            cols.occurred.append,
        )
        add_micros, add_event_id, add_raw, add_payload = (
            cols.micros.append,
            cols.event_id.append,
            cols.raw.append,
            cols.payload.append,
        )
        policy = EventType.POLICY
        for pending in events:
            event = pending.event
            # The decoder guarantees a requestId for snapshots and costs.
            add_key(event.tenant_id if event.type is policy else event.request_id or "")
            add_tenant(event.tenant_id)
            add_occurred(event.occurred_at)
            # Exact, and a third of what asyncpg's encoding of a datetime costs.
            since = event.occurred_at - _EPOCH
            add_micros(since.days * 86_400_000_000 + since.seconds * 1_000_000 + since.microseconds)
            add_event_id(event.event_id)
            add_raw(pending.raw)
            add_payload(pending.payload)
        return cols

    def version(self, i: int) -> tuple[datetime, uuid.UUID]:
        """The contract's version of event ``i``: (occurredAt, eventId)."""
        return (self.occurred[i], self.event_id[i])

    def is_copy(self, i: int, j: int) -> bool:
        """Whether events ``i`` and ``j`` are the same record: same version, same JSON text."""
        return (
            self.event_id[i] == self.event_id[j]
            and self.occurred[i] == self.occurred[j]
            and self.payload[i] == self.payload[j]
            and self.raw[i] == self.raw[j]
        )

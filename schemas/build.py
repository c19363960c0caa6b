"""The producer side: build the Kafka record of one event (pure; publishing is the caller's).

>>> event = build_event(EventType.COST, cost, tenant_id="t1", request_id="req-1")
>>> await producer.send_and_wait(topic, event.value, key=event.key)
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel

from schemas.codes import EventType
from schemas.decode import Rejection, decode_event
from schemas.fields import SCHEMA_VERSION, format_rfc3339
from schemas.jsoncodec import dumps

__all__ = ["OutgoingEvent", "build_event", "to_json_value"]


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One record ready to publish: ``key`` and ``value`` are the exact bytes to send."""

    type: EventType
    key: bytes
    value: bytes
    event_id: uuid.UUID
    occurred_at: datetime


def build_event(
    type: EventType,  # the envelope's own field name
    payload: Mapping[str, Any] | BaseModel,
    *,
    tenant_id: str,
    request_id: str | None = None,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    validate: bool = True,
) -> OutgoingEvent:
    """Wrap ``payload`` in a schemaVersion 1 envelope and encode it as the record to publish.

    ``eventId`` is a fresh UUID4 and ``occurredAt`` the current UTC time unless given (RFC 3339,
    offset, microseconds). The key is ``request_id`` for snapshots and costs, ``tenant_id`` for
    policies (UTF-8). A model payload is written with its unknown fields; Decimals stay exact.

    With ``validate`` (the default) the encoded record is decoded again exactly as the consumer
    will, and ``ValueError`` names the reason and field if the consumer would reject it. Raises
    ``ValueError`` also for a snapshot or cost without ``request_id`` or a naive ``occurred_at``.
    """
    event_type = EventType(type)
    if event_type is not EventType.POLICY and request_id is None:
        raise ValueError(f"request_id is required for {event_type} events")
    event_id = uuid.uuid4() if event_id is None else event_id
    occurred_at = datetime.now(UTC) if occurred_at is None else occurred_at
    body = payload.model_dump(mode="python") if isinstance(payload, BaseModel) else payload
    envelope: dict[str, Any] = {
        "eventId": str(event_id),
        "type": event_type.value,
        "schemaVersion": SCHEMA_VERSION,
        "occurredAt": format_rfc3339(occurred_at),
        "tenantId": tenant_id,
    }
    if request_id is not None:
        envelope["requestId"] = request_id
    envelope["payload"] = to_json_value(body)
    value = dumps(envelope)
    if validate:
        decoded = decode_event(value)
        if isinstance(decoded, Rejection):
            raise ValueError(f"{decoded.reason}: {decoded.message}")
    key = tenant_id if event_type is EventType.POLICY else request_id
    assert key is not None
    return OutgoingEvent(event_type, key.encode("utf-8"), value, event_id, occurred_at)


def to_json_value(value: Any) -> Any:
    """``value`` with datetimes as RFC 3339 strings, UUIDs and enums as their strings.

    Mappings become dicts and tuples lists; Decimals, numbers, strings, booleans and None pass
    through unchanged for :func:`schemas.jsoncodec.dumps`.
    """
    if isinstance(value, Mapping):
        return {key: to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum) and not isinstance(value, str | int):
        return value.value
    return value

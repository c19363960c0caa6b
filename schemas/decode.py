"""One record value -> a valid event or a rejection with its reason code (``docs/contract.md`` §3).

:func:`decode_event` never raises for any input: the consumer calls it where the record's topic,
partition and offset are known, and dead-letters every :class:`Rejection`. The envelope is checked
field by field, the payload by its pydantic model (:mod:`schemas.models`), the tenant rule by
:func:`schemas.rules.check_tenant`. The event keeps the payload dict exactly as decoded (Decimals,
unknown fields). This is the reference: the consumer's own decoder gives the same verdict faster
for the records it can prove valid and hands every other record to this function.

Order of checks, so that each record gets the most useful code: size (before parsing) ->
``payload_too_large``; UTF-8, nesting (64 levels), JSON (integers of 4,300 digits at most) ->
``invalid_json``; an object -> ``not_an_object``;
``schemaVersion`` an integer above 1 -> ``unsupported_schema_version``; ``type`` a string this
version does not know -> ``unsupported_event_type``; then each field (``schema_violation``) and the
rules relating fields (``rule_violation``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from schemas.codes import EventType, ReasonCode
from schemas.fields import ID_MAX_LENGTH, SCHEMA_VERSION, json_kind, parse_event_id, parse_rfc3339
from schemas.jsoncodec import loads
from schemas.models import PAYLOAD_MODELS, TENANT_PAYLOADS, format_error
from schemas.rules import check_tenant

__all__ = ["DEFAULT_MAX_BYTES", "DecodedEvent", "Rejection", "decode_event"]

#: Default limit of a record value (1 MiB, ``docs/contract.md`` §3).
DEFAULT_MAX_BYTES: Final = 1_048_576
#: Longest ``Rejection.message``; a message names a field, it never carries the record.
MAX_MESSAGE_LENGTH: Final = 500

_TYPES: Final = {t.value: t for t in EventType}
_VALIDATORS: Final = {
    t: m.__pydantic_validator__.validate_python for t, m in PAYLOAD_MODELS.items()
}
_KEYED_BY_REQUEST: Final = frozenset({EventType.SNAPSHOT, EventType.COST})
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """A valid event. ``occurred_at`` is aware and in UTC; ``payload`` is as decoded (Decimals).

    ``request_id`` is always set for ``routing.snapshot`` and ``routing.cost``; for a policy it is
    whatever the envelope carried (usually ``None``).
    """

    event_id: uuid.UUID
    type: EventType
    occurred_at: datetime
    tenant_id: str
    request_id: str | None
    payload: dict[str, Any]

    @property
    def version(self) -> tuple[datetime, uuid.UUID]:
        """``(occurredAt, eventId)``: the greater version wins a row (``docs/contract.md`` §3)."""
        return (self.occurred_at, self.event_id)

    @property
    def row_key(self) -> str:
        """The row this event writes: ``requestId`` for snapshots and costs, else ``tenantId``."""
        if self.type in _KEYED_BY_REQUEST:
            assert self.request_id is not None  # decode_event guarantees it
            return self.request_id
        return self.tenant_id


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that can never be applied: its reason code and a readable, bounded message.

    ``event_type`` is the record's type when the decoder got as far as reading a known one.
    """

    reason: ReasonCode
    message: str
    event_type: EventType | None = None


class _Reject(Exception):  # internal control flow, never escapes this module
    def __init__(self, reason: ReasonCode, message: str) -> None:
        self.reason = reason
        self.message = message
        self.event_type: EventType | None = None


def decode_event(value: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> DecodedEvent | Rejection:
    """Decode and validate one record value; never raises for any input bytes.

    Returns a :class:`DecodedEvent` when every rule of ``docs/contract.md`` §1 holds, else a
    :class:`Rejection` whose ``reason`` is one of the decode codes of §3 and whose ``message``
    names the field path (``payload.fallbacks[1].model: ...``) in at most 500 characters.

    An exception escaping is a bug in this module, never a verdict on the record: it propagates
    on purpose, so the consumer stops loudly and commits nothing, instead of dead-lettering a
    whole stream as "invalid" behind a broken decoder. The fuzz run (``bench/fuzz.py``) holds
    this module to "no exception for any bytes".
    """
    try:
        return _decode(value, max_bytes)
    except _Reject as rejected:
        return Rejection(rejected.reason, _bounded(rejected.message), rejected.event_type)


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 3] + "..."


def _schema(message: str) -> _Reject:
    return _Reject(ReasonCode.SCHEMA_VIOLATION, message)


def _decode(value: bytes, max_bytes: int) -> DecodedEvent:
    if value is None:
        raise _Reject(ReasonCode.INVALID_JSON, "record has no value")
    size = len(value)
    if size > max_bytes:
        raise _Reject(
            ReasonCode.PAYLOAD_TOO_LARGE,
            f"record value is {size} bytes, over the {max_bytes} limit",
        )
    try:
        document = loads(value)
    except (ValueError, RecursionError) as exc:
        raise _Reject(ReasonCode.INVALID_JSON, f"not valid JSON: {exc}") from None
    if type(document) is not dict:
        raise _Reject(
            ReasonCode.NOT_AN_OBJECT, f"top level is a JSON {json_kind(document)}, not an object"
        )

    version = document.get("schemaVersion", _MISSING)
    if type(version) is int and version > SCHEMA_VERSION:
        raise _Reject(
            ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schemaVersion {version} is not supported (this consumer reads {SCHEMA_VERSION})",
        )
    raw_type = document.get("type", _MISSING)
    if type(raw_type) is not str:
        raise _schema(_problem("type", raw_type, "a string"))
    event_type = _TYPES.get(raw_type)
    if event_type is None:
        raise _Reject(
            ReasonCode.UNSUPPORTED_EVENT_TYPE,
            f"type: {raw_type[:64]!r} is not one of {', '.join(_TYPES)}",
        )
    try:
        return _decode_typed(document, event_type, version)
    except _Reject as rejected:
        rejected.event_type = event_type
        raise


def _decode_typed(document: dict[str, Any], event_type: EventType, version: object) -> DecodedEvent:
    """The rest of the checks, once the record's type is known."""
    if version is _MISSING:
        raise _schema("schemaVersion: Field required")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _schema(f"schemaVersion: Input should be the integer {SCHEMA_VERSION}")

    try:
        event_id = parse_event_id(document.get("eventId"))
    except PydanticCustomError as exc:
        raise _schema(_field_error("eventId", document, exc)) from None
    try:
        occurred_at = parse_rfc3339(document.get("occurredAt")).astimezone(UTC)
    except PydanticCustomError as exc:
        raise _schema(_field_error("occurredAt", document, exc)) from None

    tenant_id = document.get("tenantId", _MISSING)
    if type(tenant_id) is not str or not tenant_id or len(tenant_id) > ID_MAX_LENGTH:
        raise _schema(_problem("tenantId", tenant_id, "a string of 1 to 128 characters"))
    request_id = document.get("requestId")
    if request_id is None:
        if event_type in _KEYED_BY_REQUEST:
            raise _schema(f"requestId: Field required for {event_type}")
    elif type(request_id) is not str or not request_id or len(request_id) > ID_MAX_LENGTH:
        raise _schema(_problem("requestId", request_id, "a string of 1 to 128 characters"))

    payload = document.get("payload", _MISSING)
    if type(payload) is not dict:
        raise _schema(_problem("payload", payload, "an object"))
    try:
        _VALIDATORS[event_type](payload)
    except ValidationError as exc:
        errors = exc.errors()
        is_rule, path, detail = format_error(errors[0], "payload")
        message = f"{path}: {detail}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        raise _Reject(
            ReasonCode.RULE_VIOLATION if is_rule else ReasonCode.SCHEMA_VIOLATION, message
        ) from None
    problem = (
        check_tenant(payload["tenantId"], tenant_id) if event_type in TENANT_PAYLOADS else None
    )
    if problem is not None:
        raise _Reject(ReasonCode.RULE_VIOLATION, f"payload.{problem.path}: {problem.message}")
    return DecodedEvent(event_id, event_type, occurred_at, tenant_id, request_id, payload)


def _problem(field: str, value: object, expected: str) -> str:
    if value is _MISSING:
        return f"{field}: Field required"
    return f"{field}: Input should be {expected}, got {json_kind(value)}"


def _field_error(field: str, document: dict[str, Any], exc: PydanticCustomError) -> str:
    if field not in document:
        return f"{field}: Field required"
    return f"{field}: {exc.message()}"

"""The closed vocabularies of the contract: event types and dead-letter reason codes.

Both are :class:`enum.StrEnum`, so a member *is* its wire string
(``EventType.COST == "routing.cost"``) and can be written to a header or a JSON field as it is.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DECODE_REASONS", "EventType", "ReasonCode"]


class EventType(StrEnum):
    """The envelope's ``type`` (``docs/contract.md`` §1); each names one payload model."""

    SNAPSHOT = "routing.snapshot"
    COST = "routing.cost"
    POLICY = "tenant.policy"


class ReasonCode(StrEnum):
    """Dead-letter reason codes (``docs/contract.md`` §3); values are the ``dlq.reason`` strings."""

    #: Not UTF-8, not JSON (NaN/Infinity included), nested deeper than 64 levels, or an integer
    #: literal of more than 4,300 digits (``docs/decoding.md``).
    INVALID_JSON = "invalid_json"
    #: Valid JSON whose top level is not an object.
    NOT_AN_OBJECT = "not_an_object"
    #: One field missing, of the wrong type or format, or outside its own bounds.
    SCHEMA_VIOLATION = "schema_violation"
    #: A rule relating two or more fields (cost total, candidate count, tenant equality, lists).
    RULE_VIOLATION = "rule_violation"
    #: ``type`` is a string this version does not know.
    UNSUPPORTED_EVENT_TYPE = "unsupported_event_type"
    #: ``schemaVersion`` is an integer greater than the one this version understands.
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    #: The record value is larger than the configured limit (1 MiB by default).
    PAYLOAD_TOO_LARGE = "payload_too_large"
    #: A policy for a tenant that has no ``"Tenant"`` row (decided by the database).
    UNKNOWN_TENANT = "unknown_tenant"
    #: The event's tenant differs from the row's ``"tenantId"`` (decided by the database).
    TENANT_MISMATCH = "tenant_mismatch"
    #: PostgreSQL refused the record itself with a permanent error.
    DB_REJECTED = "db_rejected"
    #: Held for an ``"ExecutionRecord"`` row that did not appear within the TTL.
    ROW_MISSING = "row_missing"


#: The codes :func:`schemas.decode.decode_event` can return; the rest need the database.
DECODE_REASONS: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.INVALID_JSON,
        ReasonCode.NOT_AN_OBJECT,
        ReasonCode.SCHEMA_VIOLATION,
        ReasonCode.RULE_VIOLATION,
        ReasonCode.UNSUPPORTED_EVENT_TYPE,
        ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
        ReasonCode.PAYLOAD_TOO_LARGE,
    }
)

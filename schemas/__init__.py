"""The event contract of routing-persistence (``docs/contract.md`` §1-§3), usable on its own.

Depends on pydantic and the standard library only, so any Python producer can vendor it:

* :mod:`schemas.codes`: :class:`EventType`, :class:`ReasonCode`;
* :mod:`schemas.jsoncodec`: :func:`loads` / :func:`dumps`, JSON with exact decimals, and the
  contract's limits :data:`MAX_DEPTH` and :data:`MAX_INT_DIGITS`;
* :mod:`schemas.fields`: the one-field types (ids, RFC 3339 times, money, bounded strings);
* :mod:`schemas.rules`: the rules relating fields, each one function returning a
  :class:`~schemas.rules.Problem` or ``None``;
* :mod:`schemas.models`: the pydantic models of the envelope and the three payloads;
* :mod:`schemas.decode`: :func:`decode_event`, one record -> :class:`DecodedEvent` or
  :class:`Rejection` (never raises);
* :mod:`schemas.build`: :func:`build_event`, the producer side;
* :mod:`schemas.export`: :func:`export_json_schemas`, JSON Schema draft 2020-12.
"""

from schemas.build import OutgoingEvent, build_event
from schemas.codes import DECODE_REASONS, EventType, ReasonCode
from schemas.decode import DEFAULT_MAX_BYTES, DecodedEvent, Rejection, decode_event
from schemas.export import export_json_schemas
from schemas.fields import SCHEMA_VERSION, format_rfc3339, parse_rfc3339
from schemas.jsoncodec import MAX_DEPTH, MAX_INT_DIGITS, OutOfRangeNumber, dumps, loads
from schemas.models import (
    PAYLOAD_MODELS,
    TENANT_PAYLOADS,
    ActualCost,
    CostEstimate,
    Envelope,
    ProviderModel,
    RoutingPlanSnapshot,
    TenantRoutingPolicy,
)
from schemas.rules import COST_TOLERANCE, PAYLOAD_RULES, Problem, check_tenant

__all__ = [
    "COST_TOLERANCE",
    "DECODE_REASONS",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "PAYLOAD_MODELS",
    "PAYLOAD_RULES",
    "SCHEMA_VERSION",
    "TENANT_PAYLOADS",
    "ActualCost",
    "CostEstimate",
    "DecodedEvent",
    "Envelope",
    "EventType",
    "OutOfRangeNumber",
    "OutgoingEvent",
    "Problem",
    "ProviderModel",
    "ReasonCode",
    "Rejection",
    "RoutingPlanSnapshot",
    "TenantRoutingPolicy",
    "build_event",
    "check_tenant",
    "decode_event",
    "dumps",
    "export_json_schemas",
    "format_rfc3339",
    "loads",
    "parse_rfc3339",
]

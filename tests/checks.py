"""Checks of decoder results, written apart from the decoders they check.

* :func:`contract_problems`: every way an accepted record breaks ``docs/contract.md`` §1, re-checked
  from the contract alone (no code shared with ``schemas``);
* :func:`rejection_problems`: a rejection with an unknown reason or an unbounded message;
* :func:`result_differences`: how the consumer's decoder's result differs from the reference's,
  stricter than ``==`` (types, Decimal digits, key order, the payload text).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from consumer.pipeline.decode import ConsumerEvent
from schemas import DecodedEvent, ReasonCode, Rejection, loads

__all__ = [
    "MAX_BYTES",
    "contract_problems",
    "rejection_problems",
    "result_differences",
]

MAX_BYTES = 1_048_576
MAX_MESSAGE = 500
_TOLERANCE = Decimal("0.000001")

# --- the independent contract checker ------------------------------------------------------------

# RFC 3339 section 5.6 date-time, written here from the RFC (not copied from schemas).
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", re.ASCII)
_TYPES = {"routing.snapshot", "routing.cost", "tenant.policy"}


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _integer(literal: str) -> int:
    if len(literal.removeprefix("-")) > 4300:  # the contract's longest integer literal
        raise ValueError("integer literal over 4300 digits")
    return int(literal)


def _parse_strict(value: bytes) -> Any:
    """RFC 8259 JSON from UTF-8 bytes; non-integers as Decimal; NaN/Infinity, lone surrogates,
    integers over 4300 digits and nesting deeper than 64 levels refused. Raises ValueError (or
    RecursionError) otherwise."""
    text = value.decode("utf-8")  # strict: invalid UTF-8 raises
    document = json.loads(text, parse_float=Decimal, parse_int=_integer, parse_constant=_refuse)
    stack = [(document, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        elif isinstance(item, dict | list):
            if level > 64:  # the top-level object or array is level 1
                raise ValueError("nested deeper than 64 levels")
            children = [*item, *item.values()] if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return document


def _is_number(value: object) -> bool:
    return type(value) is int or (type(value) is Decimal and value.is_finite())


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is not an integer on the wire


def _is_id(value: object) -> bool:
    return type(value) is str and 1 <= len(value) <= 128


def _is_nonempty_str(value: object) -> bool:
    return type(value) is str and len(value) >= 1


def _date_time(value: object) -> datetime | None:
    if type(value) is not str:
        return None
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if offset in ("Z", "z"):
            tz = UTC
        else:
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                return None
            delta = timedelta(hours=hours, minutes=minutes)
            tz = timezone(-delta if offset[0] == "-" else delta)
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _provider_model(value: object) -> bool:
    return (
        type(value) is dict
        and _is_nonempty_str(value.get("provider"))
        and _is_nonempty_str(value.get("model"))
    )


def _sum_matches(total: Decimal, a: Decimal, b: Decimal) -> bool:
    # Exact for any sane spread of exponents; beyond 10,000 digits the comparison is rounded (the
    # decoder documents the same cap, so a hostile 1E+999999999 costs microseconds).
    numbers = [total, a, b]
    nonzero = [n.adjusted() for n in numbers if n]
    top = max(nonzero, default=0)
    bottom = min(int(n.as_tuple().exponent) for n in numbers)
    ctx = Context(
        prec=min(max(top - bottom + 3, 28), 10_000),
        Emax=999_999_999_999_999_999,
        Emin=-999_999_999_999_999_999,
        traps=[],
    )
    return ctx.subtract(total, ctx.add(a, b)).copy_abs() <= _TOLERANCE


def _snapshot_problems(p: dict[str, Any], tenant: str) -> list[str]:
    problems = []
    for name in ("snapshotId", "strategy", "resolvedAlias"):
        if type(p.get(name)) is not str:
            problems.append(f"payload.{name} not a string")
    count = p.get("candidateCount")
    if not (type(count) is int and count >= 1):
        problems.append("payload.candidateCount not an integer >= 1")
    if _date_time(p.get("timestamp")) is None:
        problems.append("payload.timestamp not RFC 3339 with offset")
    estimate = p.get("costEstimate")
    if not (
        type(estimate) is dict
        and _is_number(estimate.get("totalCostUsd"))
        and estimate["totalCostUsd"] >= 0
    ):
        problems.append("payload.costEstimate.totalCostUsd not a number >= 0")
    if not _is_id(p.get("tenantId")):
        problems.append("payload.tenantId not 1..128 chars")
    elif p["tenantId"] != tenant:
        problems.append("payload.tenantId differs from the envelope's")
    if not _provider_model(p.get("primary")):
        problems.append("payload.primary not a provider/model")
    fallbacks = p.get("fallbacks")
    if type(fallbacks) is not list or not all(_provider_model(f) for f in fallbacks):
        problems.append("payload.fallbacks not a list of provider/model")
    elif type(count) is int and 1 + len(fallbacks) > count:
        problems.append("1 + len(fallbacks) > candidateCount")
    return problems


def _cost_problems(p: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("inputTokens", "outputTokens"):
        if not (_is_int(p.get(name)) and p[name] >= 0):
            problems.append(f"payload.{name} not an integer >= 0")
    money = ("inputCostUsd", "outputCostUsd", "totalCostUsd")
    for name in money:
        if not (_is_number(p.get(name)) and p[name] >= 0):
            problems.append(f"payload.{name} not a finite number >= 0")
    if not _is_nonempty_str(p.get("provider")):
        problems.append("payload.provider empty or not a string")
    if not problems:
        total, a, b = (Decimal(p[n]) for n in ("totalCostUsd", "inputCostUsd", "outputCostUsd"))
        if not _sum_matches(total, a, b):
            problems.append("totalCostUsd != inputCostUsd + outputCostUsd")
    return problems


def _policy_problems(p: dict[str, Any], tenant: str) -> list[str]:
    problems = []
    if not _is_id(p.get("tenantId")):
        problems.append("payload.tenantId not 1..128 chars")
    elif p["tenantId"] != tenant:
        problems.append("payload.tenantId differs from the envelope's")
    lists = {}
    for name in ("allowedProviders", "deniedProviders"):
        items = p.get(name)
        if type(items) is not list or not all(type(i) is str for i in items):
            problems.append(f"payload.{name} not a list of strings")
        elif len(set(items)) != len(items):
            problems.append(f"payload.{name} has duplicates")
        else:
            lists[name] = set(items)
    preferred = p.get("preferredProvider", ...)
    if preferred is ... or (preferred is not None and type(preferred) is not str):
        problems.append("payload.preferredProvider not a string or null")
    limit = p.get("maxCostPerRequestUsd", ...)
    if limit is ... or (limit is not None and not (_is_number(limit) and limit > 0)):
        problems.append("payload.maxCostPerRequestUsd not a number > 0 or null")
    if type(p.get("defaultStrategy")) is not str:
        problems.append("payload.defaultStrategy not a string")
    if len(lists) == 2:
        allowed, denied = lists["allowedProviders"], lists["deniedProviders"]
        if allowed & denied:
            problems.append("a provider is both allowed and denied")
        if type(preferred) is str:
            if preferred in denied:
                problems.append("preferredProvider is denied")
            if allowed and preferred not in allowed:
                problems.append("preferredProvider not in a non-empty allowedProviders")
    return problems


def contract_problems(value: bytes, decoded: DecodedEvent, max_bytes: int = MAX_BYTES) -> list[str]:
    """Every way an ACCEPTED record breaks ``docs/contract.md`` §1 or differs from what was decoded.

    Written from the contract alone (no code shared with ``schemas``); an empty list means the
    acceptance was right.
    """
    if len(value) > max_bytes:
        return [f"accepted a {len(value)}-byte record over the {max_bytes} limit"]
    try:
        doc = _parse_strict(value)
    except (ValueError, RecursionError) as exc:
        return [f"accepted a record that is not strict UTF-8 JSON ({type(exc).__name__})"]
    if type(doc) is not dict:
        return ["accepted a record that is not a JSON object"]
    problems = []
    if not (type(doc.get("eventId")) is str and _UUID.fullmatch(doc["eventId"])):
        problems.append("eventId not a UUID")
    elif uuid.UUID(doc["eventId"]) != decoded.event_id:
        problems.append("decoded event_id differs from eventId")
    kind = doc.get("type")
    if kind not in _TYPES:
        return [*problems, "type not one of the three"]
    if str(decoded.type) != kind:
        problems.append("decoded type differs")
    version = doc.get("schemaVersion")
    if not (_is_int(version) and version == 1):
        problems.append("schemaVersion not the integer 1")
    moment = _date_time(doc.get("occurredAt"))
    if moment is None:
        problems.append("occurredAt not RFC 3339 with offset")
    elif moment != decoded.occurred_at:
        problems.append("decoded occurred_at differs")
    tenant = doc.get("tenantId")
    if type(tenant) is not str or not _is_id(tenant):
        return [*problems, "tenantId not 1..128 chars"]
    if decoded.tenant_id != tenant:
        problems.append("decoded tenant_id differs")
    request = doc.get("requestId")
    if kind in ("routing.snapshot", "routing.cost") and not _is_id(request):
        problems.append("requestId not 1..128 chars")
    if kind == "tenant.policy" and request is not None and not _is_id(request):
        problems.append("requestId present but not 1..128 chars")
    if decoded.request_id != request:
        problems.append("decoded request_id differs")
    payload = doc.get("payload")
    if type(payload) is not dict:
        return [*problems, "payload not an object"]
    if decoded.payload != payload:
        problems.append("decoded payload differs from the document's (a field dropped or changed)")
    if kind == "routing.snapshot":
        problems += _snapshot_problems(payload, tenant)
    elif kind == "routing.cost":
        problems += _cost_problems(payload)
    else:
        problems += _policy_problems(payload, tenant)
    return problems


def rejection_problems(rejection: Rejection) -> list[str]:
    """What is wrong with a rejection itself (unknown reason, unbounded message)."""
    problems = []
    if rejection.reason not in set(ReasonCode):
        problems.append(f"unknown reason {rejection.reason!r}")
    if not isinstance(rejection.message, str) or len(rejection.message) > MAX_MESSAGE:
        problems.append("message not a string of at most 500 characters")
    return problems


# --- the consumer's decoder against the reference ----------------------------------------------


def _value_differences(fast: Any, reference: Any, path: str, out: list[str]) -> None:
    """Append where ``fast`` is not ``reference`` as decoded JSON: same types (bool is not int,
    int is not Decimal), same Decimal digits and exponent (``0.10`` is not ``0.1``), same keys in
    the same order, same items."""
    if type(fast) is not type(reference):
        out.append(f"{path}: {type(fast).__name__} vs {type(reference).__name__}")
    elif isinstance(reference, dict):
        if list(fast) != list(reference):
            out.append(f"{path}: keys {list(fast)[:8]} vs {list(reference)[:8]}")
            return
        for key, item in reference.items():
            _value_differences(fast[key], item, f"{path}.{key}", out)
    elif isinstance(reference, list):
        if len(fast) != len(reference):
            out.append(f"{path}: {len(fast)} items vs {len(reference)}")
            return
        for index, (a, b) in enumerate(zip(fast, reference, strict=True)):
            _value_differences(a, b, f"{path}[{index}]", out)
    elif isinstance(reference, Decimal):
        if fast.as_tuple() != reference.as_tuple():
            out.append(f"{path}: Decimal {fast} vs {reference}")
    elif fast != reference:
        out.append(f"{path}: {fast!r:.60} vs {reference!r:.60}")


def result_differences(
    fast: ConsumerEvent | DecodedEvent | Rejection,
    reference: DecodedEvent | Rejection,
    value: bytes | None = None,
) -> list[str]:
    """How ``fast`` differs from ``reference`` (``decode_event`` results of the consumer's decoder
    or the reference's, and the reference's); ``[]``: identical.

    Stricter than ``==``: a Rejection's reason and message; an event's every field with its
    type, ``occurredAt``'s offset and tzinfo too, and the payload as :func:`_value_differences`
    compares it (``==`` would take ``Decimal("1.0")`` for ``1`` and ignore key order). For a
    :class:`~consumer.pipeline.decode.ConsumerEvent`, the payload is its ``payload_json`` as
    :func:`schemas.jsoncodec.loads` reads it, and that text must be in the record ``value``
    (when given) as written; with no text (the whole record is kept) there is no payload to
    compare.
    """
    out: list[str] = []
    if isinstance(fast, ConsumerEvent) and isinstance(reference, DecodedEvent):
        if fast.payload_json is not None:
            if value is not None and fast.payload_json not in value:
                out.append(f"payload text not in the record: {fast.payload_json!r:.100}")
            _value_differences(loads(fast.payload_json), reference.payload, "payload", out)
        return _envelope_differences(fast, reference, out)
    if type(fast) is not type(reference):
        return [f"{type(fast).__name__} vs {type(reference).__name__}: {fast!r:.200}"]
    if isinstance(reference, Rejection):
        assert isinstance(fast, Rejection)
        if (fast.reason, fast.message) != (reference.reason, reference.message):
            return [f"rejection {fast!r:.200} vs {reference!r:.200}"]
        return []
    assert isinstance(fast, DecodedEvent)
    out = []
    _value_differences(fast.payload, reference.payload, "payload", out)
    return _envelope_differences(fast, reference, out)


def _envelope_differences(
    fast: ConsumerEvent | DecodedEvent, reference: DecodedEvent, out: list[str]
) -> list[str]:
    """``out`` and the differences of the envelope fields (every field but the payload)."""
    for name in ("event_id", "type", "tenant_id", "request_id"):
        _value_differences(getattr(fast, name), getattr(reference, name), name, out)
    a, b = fast.occurred_at, reference.occurred_at
    if (a, a.tzinfo, a.utcoffset(), a.fold) != (b, b.tzinfo, b.utcoffset(), b.fold):
        out.append(f"occurred_at: {a!r} vs {b!r}")
    return out

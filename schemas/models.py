"""The event contract as pydantic v2 models (``CONTRACT.md`` §1), field names as on the wire.

Every payload model keeps unknown fields (``extra="allow"``): a newer producer's fields survive an
older consumer. Nothing is coerced: ``"1"`` is not ``1``, ``true`` is not ``1``, ``1.0`` is not an
integer and a number is not a string. Money is :class:`~decimal.Decimal`: a JSON number (int or
Decimal as :func:`schemas.jsoncodec.loads` gives them), never a float or a string.

A broken rule that relates two or more fields is reported with the pydantic error type
:data:`RULE_ERROR_TYPE` (the ``rule_violation`` reason code); every other error is about one field
(``schema_violation``). :func:`schemas.decode.decode_event` is the fast path over the same rules.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, Overflow
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from schemas.codes import EventType

__all__ = [
    "COST_TOLERANCE",
    "PAYLOAD_CHECKS",
    "PAYLOAD_MODELS",
    "RULE_ERROR_TYPE",
    "SCHEMA_VERSION",
    "ActualCost",
    "CostEstimate",
    "Envelope",
    "ProviderModel",
    "RoutingPlanSnapshot",
    "TenantRoutingPolicy",
    "format_error",
    "format_rfc3339",
    "parse_event_id",
    "parse_rfc3339",
]

#: The one schema version this code understands; a higher one is never guessed at.
SCHEMA_VERSION: Final = 1
#: ``totalCostUsd`` may differ from ``inputCostUsd + outputCostUsd`` by at most this much.
COST_TOLERANCE: Final = Decimal("0.000001")
#: Pydantic error type of a broken cross-field rule (reason code ``rule_violation``).
RULE_ERROR_TYPE: Final = "rule_violation"
#: Bounds of ``tenantId`` and ``requestId``.
ID_MIN_LENGTH: Final = 1
ID_MAX_LENGTH: Final = 128

_SHORT = 60

# RFC 3339 section 5.6 ``date-time``: "T" and "Z" case-insensitive, an offset always present.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))",
    re.ASCII,
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_PATTERN = "^" + _UUID.pattern + "$"
_RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_OFFSETS: dict[tuple[str, str, str], timezone] = {}


def _short(value: object) -> str:
    """``repr`` of a value, cut to a few dozen characters (messages never echo a whole payload)."""
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for messages ("got string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _rule_error(field: str, detail: str) -> PydanticCustomError:
    return PydanticCustomError(
        RULE_ERROR_TYPE, "{field}: {detail}", {"field": field, "detail": detail}
    )


# --- one-field types --------------------------------------------------------------------------


def parse_rfc3339(value: object) -> datetime:
    """An aware datetime from an RFC 3339 ``date-time`` string with offset (or an aware datetime).

    Fractions beyond microseconds are truncated, as PostgreSQL's ``timestamptz`` rounds them away
    too. Raises :class:`~pydantic_core.PydanticCustomError` for anything else, naive times and
    numbers included, and for instants outside the representable range once converted to UTC.
    """
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise PydanticCustomError("timezone_aware", "Input should have a timezone offset")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "datetime_type",
            "Input should be an RFC 3339 date-time string, got {kind}",
            {"kind": json_kind(value)},
        )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "datetime_format",
            "Input should be an RFC 3339 date-time with offset, like 2026-01-31T12:00:00.000Z",
        )
    try:
        try:
            # C speed; the pattern has already pinned the form, so this only reads it.
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = _from_groups(match)  # lower-case "t"/"z" (or an impossible date: raises)
        parsed.astimezone(UTC)  # year 1 at +01:00 or 9999-12-31T23:00-02:00 do not exist in UTC
    except (ValueError, OverflowError):
        raise PydanticCustomError(
            "datetime_range", "Input should be a valid date and time in the Gregorian calendar"
        ) from None
    return parsed


def _from_groups(match: re.Match[str]) -> datetime:
    """The datetime of an :data:`_RFC3339` match, field by field (raises ``ValueError``)."""
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    return datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        int(fraction[:6].ljust(6, "0")) if fraction else 0,
        tzinfo=UTC if zulu else _offset(sign, off_h, off_m),
    )


def _offset(sign: str, hours: str, minutes: str) -> timezone:
    key = (sign, hours, minutes)
    tz = _OFFSETS.get(key)
    if tz is None:
        h, m = int(hours), int(minutes)
        if h > 23 or m > 59:
            raise ValueError("offset out of range")
        delta = timedelta(hours=h, minutes=m)
        tz = UTC if not delta else timezone(-delta if sign == "-" else delta)
        _OFFSETS[key] = tz
    return tz


def format_rfc3339(value: datetime) -> str:
    """RFC 3339 with offset and microseconds (``2026-01-31T12:00:00.000000+00:00``).

    Raises ``ValueError`` for a naive datetime: an event time without offset is ambiguous.
    """
    if value.utcoffset() is None:
        raise ValueError("a datetime without timezone cannot be written as RFC 3339")
    return value.isoformat(timespec="microseconds")


def parse_event_id(value: object) -> uuid.UUID:
    """A UUID from its canonical 8-4-4-4-12 hex string (any case), or a :class:`uuid.UUID`."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "uuid_type", "Input should be a UUID string, got {kind}", {"kind": json_kind(value)}
        )
    if _UUID.fullmatch(value) is None:
        raise PydanticCustomError(
            "uuid_format",
            "Input should be a UUID like 0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10",
        )
    return uuid.UUID(value)


def _number(value: object) -> Decimal:
    # Exact types on purpose: bool is an int subclass, and float/str are refused, not coerced.
    if type(value) is Decimal:
        number = value
    elif type(value) is int:
        number = Decimal(value)
    else:
        raise PydanticCustomError(
            "decimal_type",
            "Input should be a JSON number (Decimal, never float or string), got {kind}",
            {"kind": json_kind(value)},
        )
    if not number.is_finite():
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return number


def _non_negative(value: object) -> Decimal:
    number = _number(value)
    if number < 0:
        raise PydanticCustomError(
            "greater_than_equal", "Input should be greater than or equal to 0"
        )
    return number


def _positive(value: object) -> Decimal:
    number = _number(value)
    if number <= 0:
        raise PydanticCustomError("greater_than", "Input should be greater than 0")
    return number


def _schema_version(value: object) -> int:
    if type(value) is not int or value != SCHEMA_VERSION:
        raise PydanticCustomError(
            "schema_version", "Input should be the integer {version}", {"version": SCHEMA_VERSION}
        )
    return value


def _distinct(items: list[str]) -> list[str]:
    if len(set(items)) != len(items):
        seen: set[str] = set()
        duplicate = items[0]
        for item in items:
            if item in seen:
                duplicate = item
                break
            seen.add(item)
        raise PydanticCustomError(
            "unique_items",
            "Items should be distinct; {item} appears more than once",
            {"item": _short(duplicate)},
        )
    return items


#: A finite decimal >= 0 (USD amounts).
NonNegativeDecimal = Annotated[
    Decimal,
    PlainValidator(_non_negative),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
#: A finite decimal > 0.
PositiveDecimal = Annotated[
    Decimal,
    PlainValidator(_positive),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0}),
]
#: An RFC 3339 ``date-time`` with offset.
Rfc3339Datetime = Annotated[
    datetime,
    PlainValidator(parse_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _RFC3339_PATTERN}),
]
#: A UUID in its canonical hyphenated form.
EventId = Annotated[
    uuid.UUID,
    PlainValidator(parse_event_id),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": _UUID_PATTERN}),
]
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
#: ``tenantId`` / ``requestId``: 1..128 characters.
Identifier = Annotated[StrictStr, Field(min_length=ID_MIN_LENGTH, max_length=ID_MAX_LENGTH)]
DistinctStrings = Annotated[
    list[StrictStr],
    AfterValidator(_distinct),
    Field(json_schema_extra={"uniqueItems": True}),
]


def _field_title(name: str, _info: object) -> str:
    return name  # the wire name, not pydantic's "Inputcostusd"


_PAYLOAD_CONFIG = ConfigDict(
    extra="allow", protected_namespaces=(), field_title_generator=_field_title
)


# --- payloads -------------------------------------------------------------------------------


class ProviderModel(BaseModel):
    """One routing candidate: a provider and one of its models."""

    model_config = _PAYLOAD_CONFIG

    provider: NonEmptyStr
    model: NonEmptyStr


class CostEstimate(BaseModel):
    """The router's cost estimate; only ``totalCostUsd`` is required, the rest is kept as sent."""

    model_config = _PAYLOAD_CONFIG

    totalCostUsd: NonNegativeDecimal


class RoutingPlanSnapshot(BaseModel):
    """Payload of ``routing.snapshot``: the routing decision for one request.

    Rule: ``1 + len(fallbacks) <= candidateCount`` (the primary and each fallback are candidates).
    The envelope rule ``tenantId == envelope.tenantId`` is checked by :class:`Envelope`.
    """

    model_config = _PAYLOAD_CONFIG

    snapshotId: StrictStr
    strategy: StrictStr
    resolvedAlias: StrictStr
    candidateCount: Annotated[StrictInt, Field(ge=1)]
    timestamp: Rfc3339Datetime
    costEstimate: CostEstimate
    tenantId: Identifier
    primary: ProviderModel
    fallbacks: list[ProviderModel]

    @model_validator(mode="after")
    def _check_candidate_count(self) -> RoutingPlanSnapshot:
        if 1 + len(self.fallbacks) > self.candidateCount:
            raise _rule_error(
                "fallbacks",
                f"1 primary + {len(self.fallbacks)} fallbacks exceed "
                f"candidateCount {self.candidateCount}",
            )
        return self


# Exact arithmetic for the cost rule whatever the exponents; capped so a hostile 1E+999999999
# costs microseconds, not gigabytes (beyond the cap the comparison is rounded, not exact).
_MAX_PRECISION = 10_000


# Everyday amounts fit 50 digits: the sum is exact, or Inexact says it was not (then the slow way).
_EXACT_CONTEXT = Context(prec=50, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, Overflow])


def _cost_total_matches(total: Decimal, parts: tuple[Decimal, Decimal]) -> bool:
    try:
        ctx = _EXACT_CONTEXT
        return ctx.subtract(total, ctx.add(parts[0], parts[1])).copy_abs() <= COST_TOLERANCE
    except ArithmeticError:
        pass
    numbers = (total, *parts)
    nonzero = [n.adjusted() for n in numbers if n]
    top = max(nonzero, default=0)
    bottom = min(int(n.as_tuple().exponent) for n in numbers)
    precision = min(max(top - bottom + 3, 28), _MAX_PRECISION)
    ctx = Context(prec=precision, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
    difference = ctx.subtract(total, ctx.add(parts[0], parts[1]))
    return difference.copy_abs() <= COST_TOLERANCE


class ActualCost(BaseModel):
    """Payload of ``routing.cost``: what one request really cost.

    Rule: ``totalCostUsd == inputCostUsd + outputCostUsd`` within :data:`COST_TOLERANCE`.
    """

    model_config = _PAYLOAD_CONFIG

    inputTokens: Annotated[StrictInt, Field(ge=0)]
    outputTokens: Annotated[StrictInt, Field(ge=0)]
    inputCostUsd: NonNegativeDecimal
    outputCostUsd: NonNegativeDecimal
    totalCostUsd: NonNegativeDecimal
    provider: NonEmptyStr

    @model_validator(mode="after")
    def _check_total(self) -> ActualCost:
        if not _cost_total_matches(self.totalCostUsd, (self.inputCostUsd, self.outputCostUsd)):
            raise _rule_error(
                "totalCostUsd",
                f"{_short(str(self.totalCostUsd))} is not inputCostUsd + outputCostUsd "
                f"({_short(str(self.inputCostUsd))} + {_short(str(self.outputCostUsd))}) "
                f"within {COST_TOLERANCE}",
            )
        return self


class TenantRoutingPolicy(BaseModel):
    """Payload of ``tenant.policy``: a tenant's provider rules.

    Rules: allowed and denied lists are disjoint; ``preferredProvider`` is never denied and is in
    ``allowedProviders`` when that list is not empty (an empty allowed list allows every provider).
    """

    model_config = _PAYLOAD_CONFIG

    tenantId: Identifier
    allowedProviders: DistinctStrings
    deniedProviders: DistinctStrings
    preferredProvider: StrictStr | None
    maxCostPerRequestUsd: PositiveDecimal | None
    defaultStrategy: StrictStr

    @model_validator(mode="after")
    def _check_providers(self) -> TenantRoutingPolicy:
        both = set(self.allowedProviders).intersection(self.deniedProviders)
        if both:
            raise _rule_error(
                "deniedProviders",
                f"{_short(min(both))} is both allowed and denied",
            )
        preferred = self.preferredProvider
        if preferred is not None:
            if preferred in self.deniedProviders:
                raise _rule_error("preferredProvider", f"{_short(preferred)} is denied")
            if self.allowedProviders and preferred not in self.allowedProviders:
                raise _rule_error(
                    "preferredProvider", f"{_short(preferred)} is not in allowedProviders"
                )
        return self


#: The payload model of each event type.
PAYLOAD_MODELS: Final[
    dict[EventType, type[RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy]]
] = {
    EventType.SNAPSHOT: RoutingPlanSnapshot,
    EventType.COST: ActualCost,
    EventType.POLICY: TenantRoutingPolicy,
}


# --- fast checks (the decoder's hot path) ----------------------------------------------------
#
# The same rules as the models above, as plain boolean functions over a payload decoded by
# schemas.jsoncodec.loads, constructing nothing. decode_event accepts a payload they pass without
# building a model; when one fails, the model is run for the reason code and the message. The
# property tests keep both in step (every generated valid payload passes; every mutation fails).


def _is_money(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(value >= 0)
    return kind is Decimal and value.is_finite() and value >= 0


def _is_positive_money(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(value > 0)
    return kind is Decimal and value.is_finite() and value > 0


def _as_decimal(value: Any) -> Decimal:
    return Decimal(value) if type(value) is int else value


def _is_identifier(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= ID_MAX_LENGTH


def _is_provider_model(value: object) -> bool:
    if type(value) is not dict:
        return False
    provider, model = value.get("provider"), value.get("model")
    return type(provider) is str and provider != "" and type(model) is str and model != ""


def _is_timestamp(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        parse_rfc3339(value)
    except PydanticCustomError:
        return False
    return True


def _is_distinct_strings(value: object) -> bool:
    return (
        type(value) is list
        and all(type(item) is str for item in value)
        and len(set(value)) == len(value)
    )


def is_valid_snapshot(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` keeps every rule of :class:`RoutingPlanSnapshot` (tenant aside)."""
    get = payload.get
    count, fallbacks, estimate = get("candidateCount"), get("fallbacks"), get("costEstimate")
    return (
        type(get("snapshotId")) is str
        and type(get("strategy")) is str
        and type(get("resolvedAlias")) is str
        and type(count) is int
        and count >= 1
        and _is_identifier(get("tenantId"))
        and type(estimate) is dict
        and _is_money(estimate.get("totalCostUsd"))
        and _is_provider_model(get("primary"))
        and type(fallbacks) is list
        and all(map(_is_provider_model, fallbacks))
        and 1 + len(fallbacks) <= count
        and _is_timestamp(get("timestamp"))
    )


def is_valid_cost(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` satisfies every rule of :class:`ActualCost`."""
    get = payload.get
    tokens_in, tokens_out, provider = get("inputTokens"), get("outputTokens"), get("provider")
    cost_in, cost_out, total = get("inputCostUsd"), get("outputCostUsd"), get("totalCostUsd")
    return (
        type(tokens_in) is int
        and tokens_in >= 0
        and type(tokens_out) is int
        and tokens_out >= 0
        and type(provider) is str
        and provider != ""
        and _is_money(cost_in)
        and _is_money(cost_out)
        and _is_money(total)
        and _cost_total_matches(_as_decimal(total), (_as_decimal(cost_in), _as_decimal(cost_out)))
    )


def is_valid_policy(payload: dict[str, Any]) -> bool:
    """Whether ``payload`` keeps every rule of :class:`TenantRoutingPolicy` (tenant aside)."""
    get = payload.get
    allowed: Any = get("allowedProviders")
    denied: Any = get("deniedProviders")
    preferred, max_cost = get("preferredProvider"), get("maxCostPerRequestUsd")
    if not (
        _is_identifier(get("tenantId"))
        and type(get("defaultStrategy")) is str
        and _is_distinct_strings(allowed)
        and _is_distinct_strings(denied)
        and "preferredProvider" in payload
        and (preferred is None or type(preferred) is str)
        and "maxCostPerRequestUsd" in payload
        and (max_cost is None or _is_positive_money(max_cost))
        and set(allowed).isdisjoint(denied)
    ):
        return False
    return preferred is None or (preferred not in denied and (not allowed or preferred in allowed))


#: The fast check of each event type's payload.
PAYLOAD_CHECKS: Final[dict[EventType, Callable[[dict[str, Any]], bool]]] = {
    EventType.SNAPSHOT: is_valid_snapshot,
    EventType.COST: is_valid_cost,
    EventType.POLICY: is_valid_policy,
}


# --- errors ---------------------------------------------------------------------------------


def format_error(error: ErrorDetails, prefix: str = "") -> tuple[bool, str, str]:
    """``(is_rule, path, detail)`` for one pydantic error; the message is ``f"{path}: {detail}"``.

    ``("fallbacks", 1, "model")`` under prefix ``"payload"`` reads ``payload.fallbacks[1].model``.
    Values are never echoed beyond a few dozen characters.
    """
    path = prefix
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    ctx = error.get("ctx") or {}
    if error["type"] == RULE_ERROR_TYPE:
        field = f"{path}.{ctx['field']}" if path else str(ctx["field"])
        return True, field, str(ctx["detail"])
    detail = error["msg"]
    if error["type"] in _TYPE_ERRORS:
        detail = f"{detail}, got {json_kind(error['input'])}"
    return False, path or "(root)", detail


_TYPE_ERRORS = frozenset(
    {"string_type", "int_type", "list_type", "model_type", "dict_type", "model_attributes_type"}
)


# --- the envelope ---------------------------------------------------------------------------


class Envelope(BaseModel):
    """One Kafka record value: the envelope and its payload, with every rule of §1.

    ``payload`` stays the dict as received (unknown fields included); :attr:`payload_model` is the
    validated model of ``type``. Raises ``pydantic.ValidationError``; a broken cross-field rule
    has the error type :data:`RULE_ERROR_TYPE`. ``schemaVersion`` above 1 is refused here; the
    decoder tells it apart as ``unsupported_schema_version``.
    """

    model_config = ConfigDict(
        extra="allow", protected_namespaces=(), field_title_generator=_field_title
    )

    eventId: EventId
    type: EventType
    schemaVersion: Annotated[
        int, PlainValidator(_schema_version), WithJsonSchema({"type": "integer", "const": 1})
    ]
    occurredAt: Rfc3339Datetime
    tenantId: Identifier
    requestId: Identifier | None = Field(
        default=None, description="Required for routing.snapshot and routing.cost."
    )
    payload: dict[str, Any]

    _payload_model: RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy | None = PrivateAttr(
        default=None
    )

    @model_validator(mode="after")
    def _check_payload(self) -> Envelope:
        if self.requestId is None and self.type is not EventType.POLICY:
            raise PydanticCustomError(
                "missing", "requestId: Field required for {type}", {"type": str(self.type)}
            )
        model = PAYLOAD_MODELS[self.type]
        try:
            parsed = model.model_validate(self.payload)
        except ValidationError as exc:
            is_rule, path, detail = format_error(exc.errors()[0], "payload")
            if is_rule:
                raise _rule_error(path, detail) from None
            raise PydanticCustomError(
                "payload_invalid", "{path}: {detail}", {"path": path, "detail": detail}
            ) from None
        tenant = getattr(parsed, "tenantId", None)
        if tenant is not None and tenant != self.tenantId:
            raise _rule_error(
                "payload.tenantId",
                f"{_short(tenant)} differs from the envelope's tenantId {_short(self.tenantId)}",
            )
        self._payload_model = parsed
        return self

    @property
    def payload_model(self) -> RoutingPlanSnapshot | ActualCost | TenantRoutingPolicy:
        """The payload validated as the model of :attr:`type`."""
        assert self._payload_model is not None  # set by the validator of every instance
        return self._payload_model

"""The one-field types of the contract (``docs/contract.md`` §1): what a single field may hold.

Each type carries its own rule once, for both uses: validating (pydantic) and describing (the
exported JSON Schema, which the consumer's fast decoder and the TypeScript validators read).
Nothing is coerced: ``"1"`` is not ``1``, ``true`` is not ``1``, ``1.0`` is not an integer, a
number is not a string, and money is a JSON number read as :class:`~decimal.Decimal` (or an int),
never a float or a string. A broken rule raises :class:`~pydantic_core.PydanticCustomError`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    StrictStr,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from schemas.jsoncodec import OutOfRangeNumber

__all__ = [
    "ID_MAX_LENGTH",
    "ID_MIN_LENGTH",
    "SCHEMA_VERSION",
    "DistinctStrings",
    "EventId",
    "Identifier",
    "JsonNumber",
    "NonEmptyStr",
    "NonNegativeDecimal",
    "PositiveDecimal",
    "Rfc3339Datetime",
    "SchemaVersion",
    "format_rfc3339",
    "json_kind",
    "parse_event_id",
    "parse_rfc3339",
    "shorten",
]

#: The one schema version this code understands; a higher one is never guessed at.
SCHEMA_VERSION: Final = 1
#: Bounds of ``tenantId`` and ``requestId``, in characters.
ID_MIN_LENGTH: Final = 1
ID_MAX_LENGTH: Final = 128

_SHORT = 60

# RFC 3339 section 5.6 ``date-time``: "T" and "Z" case-insensitive, an offset always present.
# The JSON Schema pattern is this expression, anchored (the same language in ECMA-262).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    re.ASCII,
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OFFSETS: dict[tuple[str, str, str], timezone] = {}


def shorten(value: object) -> str:
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
    if isinstance(value, Decimal | float | OutOfRangeNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- times and ids ------------------------------------------------------------------------------


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
    if _RFC3339.fullmatch(value) is None:
        raise PydanticCustomError(
            "datetime_format",
            "Input should be an RFC 3339 date-time with offset, like 2026-01-31T12:00:00.000Z",
        )
    try:
        try:
            # C speed; the pattern has already pinned the form, so this only reads it.
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = _read_fields(value)  # lower-case "t"/"z" (or an impossible date: raises)
        parsed.astimezone(UTC)  # year 1 at +01:00 or 9999-12-31T23:00-02:00 do not exist in UTC
    except (ValueError, OverflowError):
        raise PydanticCustomError(
            "datetime_range", "Input should be a valid date and time in the Gregorian calendar"
        ) from None
    return parsed


def _read_fields(text: str) -> datetime:
    """The datetime of a text that matches :data:`_RFC3339`, field by field (or ``ValueError``)."""
    tail = text[19:]  # after YYYY-MM-DDTHH:MM:SS: an optional fraction, then Z or the offset
    digits = ""
    if tail[0] == ".":
        rest = tail[1:].lstrip("0123456789")
        digits, tail = tail[1 : len(tail) - len(rest)], rest
    return datetime(
        int(text[0:4]),
        int(text[5:7]),
        int(text[8:10]),
        int(text[11:13]),
        int(text[14:16]),
        int(text[17:19]),
        int(digits[:6].ljust(6, "0")) if digits else 0,
        tzinfo=UTC if tail in ("Z", "z") else _offset(tail[0], tail[1:3], tail[4:6]),
    )


def _offset(sign: str, hours: str, minutes: str) -> timezone:
    key = (sign, hours, minutes)
    tz = _OFFSETS.get(key)
    if tz is None:
        delta = timedelta(hours=int(hours), minutes=int(minutes))
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


# --- numbers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """Field metadata: a finite JSON number (an int or a Decimal), with an optional lower bound.

    The bound is written once here and gives both the check and the JSON Schema keyword
    (``minimum`` for ``ge``, ``exclusiveMinimum`` for ``gt``).
    """

    ge: int | None = None
    gt: int | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out: dict[str, Any] = {"type": "number"}
        if self.ge is not None:
            out["minimum"] = self.ge
        if self.gt is not None:
            out["exclusiveMinimum"] = self.gt
        return out

    def validate(self, value: object) -> Decimal:
        """``value`` as a Decimal, or PydanticCustomError (not a number, not finite, too small)."""
        # Exact types on purpose: bool is an int subclass, and float/str are refused, not coerced.
        if type(value) is Decimal:
            number = value
        elif type(value) is int:
            number = Decimal(value)
        elif type(value) is OutOfRangeNumber:
            raise PydanticCustomError(
                "decimal_range", "Input should be a number an exact decimal can hold"
            )
        else:
            raise PydanticCustomError(
                "decimal_type",
                "Input should be a JSON number (Decimal, never float or string), got {kind}",
                {"kind": json_kind(value)},
            )
        if not number.is_finite():
            raise PydanticCustomError("finite_number", "Input should be a finite number")
        if self.ge is not None and number < self.ge:
            raise PydanticCustomError(
                "greater_than_equal",
                "Input should be greater than or equal to {ge}",
                {"ge": self.ge},
            )
        if self.gt is not None and number <= self.gt:
            raise PydanticCustomError(
                "greater_than", "Input should be greater than {gt}", {"gt": self.gt}
            )
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
            {"item": shorten(duplicate)},
        )
    return items


#: A finite decimal >= 0 (USD amounts).
NonNegativeDecimal = Annotated[Decimal, JsonNumber(ge=0)]
#: A finite decimal > 0.
PositiveDecimal = Annotated[Decimal, JsonNumber(gt=0)]
#: An RFC 3339 ``date-time`` with offset.
Rfc3339Datetime = Annotated[
    datetime,
    PlainValidator(parse_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": f"^{_RFC3339.pattern}$"}),
]
#: A UUID in its canonical hyphenated form.
EventId = Annotated[
    uuid.UUID,
    PlainValidator(parse_event_id),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": f"^{_UUID.pattern}$"}),
]
#: ``schemaVersion``: the integer :data:`SCHEMA_VERSION` exactly.
SchemaVersion = Annotated[
    int,
    PlainValidator(_schema_version),
    WithJsonSchema({"type": "integer", "const": SCHEMA_VERSION}),
]
#: A string of at least one character.
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
#: ``tenantId`` / ``requestId``: 1..128 characters.
Identifier = Annotated[StrictStr, Field(min_length=ID_MIN_LENGTH, max_length=ID_MAX_LENGTH)]
#: A list of strings, each at most once.
DistinctStrings = Annotated[
    list[StrictStr],
    AfterValidator(_distinct),
    Field(json_schema_extra={"uniqueItems": True}),
]

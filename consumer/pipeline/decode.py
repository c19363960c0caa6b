"""The consumer's record decoder: :func:`schemas.decode_event`'s verdict, faster.

:func:`decode_event` returns, for every input, exactly the verdict of the contract's reference
decoder: a :class:`ConsumerEvent` (the reference's envelope fields, and the payload's JSON text
as written, or ``None`` when the whole record must be stored) when the reference accepts the
record, else the reference's own :class:`~schemas.Rejection`. Its fast path accepts only records
it proves valid; every other record, invalid ones included, goes to the reference.

The fast path is derived from the contract, not written again: its msgspec types come from the
exported JSON Schema (:func:`schemas.export.json_schemas`: types, lengths, bounds, nullability,
``uniqueItems``, money, RFC 3339 times), and the rules relating fields are the functions of
:mod:`schemas.rules`. ``docs/decoding.md`` states what it proves and when it defers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from schemas import (
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    PAYLOAD_RULES,
    EventType,
    Rejection,
    check_tenant,
)
from schemas import decode_event as reference_decode_event
from schemas.export import json_schemas

__all__ = ["FAST_MAX_BYTES", "ConsumerEvent", "decode_event", "fast_path"]

#: Longest record the fast path takes: no integer literal in a record this short can have more
#: digits than the contract allows (msgspec does not count them in the fields it skips).
FAST_MAX_BYTES: Final = MAX_INT_DIGITS


class ConsumerEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid record: the envelope fields of :class:`schemas.DecodedEvent`, equal to the
    reference's, and instead of the payload dict the payload's JSON text.

    ``payload_json`` is the record's ``payload`` value byte for byte, valid UTF-8 (unknown
    fields, number literals, escapes, key order, duplicate keys as written): PostgreSQL stores
    it as ``jsonb``. ``None`` when that text alone might not store (or fail) as the whole record
    does: then PostgreSQL stores ``(record::jsonb) -> 'payload'``. Bytes, not ``str``: PostgreSQL
    takes UTF-8, so the text goes on as it came (its UTF-8 checked here, no ``str`` kept).
    """

    event_id: uuid.UUID
    type: EventType
    occurred_at: datetime
    tenant_id: str
    request_id: str | None
    payload_json: bytes | None


# --- the typed view, derived from the JSON Schema ------------------------------------------------

_Check = Callable[[Any], bool]
_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
# The RFC 3339 texts (with their quotes, digits as 0) that msgspec and the reference read alike:
# "T" or "t", 0-6 fraction digits (msgspec rounds a 7th, the reference truncates), "Z", "z" or
# an offset with a colon (msgspec also takes a space for "T" and offsets without a colon).
_TIME_FORMS: Final = frozenset(
    b'"0000-00-00%s00:00:00%s%s"' % (sep, fraction, zone)
    for sep in (b"T", b"t")
    for fraction in (b"", *(b"." + b"0" * n for n in range(1, 7)))
    for zone in (b"Z", b"z", b"+00:00", b"-00:00")
)
# With an offset of at most 23:59, only these years can leave datetime's range once in UTC.
_EDGE_YEARS: Final = (b"0001", b"9999")
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_AWARE: Final = msgspec.json.Decoder(_AwareDatetime)
_UUID: Final = msgspec.json.Decoder(uuid.UUID)


def _is_time(raw: msgspec.Raw) -> bool:
    """Whether the JSON string ``raw`` is an RFC 3339 time the reference reads as msgspec does
    (raises where msgspec refuses it)."""
    text = bytes(raw)
    if text.translate(_DIGITS) not in _TIME_FORMS:
        return False
    moment = _AWARE.decode(raw)
    if text[1:5] in _EDGE_YEARS:  # the reference refuses an instant that UTC cannot hold
        moment.astimezone(UTC)
    return True


def _number(schema: dict[str, Any]) -> Any:
    """A JSON number above a bound, as msgspec checks it in C: an int compared exactly, or a
    float strictly above the bound. Sound for an integer bound: a float rounds a decimal to the
    nearest binary value, so a decimal at or under the bound never reads as a float above it (a
    float literal equal to the bound, like ``0.0``, is left to the reference)."""
    ge, gt = schema.get("minimum"), schema.get("exclusiveMinimum")
    if (ge is None) == (gt is None) or type(ge if gt is None else gt) is not int:
        raise TypeError(f"a number with bounds {schema}: only one integer bound is derived")
    bound = ge if gt is None else gt
    integer = Annotated[int, msgspec.Meta(ge=bound) if gt is None else msgspec.Meta(gt=bound)]
    return integer | Annotated[float, msgspec.Meta(gt=bound)]


def _is_distinct(items: list[str]) -> bool:
    return len(set(items)) == len(items)


_KEYWORDS: Final = {"title", "description", "type", "minLength", "maxLength", "minimum"}
_KEYWORDS_WITH_CHECKS: Final = {"exclusiveMinimum", "format", "pattern", "uniqueItems", "items"}


class _Derivation:
    """msgspec types for the schemas of ``defs``, and the checks msgspec cannot express.

    ``checks`` maps a struct to ``(attribute path, check)`` pairs run on every decoded value.
    A keyword or shape it does not know raises ``TypeError`` at import: a new kind of rule in
    the contract must be given to the fast path explicitly, never silently skipped.
    """

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.structs: dict[str, type[msgspec.Struct]] = {}
        self.checks: dict[type[msgspec.Struct], list[tuple[str, _Check]]] = {}

    def field(self, schema: dict[str, Any], path: str, checks: list[tuple[str, _Check]]) -> Any:
        nullable = False
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s != {"type": "null"}]
            if len(options) != 1 or len(schema["anyOf"]) != 2:
                raise TypeError(f"{path}: anyOf {schema['anyOf']}: only 'X or null' is derived")
            schema, nullable = (
                {**options[0], **{k: schema[k] for k in ("title",) if k in schema}},
                True,
            )
        if "$ref" in schema:
            struct = self.struct(schema["$ref"].rsplit("/", 1)[-1])
            for sub_path, check in self.checks[struct]:
                checks.append((f"{path}.{sub_path}", check))
            return struct | None if nullable else struct
        unknown = set(schema) - _KEYWORDS - _KEYWORDS_WITH_CHECKS
        if unknown:
            raise TypeError(f"{path}: JSON Schema keywords {sorted(unknown)} are not derived")
        kind = schema["type"]
        if kind == "number":
            typ: Any = _number(schema)
        elif kind == "string" and "format" in schema:
            if schema["format"] != "date-time":
                raise TypeError(f"{path}: format {schema['format']} is not derived")
            checks.append((path, _is_time))
            typ = msgspec.Raw
        elif kind == "string":
            if "pattern" in schema:
                raise TypeError(f"{path}: a pattern without a known format is not derived")
            meta = {"min_length": schema.get("minLength"), "max_length": schema.get("maxLength")}
            typ = Annotated[str, msgspec.Meta(**meta)] if any(meta.values()) else str
        elif kind == "integer":
            minimum = schema.get("minimum")
            typ = int if minimum is None else Annotated[int, msgspec.Meta(ge=minimum)]
        elif kind == "array":
            item_checks: list[tuple[str, _Check]] = []
            typ = list[self.field(schema["items"], f"{path}[]", item_checks)]  # type: ignore[misc]
            if item_checks:
                raise TypeError(f"{path}: checks inside array items are not derived")
            if schema.get("uniqueItems"):
                checks.append((path, _is_distinct))
        else:
            raise TypeError(f"{path}: type {kind} is not derived")
        return typ | None if nullable else typ

    def struct(self, name: str) -> type[msgspec.Struct]:
        if name in self.structs:
            return self.structs[name]
        schema = self.defs[name]
        checks: list[tuple[str, _Check]] = []
        required = set(schema.get("required", ()))
        fields: list[Any] = []
        for field_name, field_schema in schema["properties"].items():
            typ = self.field(field_schema, field_name, checks)
            if field_name in required:
                fields.append((field_name, typ))
            else:
                fields.append((field_name, typ, field_schema.get("default")))
        struct = msgspec.defstruct(
            f"_{name}",
            fields,
            kw_only=True,
            gc=False,
            forbid_unknown_fields=schema.get("additionalProperties", True) is False,
        )
        self.structs[name], self.checks[struct] = struct, checks
        return struct


def _event_structs() -> dict[type[msgspec.Struct], tuple[EventType, _Check, bool]]:
    """One tagged struct per event type: ``{struct: (type, payload check, tenant rule?)}``.

    The envelope's ``eventId`` (format ``uuid``) and ``occurredAt`` (``date-time``) are read by
    msgspec's wider grammars, which :func:`fast_path` narrows; unknown envelope fields are
    refused, so that every member but the payload is a scalar, duplicates included.
    """
    envelope = next(s for s in json_schemas().values() if "allOf" in s)
    derivation = _Derivation(envelope["$defs"])
    properties, required = envelope["properties"], set(envelope["required"])
    if properties["eventId"].get("format") != "uuid":
        raise TypeError("eventId: the fast path reads it as a UUID")
    if properties["occurredAt"].get("format") != "date-time":
        raise TypeError("occurredAt: the fast path reads it as an RFC 3339 time")
    out: dict[type[msgspec.Struct], tuple[EventType, _Check, bool]] = {}
    for branch in envelope["allOf"]:
        event_type = EventType(branch["if"]["properties"]["type"]["const"])
        then = branch["then"]
        narrowed = then.get("properties", {})
        payload_name = narrowed["payload"]["$ref"].rsplit("/", 1)[-1]
        payload = derivation.struct(payload_name)
        fields: list[Any] = []
        for name, declared in properties.items():
            schema = declared
            if name == "type":
                continue
            if name == "payload":
                typ: Any = payload
            elif name == "eventId":
                typ = uuid.UUID  # also reads 32 hex digits: fast_path checks the form
            elif name == "occurredAt":
                typ = _AwareDatetime  # a wider grammar than RFC 3339: fast_path narrows it
            elif "const" in schema:
                typ = Literal[schema["const"]]
            else:
                if name in narrowed:  # "X or null" narrowed to X (a string) for this type
                    if narrowed[name] != {"type": "string"} or "anyOf" not in schema:
                        raise TypeError(f"{name}: narrowing {narrowed[name]} is not derived")
                    schema = next(s for s in schema["anyOf"] if s != {"type": "null"})
                envelope_checks: list[tuple[str, _Check]] = []
                typ = derivation.field(schema, name, envelope_checks)
                if envelope_checks:
                    raise TypeError(f"{name}: checks on envelope fields are not derived")
            if name in required or name in then.get("required", ()):
                fields.append((name, typ))
            else:
                fields.append((name, typ, schema.get("default")))
        struct = msgspec.defstruct(
            f"_{payload_name}Event",
            fields,
            kw_only=True,
            gc=False,
            forbid_unknown_fields=True,
            tag_field="type",
            tag=event_type.value,
        )
        checks = [(attrgetter(path), check) for path, check in derivation.checks[payload]]
        rule = PAYLOAD_RULES[event_type]

        def payload_ok(p: Any, checks: Any = checks, rule: Any = rule) -> bool:
            for get, check in checks:
                if not check(get(p)):
                    return False
            return rule(p) is None

        has_tenant = "tenantId" in envelope["$defs"][payload_name]["properties"]
        out[struct] = (event_type, payload_ok, has_tenant)
    return out


_EVENTS: Final = _event_structs()
# One pass over the record: the envelope and its payload, typed.
_RECORD: Final = msgspec.json.Decoder(Union[tuple(_EVENTS)])  # noqa: UP007
# A second pass, skipping what the first has checked: the JSON texts of eventId and occurredAt
# (the forms the first one read) and the payload's span.
_SPAN: Final = msgspec.json.Decoder(
    msgspec.defstruct("_Span", [(f, msgspec.Raw) for f in ("eventId", "occurredAt", "payload")])
)


def decode_event(value: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ConsumerEvent | Rejection:
    """Decode one record value: valid per :func:`schemas.decode_event` exactly, for any input.

    A :class:`ConsumerEvent` when the reference accepts ``value``, else the reference's own
    :class:`~schemas.Rejection`. A record the fast path cannot prove valid is decided by the
    reference, and if valid there keeps ``payload_json=None``. Like the reference, it raises for
    no input: an exception is a bug, and propagates so that the consumer stops loudly.
    """
    event = fast_path(value, max_bytes)
    if event is not None:
        return event
    reference = reference_decode_event(value, max_bytes=max_bytes)
    if isinstance(reference, Rejection):
        return reference
    return ConsumerEvent(
        reference.event_id,
        reference.type,
        reference.occurred_at,
        reference.tenant_id,
        reference.request_id,
        None,
    )


def fast_path(value: bytes, max_bytes: int) -> ConsumerEvent | None:
    """The event, when the fast path proves the record valid; ``None`` means "ask the reference".

    Raises for no input; an exception is a bug here, and propagates (see :func:`decode_event`).
    Public for the tests and the fuzz run.
    """
    if type(value) is not bytes:
        return None
    size = len(value)
    if size > max_bytes or size > FAST_MAX_BYTES:
        return None
    try:
        record: Any = _RECORD.decode(value)
        event_type, payload_ok, has_tenant = _EVENTS[type(record)]
        payload = record.payload
        if not payload_ok(payload):
            return None
        if has_tenant and check_tenant(payload.tenantId, record.tenantId) is not None:
            return None
        span: Any = _SPAN.decode(value)
        # 38 bytes: the 36-character form, not the 32 hex digits msgspec also reads as a UUID
        # (no escape can make either fit); occurredAt in a form both read alike.
        if len(span.eventId) != 38 or bytes(span.occurredAt).translate(_DIGITS) not in _TIME_FORMS:
            return None
        occurred_at = record.occurredAt.astimezone(UTC)  # raises where the reference refuses
        text = bytes(span.payload)
        if not text.isascii():
            text.decode()  # UTF-8 is checked, the str is not kept: PostgreSQL takes the bytes
    except (msgspec.DecodeError, ValueError, OverflowError, RecursionError):
        return None  # not proven (msgspec refused, not UTF-8, out of range): the reference decides
    # Alone: no backslash outside the payload's text and one "payload" key, so PostgreSQL stores
    # (or refuses) text::jsonb as it does (value::jsonb) -> 'payload'. Usually the payload is the
    # last member: then the first '"payload"' is its key (no other before, escaped keys need a
    # backslash), and the envelope before it holds no backslash. Else counts: the payload's span
    # and the rest partition the record, and neither pattern can straddle the span's braces, so
    # the counts outside the payload are the differences (in UTF-8, an ASCII byte is always
    # that character: counting bytes counts characters).
    head = size - len(text) - 11  # where the key of a last payload member would be
    alone = (value.find(b'"payload"') == head and value.find(b"\\", 0, head) < 0) or (
        value.count(b"\\") == text.count(b"\\")
        and value.count(b'"payload"') == 1 + text.count(b'"payload"')
    )
    if alone:  # every other member is a scalar: the record nests 1 + the payload's depth
        brackets = 1 + text.count(b"[") + text.count(b"{")
    else:  # a duplicate payload: its text is not the only one, nor checked as UTF-8
        brackets = value.count(b"[") + value.count(b"{")
        if not value.isascii():
            try:
                value.decode()
            except UnicodeDecodeError:
                return None
    if brackets > MAX_DEPTH:
        return None
    return ConsumerEvent(
        record.eventId,
        event_type,
        occurred_at,
        record.tenantId,
        record.requestId,
        text if alone else None,
    )

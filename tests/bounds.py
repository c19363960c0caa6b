"""Records at and beyond every one-field bound of the contract, read from its JSON Schema.

For each event type and each field the schema constrains (string lengths, integer and number
minimums, distinct items, RFC 3339 times, nullability), a sample event with that one field set
to a value at the bound, just inside and just outside it. The bounds come from
:func:`schemas.export.json_schemas` at test time: change a bound in ``schemas/`` and these
records move with it, so the differential tests check the fast decoder against the reference at
the new bound, wherever its own types come from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from schemas import EventType, dumps
from schemas.export import json_schemas
from tests.schemas_helpers import envelope

__all__ = ["boundary_records"]

_NULL = {"type": "null"}


def _strings(schema: dict[str, Any]) -> list[Any]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    out: list[Any] = ["x" * max(low - 1, 0), "x" * low, "é" * max(low, 1), "😀" * max(low, 1)]
    if high is not None:
        out += ["x" * high, "x" * (high + 1), "é" * high, "é" * (high + 1), "😀" * high]
    return out


def _numbers(schema: dict[str, Any]) -> list[Any]:
    bound = schema.get("minimum", schema.get("exclusiveMinimum"))
    if bound is None:
        return [0, -1, 1]
    tiny = Decimal("1E-7")
    return [bound - 1, bound, bound + 1, Decimal(bound) - tiny, Decimal(bound) + tiny,
            Decimal(bound).quantize(Decimal("0.0")), Decimal(bound) + Decimal("0.5")]  # fmt: skip


def _values(schema: dict[str, Any], defs: dict[str, Any]) -> list[Any]:
    """Values around the bounds of one field's schema (valid and not)."""
    if "anyOf" in schema:
        inner = [s for s in schema["anyOf"] if s != _NULL]
        return [None, *(v for s in inner for v in _values(s, defs))]
    kind = schema.get("type")
    if kind == "string" and schema.get("format") == "date-time":
        return [
            "2026-01-31T12:00:00Z",
            "2026-01-31t12:00:00.123456z",
            "2026-01-31T12:00:00.1234567Z",
            "2026-01-31T12:00:00+05:30",
            "2026-01-31T12:00:00+0530",
            "2026-01-31 12:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59.999999Z",
            "2026-02-29T00:00:00Z",
        ]
    if kind == "string" and schema.get("format") == "uuid":
        return ["0B8A3F9C-52A4-4C1E-9D0F-2F1E4E6B7A10", "0b8a3f9c52a44c1e9d0f2f1e4e6b7a10"]
    if kind == "string":
        return _strings(schema)
    if kind == "integer":
        if "const" in schema:
            return [schema["const"], schema["const"] + 1, Decimal(schema["const"])]
        low = schema.get("minimum", 0)
        return [low - 1, low, low + 1, Decimal(low), 10**30]
    if kind == "number":
        return _numbers(schema)
    if kind == "array":
        item = _values(schema["items"], defs)[1] if "$ref" not in schema["items"] else None
        if schema.get("uniqueItems"):
            return [[], ["a"], ["a", "a"], ["a", "b", "a"], ["a", "é", "e\u0301"]]
        return [[], [item] if item is not None else []]
    return []


def _paths(
    schema: dict[str, Any], defs: dict[str, Any], prefix: tuple[Any, ...]
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every (path, schema) of the leaf fields below an object schema, $refs followed."""
    for name, field in schema.get("properties", {}).items():
        path = (*prefix, name)
        target = field
        if "$ref" in field:
            target = defs[field["$ref"].rsplit("/", 1)[-1]]
            yield from _paths(target, defs, path)
        elif field.get("type") == "array" and "$ref" in field.get("items", {}):
            yield path, field
            yield from _paths(defs[field["items"]["$ref"].rsplit("/", 1)[-1]], defs, (*path, 0))
        else:
            yield path, field


def _is_number(value: object) -> bool:
    return type(value) in (int, Decimal)


def _kind(schema: dict[str, Any]) -> str:
    inner = next((s for s in schema.get("anyOf", []) if s != _NULL), schema)
    return str(inner.get("format", inner.get("type")))


def boundary_records() -> list[tuple[str, str, bytes]]:
    """``(name, kind, record)`` for each event type, constrained field and value around its
    bounds; ``kind`` is the field's JSON type or format. A tenant is set in the envelope and the
    payload alike, and a cost's total follows its parts, so that in-bound values make valid
    records."""
    schema = next(s for s in json_schemas().values() if "allOf" in s)
    defs = schema["$defs"]
    out: list[tuple[str, str, bytes]] = []
    for branch in schema["allOf"]:
        event_type = EventType(branch["if"]["properties"]["type"]["const"])
        payload_schema = defs[branch["then"]["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]]
        fields = [(p, f) for p, f in _paths(schema, defs, ()) if p[0] not in ("payload", "type")]
        fields += list(_paths(payload_schema, defs, ("payload",)))
        for path, field in fields:
            for index, value in enumerate(_values(field, defs)):
                doc = copy.deepcopy(envelope(event_type))
                target: Any = doc
                for part in path[:-1]:
                    target = target[part]
                if isinstance(target, list) and not target:
                    continue  # no fallback in this sample to hold the value
                target[path[-1]] = value
                if path[-1] == "tenantId" and "tenantId" in doc["payload"]:
                    doc["tenantId"] = doc["payload"]["tenantId"] = value
                if path[-1] in ("inputCostUsd", "outputCostUsd") and _is_number(value):
                    payload = doc["payload"]
                    payload["totalCostUsd"] = payload["inputCostUsd"] + payload["outputCostUsd"]
                name = f"{event_type}:{'.'.join(map(str, path))}#{index}"
                out.append((name, _kind(field), dumps(doc)))
    return out

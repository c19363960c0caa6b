"""JSON for money: every non-integer number is a :class:`~decimal.Decimal`, exactly as written.

The standard :mod:`json` module reads ``0.1`` as the float ``0.1000000000000000055...``; here it
stays ``Decimal("0.1")`` from the raw bytes to the database, and is written back as ``0.1``.
Integers stay :class:`int` so that ``1.0`` is never mistaken for the integer ``1``.

What :func:`loads` accepts is also accepted by PostgreSQL's ``jsonb`` input (strict RFC 8259
grammar, UTF-8), with one deliberate exception left to the database: ``\\u0000`` inside a
string, which ``jsonb`` refuses and the consumer dead-letters as ``db_rejected``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

__all__ = ["dumps", "loads"]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# One decoder for the process: json.loads(**kwargs) would build a new one per call.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)
# An escape that may encode half of a surrogate pair; a lone half is not Unicode text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(data: bytes | bytearray | str) -> Any:
    """Parse one JSON document: objects -> dict, non-integer numbers -> Decimal, integers -> int.

    Raises ``ValueError`` (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are subclasses)
    when ``data`` is not UTF-8, not JSON, uses ``NaN``/``Infinity``, holds an integer longer than
    Python's digit limit, escapes a lone UTF-16 surrogate, or nests too deeply. Duplicate keys keep
    the last value, as PostgreSQL's ``jsonb`` does.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None:
        _check_unicode(value)
    return value


def _check_unicode(value: Any) -> None:
    """Raise ValueError if a string (or key) in ``value`` holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string escapes a lone UTF-16 surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` as compact UTF-8 JSON; :class:`~decimal.Decimal` becomes a JSON number.

    ``Decimal("0.1")`` is written ``0.1`` and ``Decimal("1E+3")`` as ``1E+3``: the exact value,
    never via float. Accepts dict (str keys), list, tuple, str, int, bool, None, Decimal and
    finite float (written as its shortest repr). Raises ``TypeError`` for anything else,
    including a NaN or infinite Decimal, and ``ValueError`` for a NaN or infinite float or a
    string that is not valid Unicode.
    """
    parts: list[str] = []
    _encode(obj, parts.append)
    return "".join(parts).encode("utf-8")


def _encode(obj: Any, out: Callable[[str], None]) -> None:
    if isinstance(obj, str):
        out(encode_basestring(obj))
    elif obj is None:
        out("null")
    elif obj is True:
        out("true")
    elif obj is False:
        out("false")
    elif isinstance(obj, int):
        out(int.__repr__(obj))
    elif isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError(f"Decimal {obj} is not a JSON number")
        out(str(obj))
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"float {obj} is not a JSON number")
        out(float.__repr__(obj))
    elif isinstance(obj, dict):
        out("{")
        first = True
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            if not first:
                out(",")
            first = False
            out(encode_basestring(key))
            out(":")
            _encode(item, out)
        out("}")
    elif isinstance(obj, list | tuple):
        out("[")
        for index, item in enumerate(obj):
            if index:
                out(",")
            _encode(item, out)
        out("]")
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

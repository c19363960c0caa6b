"""JSON for money: every non-integer number is a :class:`~decimal.Decimal`, exactly as written.

The standard :mod:`json` module reads ``0.1`` as the float ``0.1000000000000000055...``; here it
stays ``Decimal("0.1")`` from the raw bytes to the database, and is written back as ``0.1``.
Integers stay :class:`int` so that ``1.0`` is never mistaken for the integer ``1``.

What :func:`loads` accepts is also accepted by PostgreSQL's ``jsonb`` input (strict RFC 8259
grammar, UTF-8), with one deliberate exception left to the database: ``\\u0000`` inside a
string, which ``jsonb`` refuses and the consumer dead-letters as ``db_rejected``.

Two limits of the contract, the same in every language (``docs/decoding.md``): a document nests
at most :data:`MAX_DEPTH` levels of arrays and objects, and an integer literal has at most
:data:`MAX_INT_DIGITS` digits. Beyond either, the text is not JSON the contract accepts.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from json.encoder import encode_basestring
from typing import Any, Final

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "OutOfRangeNumber", "dumps", "loads", "nesting_depth"]

#: Deepest nesting of arrays and objects: the top-level object is level 1, ``{"a": []}`` is 2.
MAX_DEPTH: Final = 64
#: Most digits in an integer literal (the sign aside); a longer one is refused, not truncated.
MAX_INT_DIGITS: Final = 4300


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_int(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(
            f"an integer literal has {digits} digits, over the limit of {MAX_INT_DIGITS}"
        )
    return int(literal)


class OutOfRangeNumber:
    """A JSON number no exact decimal can hold: its exponent is beyond ±999,999,999,999,999,999.

    It is JSON, so the document is; a field of the contract refuses it (``schema_violation``),
    an unknown field keeps it as it is, and PostgreSQL, which cannot store it either, refuses
    the record (``db_rejected``). ``literal`` is the number's text.
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return f"OutOfRangeNumber({self.literal[:40]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutOfRangeNumber) and other.literal == self.literal

    def __hash__(self) -> int:
        return hash(self.literal)


def _parse_float(literal: str) -> Decimal | OutOfRangeNumber:
    try:
        return Decimal(literal)
    except InvalidOperation:  # the exponent needs more than 18 digits
        return OutOfRangeNumber(literal)


# One decoder for the process: json.loads(**kwargs) would build a new one per call.
_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_refuse_constant
)
# An escape that may encode half of a surrogate pair; a lone half is not Unicode text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A string token, or what is left of an unterminated one (so every match attempt succeeds and
# the scan stays linear on any text); and what is not a bracket once strings are gone.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 for an opening, -1 for a closing


def loads(data: bytes | bytearray | str) -> Any:
    """Parse one JSON document: objects -> dict, non-integer numbers -> Decimal, integers -> int.

    A non-integer number whose exponent no Decimal can hold is an :class:`OutOfRangeNumber`.

    Raises ``ValueError`` (``json.JSONDecodeError`` and ``UnicodeDecodeError`` are subclasses)
    when ``data`` is not UTF-8, nests deeper than :data:`MAX_DEPTH` (checked first, on the text),
    is not JSON, uses ``NaN``/``Infinity``, holds an integer literal of more than
    :data:`MAX_INT_DIGITS` digits, or escapes a lone UTF-16 surrogate. Duplicate keys keep the
    last value, as PostgreSQL's ``jsonb`` does.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"nests deeper than {MAX_DEPTH} levels of arrays and objects")
    try:
        value = _DECODER.decode(text)
    except RecursionError:  # unreachable below MAX_DEPTH; kept so no input can escape as one
        raise ValueError(f"nests deeper than {MAX_DEPTH} levels of arrays and objects") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None:
        _check_unicode(value)
    return value


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text`` outside strings (``{"a": []}`` is 2).

    Defined on any text, JSON or not: brackets inside string tokens do not count, an unterminated
    string runs to the end, and a closing bracket lowers the level by one.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    steps = array("b", brackets.encode("ascii").translate(_STEPS))
    return max(0, max(accumulate(steps), default=0))


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
    elif isinstance(obj, OutOfRangeNumber):
        out(obj.literal)
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

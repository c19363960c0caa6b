"""Inputs of the fuzz run and the differential tests: valid envelopes, fixed hostile shapes, and an
endless seeded mix of random bytes, byte-level and structure-aware mutations.

The valid envelopes carry the traits of real traffic: free text in many scripts, unknown nested
fields (some nesting to the contract's 64 levels exactly), 0-4 fallbacks, ``occurredAt`` with
offsets other than ``Z`` and, for some, milliseconds."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from schemas import EventType, build_event
from tests.checks import MAX_BYTES

__all__ = ["hostile_inputs", "mutated_inputs", "valid_envelopes"]

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
_TEXTS = ["Résumé : réponse", "請總結合約", "要約 🙏", 'a "quoted"\nline', "Zoë\t😀", "plain"]


def _nested(levels: int) -> Any:
    """An unknown value nesting ``levels`` arrays and objects deep."""
    value: Any = "leaf"
    for level in range(levels):
        value = [value] if level % 3 else {"k": value}
    return value


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def valid_envelopes(rng: random.Random, count: int) -> list[bytes]:
    """``count`` valid record values of the three types, built with :func:`schemas.build_event`."""
    out = []
    for i in range(count):
        tenant = f"tenant-{rng.randrange(50)}"
        when = _T0 + timedelta(seconds=rng.randrange(10**6), milliseconds=rng.randrange(1000))
        when = when.astimezone(rng.choice(_ZONES))
        which = i % 3
        if which == 0:
            fallbacks = [
                {"provider": f"p{j}", "model": f"m{j}", "why": rng.choice(_TEXTS)}
                for j in range(rng.randrange(5))
            ]
            payload: dict[str, Any] = {
                "snapshotId": f"s-{i}",
                "strategy": rng.choice(["cost", "latency", "quality"]),
                "resolvedAlias": "fast",
                "candidateCount": 1 + len(fallbacks) + rng.randrange(3),
                "timestamp": "2026-01-01T12:00:00.123Z",
                "costEstimate": {"totalCostUsd": Decimal(rng.randrange(10**6)) / 10**6},
                "tenantId": tenant,
                "primary": {"provider": "openai", "model": "gpt-4o"},
                "fallbacks": fallbacks,
                "extraField": {"kept": [1, "two", None], "note": rng.choice(_TEXTS)},
                # at the limit now and then: envelope 1, payload 2, then 62 levels
                "trace": _nested(62 if rng.random() < 0.1 else rng.randrange(1, 8)),
            }
            event = build_event(
                EventType.SNAPSHOT,
                payload,
                tenant_id=tenant,
                request_id=f"r-{i}",
                event_id=_uuid(rng),
                occurred_at=when,
            )
        elif which == 1:
            a = Decimal(rng.randrange(10**7)) / 10**7
            b = Decimal(rng.randrange(10**7)) / 10**7
            payload = {
                "inputTokens": rng.randrange(10**5),
                "outputTokens": rng.randrange(10**5),
                "inputCostUsd": a,
                "outputCostUsd": b,
                "totalCostUsd": a + b,
                "provider": "anthropic",
                "usage": {"cached": rng.randrange(100), "note": rng.choice(_TEXTS)},
            }
            event = build_event(
                EventType.COST,
                payload,
                tenant_id=tenant,
                request_id=f"r-{i}",
                event_id=_uuid(rng),
                occurred_at=when,
            )
        else:
            payload = {
                "tenantId": tenant,
                "allowedProviders": ["openai", "anthropic"],
                "deniedProviders": ["mistral"],
                "preferredProvider": rng.choice(["openai", None]),
                "maxCostPerRequestUsd": rng.choice([Decimal("0.5"), None]),
                "defaultStrategy": "cost",
                "notes": rng.choice(_TEXTS),
            }
            event = build_event(
                EventType.POLICY, payload, tenant_id=tenant, event_id=_uuid(rng), occurred_at=when
            )
        value = event.value
        if rng.random() < 0.5:  # milliseconds, as JavaScript writes them
            written = when.isoformat(timespec="microseconds").encode()
            value = value.replace(written, when.isoformat(timespec="milliseconds").encode(), 1)
        out.append(value)
    return out


def hostile_inputs() -> list[bytes]:
    """Fixed hostile shapes: nesting, huge numbers and strings, bad UTF-8, NaN, over-size."""
    big_string = "x" * (MAX_BYTES - 200)
    return [
        b"",
        b"\x00",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b'{"a": "\xc3\x28"}',  # invalid UTF-8 inside a string
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate: not UTF-8
        b'{"a": "\\ud800"}',  # an escaped lone surrogate
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting within the size limit
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"[" * 2_000_000,  # over the limit
        b"1" * 5_000,  # an integer past Python's digit limit
        b'{"n": ' + b"9" * 100_000 + b"}",
        b'{"n": 1e999999999}',
        b'{"n": -1e-999999999}',
        b'{"n": 1' + b"0" * 50_000 + b".5}",
        b"NaN",
        b'{"n": Infinity}',
        b'{"n": -Infinity}',
        json.dumps({"s": big_string}).encode(),
        json.dumps({"s": big_string + "x" * 400}).encode(),  # just over the limit
        b'"' + b"\\u0041" * 170_000 + b'"',
        b"{" + b'"k":1,' * 150_000 + b'"k":2}',  # many duplicate keys
        b"[" + b"1," * 400_000 + b"1]",
    ]


_NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    -(2**63),
    10**100,
    Decimal("1E+999999"),
    Decimal("-0.0"),
    Decimal("1E-999999"),
    Decimal("0.0000001"),
    Decimal("-1"),
    "",
    " ",
    "x" * 129,
    "é" * 129,
    "請總結合約 🙏",
    'a "quoted"\nline',
    "2026-01-01T00:00:00.123+05:30",
    "2026-01-01T00:00:00.123-08:00",
    _nested(61),
    _nested(62),
    _nested(63),
    "\u0000",
    "\ud7ff",
    "é",
    "😀",
    "1",
    "2026-01-01T00:00:00",
    "2026-13-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-02-29T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00.1234567890123Z",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    [],
    {},
    [[[[[]]]]],
    {"a": {"b": {}}},
    ["openai", "openai"],
    [1, 2],
    [{"provider": "", "model": "m"}],
    [{"provider": "p", "model": "m"}] * 10,
    "routing.snapshot",
    "routing.cost",
    "tenant.policy",
    "ROUTING.SNAPSHOT",
    1.5,
    2,
    1.0,
]


def _mutate_document(rng: random.Random, doc: Any, depth: int = 0) -> Any:
    """One structure-aware change somewhere in ``doc`` (returns the new document)."""
    if isinstance(doc, dict) and doc and (depth == 0 or (depth < 4 and rng.random() < 0.7)):
        key = rng.choice(list(doc))
        action = rng.random()
        out = dict(doc)
        if action < 0.2:
            del out[key]
        elif action < 0.7:
            out[key] = (
                rng.choice(_NASTY)
                if rng.random() < 0.7
                else _mutate_document(rng, doc[key], depth + 1)
            )
        elif action < 0.8:
            out[rng.choice(["extra", "__proto__", "payload", "type", key + "x"])] = rng.choice(
                _NASTY
            )
        elif action < 0.9 and isinstance(doc[key], str):
            out[key] = doc[key] + rng.choice(["", "x", " ", "\u00e9", "\ud83d\ude00"])
        else:
            out[key] = _mutate_document(rng, doc[key], depth + 1)
        return out
    if isinstance(doc, list) and doc and rng.random() < 0.5:
        out_list = list(doc)
        index = rng.randrange(len(out_list))
        if rng.random() < 0.5:
            out_list[index] = rng.choice(_NASTY)
        else:
            out_list.append(rng.choice(out_list))
        return out_list
    if isinstance(doc, Decimal | int) and not isinstance(doc, bool):
        try:
            return rng.choice(
                [doc + 1, -doc, doc * 10 ** rng.randrange(1, 30), Decimal("1E-7") + doc]
            )
        except ArithmeticError:  # a hostile exponent overflows the default context
            return rng.choice(_NASTY)
    return rng.choice(_NASTY)


def _encode(rng: random.Random, doc: Any) -> bytes:
    """JSON text of ``doc`` (Decimals exact); lone surrogates pass through as invalid UTF-8."""
    ascii_only = rng.random() < 0.5
    return _dump(doc, ascii_only).encode("utf-8", "surrogatepass")


def _dump(o: Any, ascii_only: bool) -> str:
    if isinstance(o, Decimal):
        return str(o) if o.is_finite() else "NaN"
    if isinstance(o, dict):
        return (
            "{"
            + ",".join(
                json.dumps(str(k), ensure_ascii=ascii_only) + ":" + _dump(v, ascii_only)
                for k, v in o.items()
            )
            + "}"
        )
    if isinstance(o, list):
        return "[" + ",".join(_dump(v, ascii_only) for v in o) + "]"
    return json.dumps(o, ensure_ascii=ascii_only)


def _break_rule(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    """Break exactly one rule that relates fields (the ones random mutation rarely hits)."""
    doc = json.loads(_dump(doc, True), parse_float=Decimal)  # a deep copy
    payload = doc["payload"]
    kind = doc["type"]
    choice = rng.randrange(4)
    if choice == 0:
        doc["tenantId"] = doc["tenantId"] + "-other"  # payload.tenantId (if any) now differs
        if kind == "routing.cost":
            doc["tenantId"] = "t" * 129
    elif kind == "routing.snapshot":
        payload["candidateCount"] = len(payload["fallbacks"])
        if choice == 2:
            payload["fallbacks"] = [*payload["fallbacks"], payload["primary"]] * 2
    elif kind == "routing.cost":
        step = rng.choice(["0.0000011", "0.00001", "-0.0000011", "1E-5"])
        payload["totalCostUsd"] = payload["totalCostUsd"] + Decimal(step)
        if choice == 2:
            payload["inputCostUsd"] = -payload["inputCostUsd"] - 1
    else:
        pick = rng.randrange(4)
        if pick == 0:
            payload["deniedProviders"] = [*payload["deniedProviders"], "openai"]
        elif pick == 1:
            payload["preferredProvider"] = "mistral"
        elif pick == 2:
            payload["preferredProvider"] = "not-allowed"
        else:
            payload["allowedProviders"] = ["openai", "openai"]
    return doc


def _mutate_bytes(rng: random.Random, value: bytes, corpus: list[bytes]) -> bytes:
    data = bytearray(value)
    for _ in range(rng.randrange(1, 4)):
        if not data:
            data = bytearray(rng.randbytes(rng.randrange(1, 16)))
            continue
        action = rng.randrange(7)
        index = rng.randrange(len(data))
        if action == 0:
            data[index] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[index] = rng.choice(b'{}[]",:\\0123456789eE+-.tfn \x00\x80\xc3\xed\xff')
        elif action == 2:
            data.insert(index, rng.randrange(256))
        elif action == 3:
            del data[index : index + rng.randrange(1, 8)]
        elif action == 4:
            data = data[:index]
        elif action == 5:
            other = rng.choice(corpus)
            data = data[:index] + other[rng.randrange(len(other)) :]
        else:
            chunk = data[index : index + rng.randrange(1, 32)]
            data[index:index] = chunk * rng.randrange(1, 4)
    return bytes(data)


def mutated_inputs(rng: random.Random, corpus: list[bytes]) -> Iterator[bytes]:
    """An endless mix: 10 % random bytes, 35 % byte mutations, 10 % rule-breaking edits, 40 %
    structural mutations, 5 % valid envelopes (the acceptance path is exercised and checked too)."""
    documents = [json.loads(v, parse_float=Decimal) for v in corpus]
    while True:
        roll = rng.random()
        if roll < 0.10:
            yield rng.randbytes(rng.randrange(0, 256))
        elif roll < 0.45:
            yield _mutate_bytes(rng, rng.choice(corpus), corpus)
        elif roll < 0.55:
            yield _encode(rng, _break_rule(rng, rng.choice(documents)))
        elif roll < 0.95:
            doc = rng.choice(documents)
            for _ in range(rng.randrange(1, 3)):
                doc = _mutate_document(rng, doc)
            yield _encode(rng, doc)
        else:
            yield rng.choice(corpus)

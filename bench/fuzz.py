"""Fuzz the decode path: hostile record values against :func:`schemas.decode_event`.

    python -m bench.fuzz --inputs 1000000 [--seed 1] [--json out.json] [--no-differential]

Each input is one of: random bytes; byte-level mutations (flips, inserts, deletes, truncation,
splices) of valid envelopes built by :func:`schemas.build_event`; structure-aware mutations of those
envelopes (a field dropped, retyped, set to a hostile value, a rule broken on purpose, unknown
fields added) re-encoded as JSON; and fixed hostile shapes (deep nesting, huge numbers, huge
strings, invalid UTF-8, lone surrogates, NaN, over-size records).

For every input it checks:

* **no crash**: ``decode_event`` returns (it must never raise: an exception is a bug, and it
  propagates so that the consumer stops loudly rather than dead-letter everything);
* **no contract breach**: every accepted event satisfies every rule of ``CONTRACT.md`` §1, as
  re-checked by :func:`contract_problems`, an independent checker written from the contract (it
  shares no code with ``schemas``), and the decoded fields are the document's; every rejection has
  a known reason code and a bounded message;
* **bounded memory**: the process's peak RSS is reported (the test suite also bounds the memory
  of single hostile inputs with ``tracemalloc``);
* **the consumer's decoder is the reference** (unless ``--no-differential``):
  :func:`consumer.pipeline.decode.decode_event`, the fast path the consumer runs, returns for every
  input exactly what ``decode_event`` returns (:func:`result_differences`: same reason and
  message, or the same event field by field, payload values type for type and Decimals digit
  for digit). A difference counts as a ``mismatch``.

Exit status 1 when a crash, a breach or a mismatch was seen; the first few are printed (as
``repr`` of the input, truncated) so they can be replayed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from consumer.pipeline.decode import ConsumerEvent, fast_path
from consumer.pipeline.decode import decode_event as fast_decode_event
from schemas import DecodedEvent, EventType, ReasonCode, Rejection, build_event, decode_event
from schemas.jsoncodec import loads

__all__ = [
    "FuzzReport",
    "contract_problems",
    "hostile_inputs",
    "mutated_inputs",
    "result_differences",
    "run_fuzz",
    "valid_envelopes",
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


def _parse_strict(value: bytes) -> Any:
    """RFC 8259 JSON from UTF-8 bytes; non-integers as Decimal; NaN/Infinity and lone surrogates
    refused. Raises ValueError (or RecursionError) otherwise."""
    text = value.decode("utf-8")  # strict: invalid UTF-8 raises
    document = json.loads(text, parse_float=Decimal, parse_constant=_refuse)
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
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
    """Every way an ACCEPTED record breaks ``CONTRACT.md`` §1 or differs from what was decoded.

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


# --- inputs --------------------------------------------------------------------------------------

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def valid_envelopes(rng: random.Random, count: int) -> list[bytes]:
    """``count`` valid record values of the three types, built with :func:`schemas.build_event`."""
    out = []
    for i in range(count):
        tenant = f"tenant-{rng.randrange(50)}"
        when = _T0 + timedelta(seconds=rng.randrange(10**6), microseconds=rng.randrange(10**6))
        which = i % 3
        if which == 0:
            fallbacks = [{"provider": f"p{j}", "model": f"m{j}"} for j in range(rng.randrange(3))]
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
                "extraField": {"kept": [1, "two", None]},
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
            }
            event = build_event(
                EventType.POLICY, payload, tenant_id=tenant, event_id=_uuid(rng), occurred_at=when
            )
        out.append(event.value)
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


# --- the fast decoder against the reference -----------------------------------------------------


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
            if value is not None and fast.payload_json.encode() not in value:
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


# --- the run -------------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    """What a fuzz run found; ``ok`` when no crash and no breach."""

    inputs: int = 0
    seconds: float = 0.0
    accepted: int = 0
    crashes: int = 0
    breaches: int = 0
    #: Inputs where the consumer's fast decoder and the reference disagreed (differential runs).
    mismatches: int = 0
    #: Inputs the fast decoder decided without the reference (valid ones), in differential runs.
    fast_accepted: int = 0
    #: Of those, the events whose payload text alone goes to PostgreSQL (not the whole record).
    payload_texts: int = 0
    peak_rss_mb: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.breaches == 0 and self.mismatches == 0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check_one(
    value: bytes, report: FuzzReport, reasons: Counter[str], *, differential: bool = False
) -> None:
    """Decode ``value`` and record a crash or breach in ``report`` (and, if ``differential``,
    a mismatch of the consumer's fast decoder with the reference)."""
    try:
        result = decode_event(value, max_bytes=MAX_BYTES)
        quick = fast_path(value, MAX_BYTES) if differential else None
        if quick is not None:
            report.fast_accepted += 1
            report.payload_texts += quick.payload_json is not None
        fast = quick or (fast_decode_event(value, max_bytes=MAX_BYTES) if differential else result)
    except BaseException as exc:  # the contract: decode_event never raises
        report.crashes += 1
        if len(report.examples) < 10:
            report.examples.append(f"raised {type(exc).__name__}: {value[:200]!r}")
        return
    if differential:
        differences = result_differences(fast, result, value)
        if differences:
            report.mismatches += 1
            if len(report.examples) < 10:
                report.examples.append(f"fast decoder differs {differences[:3]}: {value[:200]!r}")
    if isinstance(result, DecodedEvent):
        report.accepted += 1
        problems = contract_problems(value, result)
    elif isinstance(result, Rejection):
        reasons[str(result.reason)] += 1
        problems = rejection_problems(result)
    else:
        problems = [f"returned {type(result).__name__}"]
    if problems:
        report.breaches += 1
        if len(report.examples) < 10:
            report.examples.append(f"{problems}: {value[:200]!r}")


def run_fuzz(
    inputs: int,
    seed: int = 1,
    *,
    progress: Callable[[FuzzReport], None] | None = None,
    source: Iterator[bytes] | None = None,
    differential: bool = True,
) -> FuzzReport:
    """Decode ``inputs`` generated inputs (hostile shapes first) and check each one; with
    ``differential``, also check the consumer's fast decoder against the reference on each."""
    rng = random.Random(seed)
    corpus = valid_envelopes(rng, 300)
    generated = source or mutated_inputs(rng, corpus)
    report = FuzzReport()
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    stream = (*hostile_inputs(), *corpus) if source is None else ()
    for value in stream:
        if report.inputs >= inputs:
            break
        check_one(value, report, reasons, differential=differential)
        report.inputs += 1
    while report.inputs < inputs:
        check_one(next(generated), report, reasons, differential=differential)
        report.inputs += 1
        if progress and report.inputs % 100_000 == 0:
            report.seconds = time.perf_counter() - started
            progress(report)
    report.seconds = time.perf_counter() - started
    report.reasons = dict(reasons.most_common())
    report.peak_rss_mb = round(_peak_rss_mb(), 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=argparse.FileType("w"), help="write the report as JSON")
    parser.add_argument(
        "--no-differential",
        dest="differential",
        action="store_false",
        help="skip checking consumer.pipeline.decode against schemas.decode_event on every input",
    )
    args = parser.parse_args(argv)

    def show(r: FuzzReport) -> None:
        print(
            f"  {r.inputs:>9,} inputs  {r.inputs_per_s:>8,.0f}/s  crashes={r.crashes} "
            f"breaches={r.breaches} mismatches={r.mismatches}",
            file=sys.stderr,
        )

    report = run_fuzz(args.inputs, args.seed, progress=show, differential=args.differential)
    summary = {**asdict(report), "inputs_per_s": round(report.inputs_per_s, 1), "seed": args.seed}
    print(
        f"fuzz: {report.inputs:,} inputs in {report.seconds:.1f} s "
        f"({report.inputs_per_s:,.0f}/s), accepted {report.accepted:,}, "
        f"crashes {report.crashes}, contract breaches {report.breaches}, "
        f"peak RSS {report.peak_rss_mb} MiB"
    )
    if args.differential:
        print(
            f"fast decoder vs reference: {report.mismatches} mismatches; "
            f"{report.fast_accepted:,} inputs accepted by its fast path "
            f"({report.payload_texts:,} with the payload's text alone)"
        )
    print("rejections by reason: " + ", ".join(f"{k}={v:,}" for k, v in report.reasons.items()))
    for example in report.examples:
        print("  " + example)
    if args.json:
        json.dump(summary, args.json, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

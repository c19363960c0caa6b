"""Hand-written records where msgspec's grammar and the standard library's could part: duplicate
keys, UUID and RFC 3339 forms, numbers and money, strings and UTF-8, nesting, sizes. The
differential tests decode each with the consumer's decoder and the reference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from consumer.pipeline.decode import FAST_MAX_BYTES
from schemas import EventType, dumps
from tests.schemas_helpers import envelope, mutated

__all__ = [
    "EDGES",
    "VALID_SNAPSHOT",
    "in_payload",
    "json_literal",
    "prefixed",
    "suffixed",
    "valid_doc",
    "with_value",
]


def valid_doc(event_type: EventType = EventType.SNAPSHOT) -> dict[str, Any]:
    doc = envelope(event_type)
    if "tenantId" in doc["payload"]:
        doc["payload"]["tenantId"] = doc["tenantId"]
    return doc


def with_value(path: str, value: object, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    doc = valid_doc(event_type)
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return dumps(doc)


def json_literal(path: str, literal: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """A record whose field at ``path`` is the JSON text ``literal`` exactly."""
    return with_value(path, "@@literal@@", event_type).replace(b'"@@literal@@"', literal.encode())


def prefixed(fields: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """``fields`` (JSON members) written before the record's own: duplicates come first."""
    return b"{" + fields.encode() + b"," + dumps(valid_doc(event_type))[1:]


def suffixed(fields: str, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    """``fields`` written after the record's own: duplicates come last (they win)."""
    return dumps(valid_doc(event_type))[:-1] + b"," + fields.encode() + b"}"


def in_payload(fields: str, *, last: bool, event_type: EventType = EventType.SNAPSHOT) -> bytes:
    value = dumps(valid_doc(event_type))
    start = value.index(b'"payload":{') + len(b'"payload":{')
    if not last:
        return value[:start] + fields.encode() + b"," + value[start:]
    end = value.rindex(b"}", 0, len(value) - 1)
    return value[:end] + b"," + fields.encode() + value[end:]


def with_tenant(tenant: str) -> bytes:
    """A snapshot of ``tenant`` (envelope and payload)."""
    doc = valid_doc()
    doc["tenantId"] = doc["payload"]["tenantId"] = tenant
    return dumps(doc)


def two_types(first: EventType, last: EventType, **changes: Any) -> bytes:
    """A record with two "type" keys and a payload with the fields of both types."""
    doc = valid_doc(EventType.POLICY)
    doc["payload"] = {**valid_doc(EventType.COST)["payload"], **doc["payload"], **changes}
    doc.pop("requestId", None)
    value = dumps(doc).replace(b'"type":"tenant.policy",', b"")
    return (
        b'{"type":"%s",' % first.value.encode()
        + value[1:-1]
        + b',"type":"%s"}' % (last.value.encode())
    )


S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
VALID_SNAPSHOT = dumps(valid_doc())

EDGES: list[tuple[str, bytes]] = [
    # duplicate keys: the reference keeps the last
    ("dup-tenant-first-other", prefixed('"tenantId":"other"')),
    ("dup-tenant-last-other", suffixed('"tenantId":"other"')),
    ("dup-tenant-first-number", prefixed('"tenantId":7')),
    ("dup-tenant-last-number", suffixed('"tenantId":7')),
    ("dup-type-first-cost", prefixed('"type":"routing.cost"')),
    ("dup-type-last-cost", suffixed('"type":"routing.cost"')),
    ("dup-type-last-policy", suffixed('"type":"tenant.policy"')),
    ("dup-type-first-unknown", prefixed('"type":"routing.x"')),
    ("dup-type-policy-then-cost", two_types(P, C)),
    ("dup-type-cost-then-policy", two_types(C, P)),
    ("dup-type-policy-then-cost-tokens", two_types(P, C, inputTokens=-1)),
    ("dup-type-cost-then-policy-tokens", two_types(C, P, inputTokens=-1)),
    ("dup-version-first-2", prefixed('"schemaVersion":2')),
    ("dup-version-last-2", suffixed('"schemaVersion":2')),
    ("dup-event-id-first-bad", prefixed('"eventId":"x"')),
    ("dup-event-id-last-hex", suffixed('"eventId":"0b8a3f9c52a44c1e9d0f2f1e4e6b7a10"')),
    ("dup-occurred-last-space", suffixed('"occurredAt":"2026-01-31 12:00:00Z"')),
    ("dup-payload-first-cost", prefixed('"payload":' + dumps(valid_doc(C)["payload"]).decode())),
    ("dup-payload-last-cost", suffixed('"payload":' + dumps(valid_doc(C)["payload"]).decode())),
    ("dup-request-last-null", suffixed('"requestId":null')),
    ("dup-count-first-1", in_payload('"candidateCount":1', last=False)),
    ("dup-count-last-1", in_payload('"candidateCount":1', last=True)),
    (
        "dup-fallbacks-last-many",
        in_payload('"fallbacks":' + '[{"provider":"p","model":"m"}]' * 1, last=True),
    ),
    ("dup-timestamp-last-bad", in_payload('"timestamp":"2026-01-31T12:00:00+0000"', last=True)),
    ("dup-money-last-string", in_payload('"costEstimate":{"totalCostUsd":"1"}', last=True)),
    ("dup-extra-keys", in_payload('"k":1,"k":2.50,"k":[1]', last=True)),
    # eventId forms
    ("uuid-upper", with_value("eventId", "0B8A3F9C-52A4-4C1E-9D0F-2F1E4E6B7A10")),
    ("uuid-hex-only", with_value("eventId", "0b8a3f9c52a44c1e9d0f2f1e4e6b7a10")),
    ("uuid-braces", with_value("eventId", "{0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a1}")),
    ("uuid-urn", with_value("eventId", "urn:uuid:0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10")),
    ("uuid-hyphen-moved", with_value("eventId", "0b8a3f9c5-2a4-4c1e-9d0f-2f1e4e6b7a10")),
    ("uuid-escaped", json_literal("eventId", '"\\u0030b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10"')),
    ("uuid-non-ascii", with_value("eventId", "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a1\u0661")),
    # RFC 3339 forms, in occurredAt and in the snapshot's timestamp
    *(
        (f"{field}-{why}", with_value(path, text))
        for field, path in (("occurred", "occurredAt"), ("timestamp", "payload.timestamp"))
        for why, text in (
            ("lower-t-z", "2026-01-31t12:00:00z"),
            ("space", "2026-01-31 12:00:00Z"),
            ("no-colon-offset", "2026-01-31T12:00:00+0100"),
            ("offset-hours-only", "2026-01-31T12:00:00+01"),
            ("offset-minus-zero", "2026-01-31T12:00:00-00:00"),
            ("offset-80-minutes", "2026-01-31T12:00:00+00:80"),
            ("offset-24", "2026-01-31T12:00:00+24:00"),
            ("fraction-7-round-up", "2026-01-31T23:59:59.9999995Z"),
            ("fraction-7-down", "2026-01-31T12:00:00.1234561Z"),
            ("fraction-6", "2026-01-31T12:00:00.123456Z"),
            ("fraction-1", "2026-01-31T12:00:00.5Z"),
            ("fraction-empty", "2026-01-31T12:00:00.Z"),
            ("fraction-comma", "2026-01-31T12:00:00,5Z"),
            ("no-seconds", "2026-01-31T12:00Z"),
            ("naive", "2026-01-31T12:00:00"),
            ("leap-second", "2016-12-31T23:59:60Z"),
            ("feb-29-2024", "2024-02-29T00:00:00Z"),
            ("feb-29-2026", "2026-02-29T00:00:00Z"),
            ("year-0", "0000-01-01T00:00:00Z"),
            ("year-1-plus-1h", "0001-01-01T00:30:00+01:00"),
            ("year-1-z", "0001-01-01T00:00:00Z"),
            ("year-9999-minus", "9999-12-31T23:30:00-01:00"),
            ("year-9999-z", "9999-12-31T23:59:59.999999Z"),
            ("hour-24", "2026-01-31T24:00:00Z"),
            ("trailing-space", "2026-01-31T12:00:00Z "),
            ("basic-format", "20260131T120000Z"),
            ("arabic-digit", "2026-01-31T12:00:0\u0661Z"),
        )
    ),
    # integers, numbers, money
    ("count-1.0", json_literal("payload.candidateCount", "3.0")),
    ("count-true", json_literal("payload.candidateCount", "true")),
    ("count-huge", json_literal("payload.candidateCount", "1" + "0" * 30)),
    ("count-3e0", json_literal("payload.candidateCount", "3e0")),
    ("version-1.0", json_literal("schemaVersion", "1.0")),
    ("version-true", json_literal("schemaVersion", "true")),
    ("version-1e0", json_literal("schemaVersion", "1e0")),
    ("version-huge", json_literal("schemaVersion", "9" * 40)),
    ("version-minus-0", json_literal("schemaVersion", "-0")),
    ("money-string", with_value("payload.costEstimate.totalCostUsd", "0.1")),
    ("money-minus-zero", json_literal("payload.costEstimate.totalCostUsd", "-0.0")),
    ("money-minus-zero-int", json_literal("payload.costEstimate.totalCostUsd", "-0")),
    ("money-tiny-negative", json_literal("payload.costEstimate.totalCostUsd", "-1E-400")),
    ("money-huge", json_literal("payload.costEstimate.totalCostUsd", "1E+400")),
    ("money-exponent", json_literal("payload.costEstimate.totalCostUsd", "12E-4")),
    ("money-null", json_literal("payload.costEstimate.totalCostUsd", "null")),
    ("money-true", json_literal("payload.costEstimate.totalCostUsd", "true")),
    ("money-big-int", json_literal("payload.costEstimate.totalCostUsd", "9" * 30)),
    ("money-nan", json_literal("payload.costEstimate.totalCostUsd", "NaN")),
    ("money-missing", with_value("payload.costEstimate", {"currency": "USD"})),
    (
        "extra-int64-edges",
        json_literal(
            "payload.x",
            "[9223372036854775807,-9223372036854775808,18446744073709551615,18446744073709551616,-9223372036854775809]",
        ),
    ),
    (
        "extra-float-forms",
        json_literal(
            "payload.x", "[0.1,1.10,1e5,1E-5,-0.0,0e0,1.5e+3,123456789012345678901234567890.5]"
        ),
    ),
    ("extra-long-int-2000", json_literal("payload.x", "7" * 2000)),
    (
        "cost-int-amounts",
        with_value("payload.inputCostUsd", 0, C).replace(
            b'"totalCostUsd":0.3', b'"totalCostUsd":0.2'
        ),
    ),
    ("cost-huge-exponents", json_literal("payload.inputCostUsd", "1E+999999", C)),
    ("cost-tokens-1.0", json_literal("payload.inputTokens", "1.0", C)),
    ("cost-tokens-negative", json_literal("payload.inputTokens", "-1", C)),
    ("cost-total-off-1e-6", with_value("payload.totalCostUsd", Decimal("0.300001"), C)),
    ("cost-total-off-more", with_value("payload.totalCostUsd", Decimal("0.3000011"), C)),
    ("cost-request-null", json_literal("requestId", "null", C)),
    ("policy-request-null", json_literal("requestId", "null", P)),
    ("policy-request-given", with_value("requestId", "r-1", P)),
    ("policy-request-empty", with_value("requestId", "", P)),
    ("policy-max-cost-zero", with_value("payload.maxCostPerRequestUsd", 0, P)),
    ("policy-max-cost-int", with_value("payload.maxCostPerRequestUsd", 2, P)),
    ("policy-max-cost-minus-zero", json_literal("payload.maxCostPerRequestUsd", "-0.0", P)),
    ("policy-max-cost-tiny", json_literal("payload.maxCostPerRequestUsd", "1E-400", P)),
    (
        "policy-preferred-missing",
        dumps(mutated(valid_doc(P), lambda d: d["payload"].pop("preferredProvider"))),
    ),
    (
        "policy-max-cost-missing",
        dumps(mutated(valid_doc(P), lambda d: d["payload"].pop("maxCostPerRequestUsd"))),
    ),
    ("policy-denied-duplicate", with_value("payload.deniedProviders", ["x", "x"], P)),
    (
        "policy-unicode-lists",
        with_value("payload.allowedProviders", ["é", "e\u0301"], P).replace(
            b'"preferredProvider":"openai"', b'"preferredProvider":null'
        ),
    ),
    # strings: lengths in code points, escapes, UTF-8
    ("tenant-128-non-ascii", with_tenant("é" * 128)),
    ("tenant-129-non-ascii", with_tenant("é" * 129)),
    ("tenant-astral", with_tenant("😀" * 128)),
    ("tenant-escaped", json_literal("tenantId", '"tenant\\u002da"')),
    ("tenant-escaped-pair", json_literal("payload.x", '"\\ud83d\\ude00"')),
    ("lone-high-surrogate-payload", json_literal("payload.x", '"\\ud800"')),
    ("lone-low-surrogate-payload", json_literal("payload.x", '"\\udc00"')),
    ("lone-surrogate-skipped", suffixed('"x":"\\udc00"')),
    ("lone-surrogate-then-text", suffixed('"x":"\\ud800abc"')),
    ("reversed-pair", suffixed('"x":"\\udc00\\ud800"')),
    ("nul-escaped", json_literal("payload.x", '"\\u0000"')),
    ("raw-control-char", json_literal("payload.x", '"a\tb"')),
    ("raw-del-char", json_literal("payload.x", '"a\x7fb"')),
    ("invalid-utf8-skipped", suffixed('"x":"@"').replace(b'"@"', b'"\xff"')),
    ("invalid-utf8-payload", json_literal("payload.x", '"@"').replace(b'"@"', b'"\xc3\x28"')),
    ("encoded-surrogate-skipped", suffixed('"x":"@"').replace(b'"@"', b'"\xed\xa0\x80"')),
    # msgspec checks UTF-8 only in the strings it decodes: not in a raw field, nor in a
    # duplicate it replaces
    ("invalid-utf8-dup-occurred", prefixed('"occurredAt":"@"').replace(b'"@"', b'"2\xec026"')),
    ("invalid-utf8-dup-event-id", prefixed('"eventId":"@"').replace(b'"@"', b'"\xff"')),
    (
        "invalid-utf8-dup-payload",
        prefixed('"payload":' + dumps({**valid_doc()["payload"], "x": "@"}).decode()).replace(
            b'"@"', b'"\xc3\x28"'
        ),
    ),
    ("overlong-utf8", suffixed('"x":"@"').replace(b'"@"', b'"\xc0\xaf"')),
    ("bom", b"\xef\xbb\xbf" + VALID_SNAPSHOT),
    ("whitespace-json", b" \t\r\n" + VALID_SNAPSHOT.replace(b",", b" ,\n\t") + b"\r\n "),
    ("whitespace-form-feed", VALID_SNAPSHOT + b"\x0c"),
    ("whitespace-nbsp", VALID_SNAPSHOT.replace(b",", b"\xc2\xa0,", 1)),
    ("trailing-nul", VALID_SNAPSHOT + b"\x00"),
    ("trailing-data", VALID_SNAPSHOT + b"{}"),
    ("two-objects", VALID_SNAPSHOT + VALID_SNAPSHOT),
    ("nan-skipped", suffixed('"x":NaN')),
    ("infinity-skipped", suffixed('"x":-Infinity')),
    ("big-int-skipped-4000", suffixed('"x":' + "9" * 3800)),
    ("big-int-skipped-5000", suffixed('"x":' + "9" * 5000)),
    ("single-quotes", VALID_SNAPSHOT.replace(b'"strategy"', b"'strategy'")),
    ("trailing-comma", suffixed('"x":[1,]')),
    # nesting
    ("deep-300-skipped", suffixed('"x":' + "[" * 300 + "]" * 300)),
    ("deep-400-payload", json_literal("payload.x", "[" * 400 + "]" * 400)),
    ("deep-objects-payload", json_literal("payload.x", '{"a":' * 150 + "1" + "}" * 150)),
    # the limit, 64 levels (envelope 1, payload 2); with the sample snapshot's own 8 brackets, a
    # record of at most 64 brackets surely nests within it, and may take the fast path
    ("deep-56-objects-payload", json_literal("payload.x", '{"a":' * 56 + "1" + "}" * 56)),
    ("depth-64-payload", json_literal("payload.x", '{"a":' * 61 + "[]" + "}" * 61)),
    ("depth-65-payload", json_literal("payload.x", '{"a":' * 62 + "[]" + "}" * 62)),
    (
        "depth-64-fallback",
        json_literal(
            "payload.fallbacks", '[{"provider":"p","model":"m","x":' + "[" * 60 + "]" * 60 + "}]"
        ),
    ),
    (
        "depth-65-fallback",
        json_literal(
            "payload.fallbacks", '[{"provider":"p","model":"m","x":' + "[" * 61 + "]" * 61 + "}]"
        ),
    ),
    ("depth-65-skipped", suffixed('"x":' + "[" * 64 + "]" * 64)),
    ("depth-65-dup-event-id", prefixed('"eventId":' + "[" * 64 + "]" * 64)),
    (
        "depth-65-dup-payload",
        prefixed('"payload":' + dumps({**valid_doc()["payload"], "x": "@"}).decode()).replace(
            b'"@"', b"[" * 63 + b"]" * 63
        ),
    ),
    ("brackets-in-strings", json_literal("payload.x", '"' + "[{" * 100 + '"')),
    ("int-4300-digits", json_literal("payload.x", "7" * 4300)),
    ("int-4301-digits", json_literal("payload.x", "7" * 4301)),
    ("deep-5000-skipped", suffixed('"x":' + "[" * 5000 + "]" * 5000)),
    ("many-brackets-wide", json_literal("payload.x", "[" + ",".join(["[]"] * 400) + "]")),
    # sizes
    (
        "at-fast-limit",
        json_literal("payload.x", '"' + "x" * (FAST_MAX_BYTES - len(VALID_SNAPSHOT) - 8) + '"'),
    ),
    ("over-fast-limit", json_literal("payload.x", '"' + "x" * FAST_MAX_BYTES + '"')),
    ("long-string-1k", json_literal("payload.x", '"' + "x" * 1024 + '"')),
]

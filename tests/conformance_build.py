"""Build the conformance corpus ``schemas/conformance/`` from the Python reference.

``python -m tests.conformance_build`` writes every case below as ``records/<case>.bin`` (the raw
record value, byte for byte) and the manifest ``verdicts.json``: per case the verdict and reason
code that ``schemas.decode_event`` gives, the event type where the decoder knew it, an optional
``max_bytes`` and a one-line note. The corpus is the one judge of all three decoders: the Python
reference, the consumer's fast decoder (``tests/test_conformance.py``) and the TypeScript
validators (``typescript/test/conformance.test.ts``).

Where the contract demands another verdict than the reference gives today (a case built with
``contract=...``), the manifest holds the contract's verdict and records the disagreement under
``disagreements``; the Python test expects those cases to fail (strictly), so the entry must go
(rerun this script) once the reference is fixed. Rerunning the script is how a case is added:
write it below, run, review the diff of ``verdicts.json`` by hand.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from consumer.pipeline.decode import decode_event as fast_decode_event
from schemas import DEFAULT_MAX_BYTES, Rejection, decode_event, dumps, loads
from schemas.codes import EventType, ReasonCode

ROOT: Final = Path(__file__).resolve().parent.parent
CORPUS: Final = ROOT / "schemas" / "conformance"
RECORDS: Final = CORPUS / "records"
MANIFEST: Final = CORPUS / "verdicts.json"

#: Reasons decided before the decoder has read ``type``: the manifest's type is null for them.
_BEFORE_TYPE: Final = frozenset(
    {
        ReasonCode.PAYLOAD_TOO_LARGE,
        ReasonCode.INVALID_JSON,
        ReasonCode.NOT_AN_OBJECT,
        ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
        ReasonCode.UNSUPPORTED_EVENT_TYPE,
    }
)

EVENT_ID: Final = "0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10"
OTHER_EVENT_ID: Final = "7d444840-9dc0-11d1-b245-5ffdce74fad2"
AT: Final = "2026-01-31T12:00:00.000Z"


@dataclass(frozen=True)
class Case:
    """One record of the corpus."""

    name: str
    value: bytes
    note: str
    max_bytes: int | None = None
    #: ``(verdict, reason)`` the contract demands where the reference disagrees today.
    contract: tuple[str, str | None] | None = None


def snapshot_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "snapshotId": "snap-1",
        "strategy": "cost-optimized",
        "resolvedAlias": "fast-chat",
        "candidateCount": 3,
        "timestamp": AT,
        "costEstimate": {"totalCostUsd": Decimal("0.0042"), "currency": "USD"},
        "tenantId": "tenant-a",
        "primary": {"provider": "openai", "model": "gpt-4o-mini"},
        "fallbacks": [
            {"provider": "anthropic", "model": "claude-3-5-haiku"},
            {"provider": "google", "model": "gemini-1.5-flash"},
        ],
    }
    return _change(payload, changes)


def cost_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "inputTokens": 1200,
        "outputTokens": 350,
        "inputCostUsd": Decimal("0.1"),
        "outputCostUsd": Decimal("0.2"),
        "totalCostUsd": Decimal("0.3"),
        "provider": "openai",
    }
    return _change(payload, changes)


def policy_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "tenantId": "tenant-a",
        "allowedProviders": ["openai", "anthropic"],
        "deniedProviders": ["mistral"],
        "preferredProvider": "openai",
        "maxCostPerRequestUsd": Decimal("0.50"),
        "defaultStrategy": "cost-optimized",
    }
    return _change(payload, changes)


_DROP: Final = object()


def _change(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_PAYLOADS: Final[dict[str, Callable[..., dict[str, Any]]]] = {
    "routing.snapshot": snapshot_payload,
    "routing.cost": cost_payload,
    "tenant.policy": policy_payload,
}


_DEFAULT: Final = object()


def envelope(
    event_type: str = "routing.cost", payload: Any = _DEFAULT, **changes: Any
) -> dict[str, Any]:
    """A valid envelope of ``event_type`` (its default payload unless given), then ``changes``."""
    out: dict[str, Any] = {
        "eventId": EVENT_ID,
        "type": event_type,
        "schemaVersion": 1,
        "occurredAt": AT,
        "tenantId": "tenant-a",
        "requestId": "req-1",
        "payload": _PAYLOADS[event_type]() if payload is _DEFAULT else payload,
    }
    if event_type == "tenant.policy":
        del out["requestId"]
    if payload is _DROP:
        del out["payload"]
    return _change(out, changes)


def record(event_type: str = "routing.cost", payload: Any = _DEFAULT, **changes: Any) -> bytes:
    return dumps(envelope(event_type, payload, **changes))


def raw(text: str) -> bytes:
    return text.encode("utf-8")


def with_payload_text(event_type: str, payload_text: str, **changes: Any) -> bytes:
    """A record whose payload is ``payload_text`` verbatim (for literals dumps cannot write)."""
    marker = "__PAYLOAD__"
    text = dumps(envelope(event_type, marker, **changes)).decode()
    return text.replace(f'"{marker}"', payload_text).encode("utf-8")


def cost_text(**fields: str) -> str:
    """The default cost payload as text, with some fields' JSON text replaced."""
    parts = {k: dumps(v).decode() for k, v in cost_payload().items()}
    parts.update(fields)
    return "{" + ",".join(f'"{k}":{v}' for k, v in parts.items()) + "}"


def nested(depth: int) -> str:
    """Arrays nested so that, under a payload field, the record is ``depth`` levels deep."""
    arrays = depth - 2  # the envelope object is level 1, the payload object level 2
    return "[" * arrays + "]" * arrays


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, value: bytes, note: str, **kw: Any) -> None:
        out.append(Case(name, value, note, **kw))

    # --- valid events of every type --------------------------------------------------------------
    add("valid-snapshot", record("routing.snapshot"), "a snapshot with two fallbacks")
    add("valid-cost", record("routing.cost"), "a cost: 0.1 + 0.2 = 0.3 exactly, as decimals")
    add("valid-policy", record("tenant.policy"), "a policy without requestId")
    add(
        "valid-policy-request-id",
        record("tenant.policy", requestId="req-9"),
        "a policy may carry a requestId",
    )
    add(
        "valid-policy-null-request-id",
        record("tenant.policy", requestId=None),
        "requestId null on a policy",
    )
    add(
        "valid-policy-empty-lists",
        record(
            "tenant.policy",
            policy_payload(
                allowedProviders=[],
                deniedProviders=[],
                preferredProvider=None,
                maxCostPerRequestUsd=None,
            ),
        ),
        "empty lists, null preferredProvider and null maxCostPerRequestUsd",
    )
    add(
        "valid-policy-empty-allowed-any-preferred",
        record("tenant.policy", policy_payload(allowedProviders=[], preferredProvider="cohere")),
        "an empty allowed list allows any preferred provider not denied",
    )
    add(
        "valid-snapshot-no-fallbacks",
        record("routing.snapshot", snapshot_payload(candidateCount=1, fallbacks=[])),
        "1 + 0 fallbacks <= candidateCount 1",
    )
    add(
        "valid-snapshot-count-equal",
        record("routing.snapshot", snapshot_payload(candidateCount=3)),
        "1 + 2 fallbacks == candidateCount 3 (the bound itself)",
    )
    # --- times -----------------------------------------------------------------------------------
    for name, stamp, note in [
        ("offset-plus-0530", "2026-01-31T17:30:00+05:30", "UTC offset +05:30"),
        ("offset-minus-0800", "2026-01-31T04:00:00-08:00", "UTC offset -08:00"),
        ("offset-minus-zero", "2026-01-31T12:00:00-00:00", "offset -00:00 is UTC"),
        ("offset-plus-2359", "2026-01-31T12:00:00+23:59", "largest offset"),
        ("lowercase-t-z", "2026-01-31t12:00:00z", "lower-case t and z are RFC 3339"),
        ("fraction-none", "2026-01-31T12:00:00Z", "no fraction"),
        ("fraction-one-digit", "2026-01-31T12:00:00.5Z", "one fraction digit"),
        ("fraction-nine-digits", "2026-01-31T12:00:00.123456789Z", "nanoseconds (truncated to us)"),
        (
            "fraction-twenty-digits",
            "2026-01-31T12:00:00.12345678901234567890+01:00",
            "20 fraction digits",
        ),
        ("leap-day", "2028-02-29T00:00:00Z", "29 February of a leap year"),
        ("year-2000-leap-day", "2000-02-29T00:00:00Z", "2000 is a leap year (divisible by 400)"),
        ("first-instant", "0001-01-01T00:00:00Z", "the first representable instant"),
        ("first-instant-negative-offset", "0001-01-01T00:00:00-00:01", "still year 1 in UTC"),
        ("last-instant", "9999-12-31T23:59:59.999999999Z", "the last second of year 9999"),
    ]:
        add(f"valid-time-{name}", record(occurredAt=stamp), note)
    for name, stamp, note in [
        ("leap-second", "2016-12-31T23:59:60Z", "second 60 (a leap second) is refused"),
        ("february-30", "2026-02-30T12:00:00Z", "30 February does not exist"),
        ("february-29-common-year", "2026-02-29T12:00:00Z", "2026 is not a leap year"),
        ("year-1900-february-29", "1900-02-29T12:00:00Z", "1900 is not a leap year"),
        ("hour-24", "2026-01-31T24:00:00Z", "hour 24"),
        ("minute-60", "2026-01-31T12:60:00Z", "minute 60"),
        ("month-13", "2026-13-01T12:00:00Z", "month 13"),
        ("day-0", "2026-01-00T12:00:00Z", "day 0"),
        ("year-0", "0000-01-01T00:00:00Z", "year 0 does not exist"),
        ("before-year-1-in-utc", "0001-01-01T00:00:00+00:01", "is year 0 once in UTC"),
        ("after-year-9999-in-utc", "9999-12-31T23:59:59-00:01", "is year 10000 once in UTC"),
        ("no-offset", "2026-01-31T12:00:00", "no offset: ambiguous"),
        ("offset-without-colon", "2026-01-31T12:00:00+0530", "+HHMM is ISO 8601, not RFC 3339"),
        ("offset-hour-24", "2026-01-31T12:00:00+24:00", "offset hour 24"),
        ("offset-minute-60", "2026-01-31T12:00:00+05:60", "offset minute 60"),
        ("space-separator", "2026-01-31 12:00:00Z", "a space instead of T"),
        ("date-only", "2026-01-31", "a date without time"),
        ("empty-fraction", "2026-01-31T12:00:00.Z", "a dot without digits"),
        (
            "unicode-digits",
            "\uff12\uff10\uff12\uff16-01-31T12:00:00Z",
            "full-width digits are not [0-9]",
        ),
        ("epoch-number", "1769860800", "a number in a string"),
    ]:
        add(f"invalid-time-{name}", record(occurredAt=stamp), note)
    add(
        "valid-equal-timestamps-a",
        record(occurredAt="2026-01-31T12:00:00+00:00", eventId=EVENT_ID),
        "same occurredAt as -b, another eventId: both valid (eventId breaks the tie)",
    )
    add(
        "valid-equal-timestamps-b",
        record(occurredAt="2026-01-31T13:00:00+01:00", eventId=OTHER_EVENT_ID),
        "the same instant as -a written with another offset",
    )
    add(
        "invalid-snapshot-timestamp",
        record("routing.snapshot", snapshot_payload(timestamp="2026-02-30T00:00:00Z")),
        "payload.timestamp: 30 February",
    )
    add(
        "invalid-snapshot-timestamp-number",
        record("routing.snapshot", snapshot_payload(timestamp=1769860800)),
        "payload.timestamp as a number",
    )
    # --- unknown fields --------------------------------------------------------------------------
    add(
        "valid-unknown-envelope-field",
        record(traceId="abc", producer={"name": "router", "version": [1, 2]}),
        "unknown envelope fields are kept",
    )
    add(
        "valid-unknown-nested-fields",
        record(
            "routing.snapshot",
            snapshot_payload(
                primary={
                    "provider": "openai",
                    "model": "gpt-4o",
                    "region": {"name": "eu", "zones": [1, 2]},
                },
                costEstimate={
                    "totalCostUsd": Decimal("0.01"),
                    "breakdown": {"input": Decimal("0.004")},
                },
                experiment={"arm": "b", "weights": [Decimal("0.25"), Decimal("0.75")]},
            ),
        ),
        "unknown fields inside primary, costEstimate and the payload are kept",
    )
    add(
        "valid-unknown-proto-key",
        with_payload_text(
            "routing.cost", cost_text(__proto__='{"polluted":true}', constructor='"x"')
        ),
        "keys named __proto__ and constructor are ordinary unknown fields",
    )
    # --- exact decimals and big numbers ----------------------------------------------------------
    add(
        "valid-cost-integers-as-money",
        record(payload=cost_payload(inputCostUsd=1, outputCostUsd=2, totalCostUsd=3)),
        "integer literals are valid amounts",
    )
    add(
        "valid-cost-exponents",
        with_payload_text(
            "routing.cost",
            cost_text(inputCostUsd="1E+400", outputCostUsd="0", totalCostUsd="1e400"),
        ),
        "1E+400 is a finite decimal (a float would be Infinity)",
    )
    add(
        "valid-cost-tiny-exponents",
        with_payload_text(
            "routing.cost",
            cost_text(inputCostUsd="1E-400", outputCostUsd="2e-400", totalCostUsd="0"),
        ),
        "3E-400 is within 0.000001 of 0",
    )
    add(
        "valid-cost-30-digit-tokens",
        with_payload_text(
            "routing.cost",
            cost_text(
                inputTokens="123456789012345678901234567890",
                outputTokens="987654321098765432109876543210",
            ),
        ),
        "30-digit integers are valid counts",
    )
    add(
        "valid-cost-50-digit-amounts",
        with_payload_text(
            "routing.cost",
            cost_text(
                inputCostUsd="12345678901234567890.123456789012345678901234567890",
                outputCostUsd="0.000000000000000000000000000001",
                totalCostUsd="12345678901234567890.123456789012345678901234567891",
            ),
        ),
        "exact sums beyond a float's 17 digits",
    )
    add(
        "invalid-cost-off-by-2e-6-at-20-digits",
        with_payload_text(
            "routing.cost",
            cost_text(
                inputCostUsd="12345678901234567890.000001",
                outputCostUsd="0",
                totalCostUsd="12345678901234567890.000003",
            ),
        ),
        "off by 0.000002: a float could not tell, a decimal can",
    )
    add(
        "valid-cost-off-by-tolerance",
        with_payload_text("routing.cost", cost_text(totalCostUsd="0.300001")),
        "off by exactly 0.000001: inside the tolerance",
    )
    add(
        "invalid-cost-off-beyond-tolerance",
        with_payload_text("routing.cost", cost_text(totalCostUsd="0.3000010001")),
        "off by 0.0000010001",
    )
    add(
        "valid-cost-negative-zero",
        with_payload_text(
            "routing.cost",
            cost_text(
                inputTokens="-0", inputCostUsd="-0.0", outputCostUsd="0.3", totalCostUsd="0.30"
            ),
        ),
        "-0 is the integer 0 and -0.0 equals 0: both >= 0",
    )
    add(
        "valid-cost-python-rounds-hostile-sum",
        with_payload_text(
            "routing.cost",
            cost_text(inputCostUsd="1E+10000", outputCostUsd="1", totalCostUsd="1E+10000"),
        ),
        "exactly off by 1, but the reference computes at 10,000 digits and rounds the 1 away",
    )
    add(
        "valid-cost-python-rounds-long-total",
        with_payload_text(
            "routing.cost",
            cost_text(
                inputCostUsd="0", outputCostUsd="0", totalCostUsd="0.000001" + "0" * 12000 + "1"
            ),
        ),
        "exactly 1e-6 + 1e-12007 over, but the reference rounds to 10,000 digits: accepted",
    )
    add(
        "valid-number-4300-digits",
        with_payload_text("routing.cost", cost_text(note="-" + "9" * 4300)),
        "an integer of 4,300 digits (Python's limit) in an unknown field",
    )
    add(
        "invalid-number-4301-digits",
        with_payload_text("routing.cost", cost_text(note="9" * 4301)),
        "an integer of 4,301 digits: over Python's int limit",
    )
    add(
        "invalid-tokens-4301-digits",
        with_payload_text("routing.cost", cost_text(inputTokens="1" * 4301)),
        "a count of 4,301 digits",
    )
    add(
        "valid-number-huge-decimal",
        with_payload_text("routing.cost", cost_text(note="1." + "7" * 5000)),
        "a decimal literal of 5,000 digits (no int limit for decimals)",
    )
    add(
        "valid-number-largest-exponent",
        with_payload_text("routing.cost", cost_text(note="1e999999999999999999")),
        "the largest exponent a Python Decimal takes",
    )
    add(
        "valid-unknown-number-beyond-decimal-range",
        with_payload_text("routing.cost", cost_text(note="1e9999999999999999999")),
        "an exponent beyond any exact decimal in an unknown field: JSON, kept as written "
        "(PostgreSQL refuses the record: db_rejected)",
        contract=("valid", None),
    )
    add(
        "invalid-money-exponent-over-decimal-range",
        with_payload_text(
            "routing.cost",
            cost_text(inputCostUsd="1e9999999999999999999", totalCostUsd="1e9999999999999999999"),
        ),
        "money with an exponent beyond any exact decimal: not a decimal (schema_violation)",
        contract=("rejected", "schema_violation"),
    )
    for name, literal in [
        ("nan", "NaN"),
        ("infinity", "Infinity"),
        ("minus-infinity", "-Infinity"),
    ]:
        add(
            f"invalid-money-{name}",
            with_payload_text("routing.cost", cost_text(totalCostUsd=literal)),
            f"{literal} is not JSON",
        )
    add(
        "invalid-nan-unknown-field",
        with_payload_text("routing.cost", cost_text(note="NaN")),
        "NaN anywhere, even in an unknown field",
    )
    # --- types that are not what they look like --------------------------------------------------
    add(
        "invalid-count-one-point-zero",
        record("routing.snapshot", snapshot_payload(candidateCount=Decimal("3.0"))),
        "3.0 is not an integer",
    )
    add(
        "invalid-tokens-exponent",
        with_payload_text("routing.cost", cost_text(inputTokens="1e3")),
        "1e3 is not an integer literal",
    )
    add(
        "invalid-count-boolean",
        record("routing.snapshot", snapshot_payload(candidateCount=True)),
        "true is not a number",
    )
    add(
        "invalid-money-boolean",
        record(payload=cost_payload(outputCostUsd=False)),
        "false is not a number",
    )
    add(
        "invalid-money-string",
        record(payload=cost_payload(totalCostUsd="0.3")),
        "a string is not money, even a decimal one",
    )
    add(
        "invalid-money-negative",
        record(payload=cost_payload(inputCostUsd=Decimal("-0.1"), totalCostUsd=Decimal("0.1"))),
        "a negative amount",
    )
    add(
        "invalid-tokens-negative",
        record(payload=cost_payload(outputTokens=-1)),
        "a negative count",
    )
    add(
        "invalid-tokens-string",
        record(payload=cost_payload(inputTokens="1200")),
        "a count as a string",
    )
    # --- non-ASCII -------------------------------------------------------------------------------
    emoji128 = "😀" * 128
    add(
        "valid-tenant-128-emoji",
        record("routing.snapshot", snapshot_payload(tenantId=emoji128), tenantId=emoji128),
        "128 emoji = 128 code points (256 UTF-16 units) is within 1..128",
    )
    add(
        "invalid-tenant-129-emoji",
        record(tenantId="😀" * 129),
        "129 code points",
    )
    add(
        "valid-tenant-cjk",
        record(
            "tenant.policy",
            policy_payload(tenantId="租户-東京-테넌트"),
            tenantId="租户-東京-테넌트",
        ),
        "CJK tenant ids",
    )
    add(
        "valid-combining-marks",
        record(payload=cost_payload(provider="e\u0301\u0302\u0303-provider")),
        "combining marks count as code points of their own",
    )
    add(
        "valid-tenant-128-combining",
        record(tenantId="e" + "\u0301" * 127),
        "1 letter + 127 combining marks = 128 code points",
    )
    add(
        "invalid-tenant-129-combining",
        record(tenantId="e" + "\u0301" * 128),
        "129 code points though it renders as one character",
    )
    add(
        "valid-escaped-surrogate-pair",
        raw(
            record(payload=cost_payload(provider="PROVIDER"))
            .decode()
            .replace("PROVIDER", "\\ud83d\\ude00 \\u00e9")
        ),
        "an emoji written as an escaped surrogate pair",
    )
    add(
        "valid-rtl-and-zero-width",
        record(payload=cost_payload(provider="مزود\u200d\u200fx")),
        "right-to-left text and zero-width characters",
    )
    add(
        "valid-escaped-nul",
        raw(
            record(payload=cost_payload(provider="PROVIDER"))
            .decode()
            .replace("PROVIDER", "a\\u0000b")
        ),
        "\\u0000 is valid JSON (PostgreSQL refuses it later: db_rejected)",
    )
    # --- UUIDs -----------------------------------------------------------------------------------
    add("valid-uuid-upper-case", record(eventId=EVENT_ID.upper()), "upper-case hex")
    add(
        "invalid-uuid-no-hyphens",
        record(eventId=EVENT_ID.replace("-", "")),
        "32 hex digits without hyphens",
    )
    add("invalid-uuid-braces", record(eventId="{" + EVENT_ID + "}"), "braces")
    add("invalid-uuid-urn", record(eventId="urn:uuid:" + EVENT_ID), "urn: form")
    add("invalid-uuid-number", record(eventId=12345), "a number")
    add("invalid-uuid-missing", record(eventId=_DROP), "eventId missing")
    # --- reason codes, in the decoder's order ----------------------------------------------------
    big = record("routing.snapshot")
    add("too-large", big, "over a 128-byte limit", max_bytes=128)
    add("too-large-invalid-json", b"{" * 200, "size is checked before JSON", max_bytes=128)
    add("valid-at-size-limit", big, "exactly at the limit", max_bytes=len(big))
    add("invalid-json-empty", b"", "no bytes (a tombstone has no value at all; this is a value)")
    add("invalid-json-whitespace", b" \n\t ", "only whitespace")
    add("invalid-json-truncated", record()[:-5], "cut short")
    add("invalid-json-trailing-comma", raw(record().decode()[:-1] + ",}"), "a trailing comma")
    add("invalid-json-single-quotes", raw(record().decode().replace('"', "'")), "single quotes")
    add("invalid-json-extra-data", record() + b" {}", "a second document")
    add("invalid-json-comment", raw("/* c */" + record().decode()), "a comment")
    add(
        "invalid-json-leading-zero",
        with_payload_text("routing.cost", cost_text(inputTokens="01")),
        "01",
    )
    add(
        "invalid-json-plus-sign",
        with_payload_text("routing.cost", cost_text(inputTokens="+1")),
        "+1",
    )
    add(
        "invalid-json-bare-dot",
        with_payload_text("routing.cost", cost_text(totalCostUsd=".3")),
        ".3",
    )
    add(
        "invalid-json-dot-no-digits",
        with_payload_text("routing.cost", cost_text(totalCostUsd="3.")),
        "3.",
    )
    add(
        "invalid-json-hex", with_payload_text("routing.cost", cost_text(inputTokens="0x10")), "0x10"
    )
    add(
        "invalid-json-control-character",
        raw(record(payload=cost_payload(provider="PROVIDER")).decode().replace("PROVIDER", "a\tb")),
        "a raw tab inside a string",
    )
    add(
        "invalid-json-bad-escape",
        raw(
            record(payload=cost_payload(provider="PROVIDER")).decode().replace("PROVIDER", "a\\xb")
        ),
        "\\x is not a JSON escape",
    )
    add(
        "invalid-json-short-unicode-escape",
        raw(
            record(payload=cost_payload(provider="PROVIDER")).decode().replace("PROVIDER", "\\u12")
        ),
        "\\u with two hex digits",
    )
    add("invalid-json-bom", b"\xef\xbb\xbf" + record(), "a UTF-8 byte order mark is not whitespace")
    add(
        "invalid-json-nbsp-whitespace",
        raw("\u00a0" + record().decode()),
        "U+00A0 is not JSON whitespace",
    )
    add(
        "valid-json-whitespace",
        raw(
            " \r\n\t"
            + record().decode().replace(',"', ' ,\r\n\t"').replace('":', '"\t: ')
            + "\r\n "
        ),
        "spaces, tabs and CRLF between tokens",
    )
    add(
        "invalid-utf8-byte",
        record(payload=cost_payload(provider="X")).replace(b'"X"', b'"\xff"'),
        "0xFF is never UTF-8",
    )
    add(
        "invalid-utf8-overlong",
        record(payload=cost_payload(provider="X")).replace(b'"X"', b'"\xc0\xaf"'),
        "an overlong encoding of /",
    )
    add(
        "invalid-utf8-encoded-surrogate",
        record(payload=cost_payload(provider="X")).replace(b'"X"', b'"\xed\xa0\x80"'),
        "a surrogate encoded in UTF-8 (CESU)",
    )
    add(
        "invalid-utf8-truncated",
        record(payload=cost_payload(provider="X")).replace(b'"X"', b'"\xe2\x82"'),
        "a 3-byte sequence cut after 2",
    )
    add(
        "invalid-lone-high-surrogate",
        raw(record(tenantId="TENANT").decode().replace("TENANT", "\\ud800")),
        "tenantId escapes a lone high surrogate",
    )
    add(
        "invalid-lone-low-surrogate-unknown-field",
        raw(record(note="NOTE").decode().replace("NOTE", "\\udc00")),
        "a lone low surrogate, even in an unknown field",
    )
    add(
        "invalid-reversed-surrogate-pair",
        raw(record(note="NOTE").decode().replace("NOTE", "\\ude00\\ud83d")),
        "low then high: two lone surrogates",
    )
    add(
        "invalid-lone-surrogate-key",
        with_payload_text("routing.cost", cost_text(**{"\\ud800": "1"})),
        "a key escaping a lone surrogate",
    )
    add(
        "valid-lone-surrogate-overwritten",
        raw(
            record(note="NOTE").decode().replace('"note":"NOTE"', '"note":"\\ud800","note":"fine"')
        ),
        "a duplicate key's earlier value is gone: its lone surrogate does not count",
    )
    add(
        "valid-depth-64",
        with_payload_text("routing.cost", cost_text(note=nested(64))),
        "nested 64 levels deep",
    )
    add(
        "invalid-depth-65",
        with_payload_text("routing.cost", cost_text(note=nested(65))),
        "nested 65 levels: over the contract's limit of 64",
        contract=("rejected", "invalid_json"),
    )
    add(
        "invalid-depth-65-objects",
        with_payload_text("routing.cost", cost_text(note='{"a":' * 63 + "1" + "}" * 63)),
        "objects nested 65 levels",
        contract=("rejected", "invalid_json"),
    )
    add(
        "invalid-depth-65-top-level-array",
        raw("[" * 65 + "]" * 65),
        "nesting is checked before the top level's type",
        contract=("rejected", "invalid_json"),
    )
    add(
        "invalid-depth-5000",
        raw("[" * 5000 + "]" * 5000),
        "5,000 levels (beyond Python's recursion limit too)",
    )
    add("not-an-object-array", raw("[" + record().decode() + "]"), "an array")
    add("not-an-object-string", raw('"hello"'), "a string")
    add("not-an-object-number", raw("42"), "a number")
    add("not-an-object-null", raw("null"), "null")
    add("not-an-object-true", raw("true"), "true")
    add("unsupported-version-2", record(schemaVersion=2), "schemaVersion 2")
    add(
        "unsupported-version-huge",
        raw(record().decode().replace('"schemaVersion":1', '"schemaVersion":' + "9" * 30)),
        "a 30-digit version",
    )
    add(
        "unsupported-version-before-type",
        record(schemaVersion=2, type="routing.future", payload=[]),
        "an unknown version is reported before an unknown type or a bad payload",
    )
    add("invalid-version-zero", record(schemaVersion=0), "schemaVersion 0")
    add("invalid-version-negative", record(schemaVersion=-1), "schemaVersion -1")
    add("invalid-version-decimal", record(schemaVersion=Decimal("1.0")), "1.0 is not the integer 1")
    add(
        "invalid-version-decimal-two",
        record(schemaVersion=Decimal("2.0")),
        "2.0 is not an integer: not 'unsupported'",
    )
    add("invalid-version-string", record(schemaVersion="1"), '"1" is a string')
    add("invalid-version-boolean", record(schemaVersion=True), "true is not 1")
    add("invalid-version-missing", record(schemaVersion=_DROP), "schemaVersion missing")
    add("invalid-type-missing", record(type=_DROP), "type missing")
    add("invalid-type-number", record(type=5), "type is a number")
    add("unsupported-type", record(type="routing.unknown"), "an unknown type")
    add("unsupported-type-case", record(type="ROUTING.COST"), "types are case-sensitive")
    add("invalid-occurred-at-missing", record(occurredAt=_DROP), "occurredAt missing")
    add("invalid-tenant-empty", record(tenantId=""), "an empty tenantId")
    add("valid-tenant-128-ascii", record(tenantId="t" * 128), "128 characters")
    add("invalid-tenant-129-ascii", record(tenantId="t" * 129), "129 characters")
    add("invalid-tenant-number", record(tenantId=7), "a number")
    add("invalid-request-id-missing-cost", record(requestId=_DROP), "a cost needs requestId")
    add(
        "invalid-request-id-null-snapshot",
        record("routing.snapshot", requestId=None),
        "a snapshot needs requestId",
    )
    add("invalid-request-id-empty", record(requestId=""), "an empty requestId")
    add(
        "invalid-request-id-policy-number",
        record("tenant.policy", requestId=5),
        "a policy's requestId, if any, is a string",
    )
    add("invalid-payload-missing", record(payload=_DROP), "payload missing")
    add("invalid-payload-array", record(payload=[]), "payload is an array")
    add("invalid-payload-null", record(payload=None), "payload is null")
    # --- payload fields --------------------------------------------------------------------------
    add(
        "invalid-snapshot-count-zero",
        record("routing.snapshot", snapshot_payload(candidateCount=0, fallbacks=[])),
        "candidateCount 0",
    )
    add(
        "invalid-snapshot-fallback-no-model",
        record(
            "routing.snapshot",
            snapshot_payload(fallbacks=[{"provider": "x", "model": "m"}, {"provider": "y"}]),
        ),
        "fallbacks[1].model missing",
    )
    add(
        "invalid-snapshot-primary-empty-provider",
        record("routing.snapshot", snapshot_payload(primary={"provider": "", "model": "m"})),
        "an empty provider",
    )
    add(
        "invalid-snapshot-estimate-missing",
        record("routing.snapshot", snapshot_payload(costEstimate=_DROP)),
        "costEstimate missing",
    )
    add(
        "invalid-snapshot-estimate-number",
        record("routing.snapshot", snapshot_payload(costEstimate=Decimal("0.1"))),
        "costEstimate is a number, not an object",
    )
    add(
        "invalid-snapshot-estimate-negative",
        record(
            "routing.snapshot", snapshot_payload(costEstimate={"totalCostUsd": Decimal("-0.01")})
        ),
        "a negative estimate",
    )
    add(
        "invalid-snapshot-id-number",
        record("routing.snapshot", snapshot_payload(snapshotId=1)),
        "snapshotId is a number",
    )
    add(
        "invalid-cost-provider-empty",
        record(payload=cost_payload(provider="")),
        "an empty provider",
    )
    add(
        "invalid-cost-total-missing",
        record(payload=cost_payload(totalCostUsd=_DROP)),
        "totalCostUsd missing",
    )
    add(
        "invalid-policy-duplicate-allowed",
        record("tenant.policy", policy_payload(allowedProviders=["openai", "openai"])),
        "allowed twice: one field's own rule (schema_violation)",
    )
    add(
        "invalid-policy-allowed-number",
        record("tenant.policy", policy_payload(allowedProviders=["openai", 5])),
        "a number in the list",
    )
    add(
        "invalid-policy-preferred-missing",
        record("tenant.policy", policy_payload(preferredProvider=_DROP)),
        "preferredProvider must be present (null is fine)",
    )
    add(
        "invalid-policy-max-cost-missing",
        record("tenant.policy", policy_payload(maxCostPerRequestUsd=_DROP)),
        "maxCostPerRequestUsd must be present (null is fine)",
    )
    add(
        "invalid-policy-max-cost-zero",
        record("tenant.policy", policy_payload(maxCostPerRequestUsd=0)),
        "maxCostPerRequestUsd must be > 0",
    )
    add(
        "invalid-policy-max-cost-negative-zero",
        with_payload_text(
            "tenant.policy",
            dumps(policy_payload())
            .decode()
            .replace('"maxCostPerRequestUsd":0.50', '"maxCostPerRequestUsd":-0.0'),
        ),
        "-0.0 is not > 0",
    )
    # --- rules relating fields -------------------------------------------------------------------
    add(
        "rule-snapshot-too-many-fallbacks",
        record("routing.snapshot", snapshot_payload(candidateCount=2)),
        "1 + 2 fallbacks > candidateCount 2",
    )
    add(
        "rule-cost-total",
        record(payload=cost_payload(totalCostUsd=Decimal("0.31"))),
        "0.1 + 0.2 != 0.31",
    )
    add(
        "rule-policy-allowed-and-denied",
        record(
            "tenant.policy",
            policy_payload(deniedProviders=["openai"], preferredProvider="anthropic"),
        ),
        "openai both allowed and denied",
    )
    add(
        "rule-policy-preferred-denied",
        record("tenant.policy", policy_payload(allowedProviders=[], preferredProvider="mistral")),
        "the preferred provider is denied",
    )
    add(
        "rule-policy-preferred-not-allowed",
        record("tenant.policy", policy_payload(preferredProvider="cohere")),
        "the preferred provider is outside a non-empty allowed list",
    )
    add(
        "rule-snapshot-tenant-mismatch",
        record("routing.snapshot", snapshot_payload(tenantId="tenant-b")),
        "payload.tenantId differs from the envelope's",
    )
    add(
        "rule-policy-tenant-mismatch",
        record("tenant.policy", policy_payload(tenantId="tenant-b")),
        "payload.tenantId differs from the envelope's",
    )
    add(
        "schema-before-rule-cost",
        record(payload=cost_payload(totalCostUsd=Decimal("9"), outputTokens=-1)),
        "a field problem is reported before the broken total",
    )
    add(
        "schema-before-rule-snapshot",
        record("routing.snapshot", snapshot_payload(candidateCount=1, strategy=5)),
        "a field problem is reported before the candidate count",
    )
    add(
        "schema-before-tenant-rule",
        record("tenant.policy", policy_payload(tenantId="", allowedProviders=[])),
        "an empty payload tenantId is a field problem, not a mismatch",
    )
    # --- duplicate keys: the last value wins -----------------------------------------------------
    base = record().decode()
    add(
        "valid-duplicate-key-last-wins",
        raw(base.replace('"totalCostUsd":0.3', '"totalCostUsd":"bad","totalCostUsd":0.3')),
        "a bad first value, overwritten by a good one",
    )
    add(
        "invalid-duplicate-key-last-wins",
        raw(base.replace('"totalCostUsd":0.3', '"totalCostUsd":0.3,"totalCostUsd":"bad"')),
        "a good first value, overwritten by a bad one",
    )
    add(
        "valid-duplicate-type-last-wins",
        raw(
            base.replace('"type":"routing.cost"', '"type":"routing.snapshot","type":"routing.cost"')
        ),
        "the last type decides the payload's schema",
    )
    add(
        "invalid-duplicate-payload-last-wins",
        raw(base[:-1] + ',"payload":{"inputTokens":1}}'),
        "a second payload replaces the first",
    )
    return out


def _verdict(result: object) -> tuple[str, str | None]:
    if isinstance(result, Rejection):
        return "rejected", str(result.reason)
    return "valid", None


def _run(decode: Callable[..., object], case: Case) -> tuple[str, str | None] | str:
    try:
        return _verdict(decode(case.value, max_bytes=case.max_bytes or DEFAULT_MAX_BYTES))
    except Exception as exc:  # a decoder that raises is reported here, not fatal
        return f"raises {type(exc).__name__}"


def _event_type(case: Case, verdict: str, reason: str | None) -> str | None:
    """The type the decoder knew when it decided: None before it read a known ``type``."""
    if reason in _BEFORE_TYPE:
        return None
    try:
        document = loads(case.value)
    except (ValueError, RecursionError, ArithmeticError):
        return None
    event_type = document.get("type") if isinstance(document, dict) else None
    if verdict == "valid" or event_type in {t.value for t in EventType}:
        return str(event_type)
    return None


def build() -> tuple[dict[str, Any], list[str]]:
    """The manifest and the disagreements found (human-readable lines)."""
    entries: dict[str, Any] = {}
    notes: list[str] = []
    names: set[str] = set()
    for case in cases():
        if case.name in names:
            raise SystemExit(f"duplicate case name {case.name}")
        names.add(case.name)
        reference = _run(decode_event, case)
        fast = _run(fast_decode_event, case)
        expected = case.contract or reference
        if isinstance(expected, str):
            raise SystemExit(
                f"{case.name}: the reference {expected} and the case gives no contract verdict"
            )
        verdict, reason = expected
        entry: dict[str, Any] = {
            "verdict": verdict,
            "reason": reason,
            "type": _event_type(case, verdict, reason),
            "note": case.note,
        }
        if case.max_bytes is not None:
            entry["max_bytes"] = case.max_bytes
        disagreements = {}
        for decoder, got in (("reference", reference), ("fastdecode", fast)):
            if got != expected:
                shown = got if isinstance(got, str) else (got[1] or got[0])
                disagreements[decoder] = shown
                notes.append(f"{case.name}: contract {reason or verdict}, {decoder} {shown}")
        if disagreements:
            entry["disagreements"] = disagreements
        entries[case.name] = entry
    manifest = {
        "about": (
            "Conformance corpus of routing-persistence: records/<case>.bin is a Kafka record value "
            "(exact bytes); each case gives the verdict (valid/rejected), the reason code, the "
            "event type the decoder knew when it decided (null before it read a known type), "
            "max_bytes when not the default 1048576, and a note. Built by "
            "`python -m tests.conformance_build` from schemas.decode_event; 'disagreements' lists "
            "decoders that give another verdict than the contract's today."
        ),
        "cases": entries,
    }
    return manifest, notes


def main() -> int:
    manifest, notes = build()
    if RECORDS.exists():
        shutil.rmtree(RECORDS)
    RECORDS.mkdir(parents=True)
    for case in cases():
        (RECORDS / f"{case.name}.bin").write_bytes(case.value)
    MANIFEST.write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8"
    )
    print(f"wrote {len(manifest['cases'])} cases to {CORPUS.relative_to(ROOT)}")
    for line in notes:
        print(f"disagreement: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

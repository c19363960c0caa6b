"""Single-rule mutations of valid events: each breaks exactly one rule and names the reason code
the decoders must give. ``MUTATIONS[name] = (event types it applies to, reason, mutate)``, where
``mutate(draw, doc)`` returns the record bytes, or ``(bytes, max_bytes)``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas import PAYLOAD_MODELS, EventType, ReasonCode, dumps
from tests.strategies import (
    EXACT,
    identifiers,
    money,
    names,
    positive_money,
    provider_models,
    short_text,
)

S, C, P = EventType.SNAPSHOT, EventType.COST, EventType.POLICY
ALL = (S, C, P)
R = ReasonCode
Draw = Callable[[st.SearchStrategy[Any]], Any]

# mutate(draw, doc) -> the record bytes (or (bytes, max_bytes)) and the expected reason.
Mutation = Callable[[Draw, dict[str, Any]], "bytes | tuple[bytes, int]"]
MUTATIONS: dict[str, tuple[tuple[EventType, ...], ReasonCode, Mutation]] = {}


def mutation(
    name: str, types: tuple[EventType, ...], reason: ReasonCode
) -> Callable[[Mutation], Mutation]:
    def register(func: Mutation) -> Mutation:
        MUTATIONS[name] = (types, reason, func)
        return func

    return register


@mutation("truncated", ALL, R.INVALID_JSON)
def _truncated(draw: Draw, doc: dict[str, Any]) -> bytes:
    value = dumps(doc)
    return value[: draw(st.integers(0, len(value) - 1))]


@mutation("not-utf8", ALL, R.INVALID_JSON)
def _not_utf8(draw: Draw, doc: dict[str, Any]) -> bytes:
    value = dumps(doc)
    at: int = draw(st.integers(0, len(value)))
    bad: bytes = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
    return value[:at] + bad + value[at:]


@mutation("nan-number", (C,), R.INVALID_JSON)
def _nan(draw: Draw, doc: dict[str, Any]) -> bytes:
    field = draw(st.sampled_from(["inputCostUsd", "outputCostUsd", "totalCostUsd"]))
    doc["payload"][field] = "@@"
    constant = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
    return dumps(doc).replace(b'"@@"', constant)


@mutation("too-deep", ALL, R.INVALID_JSON)
def _too_deep(draw: Draw, doc: dict[str, Any]) -> bytes:
    # An unknown payload field nesting to level 65 (envelope 1, payload 2): one level too many.
    value: Any = draw(short_text)
    for _ in range(63):
        value = [value] if draw(st.booleans()) else {"k": value}
    doc["payload"]["xDeep"] = value
    return dumps(doc)


@mutation("not-an-object", ALL, R.NOT_AN_OBJECT)
def _not_object(draw: Draw, doc: dict[str, Any]) -> bytes:
    return dumps(draw(st.sampled_from([[doc], doc["payload"].get("fallbacks", []), 1, "x", None])))


@mutation("too-large", ALL, R.PAYLOAD_TOO_LARGE)
def _too_large(draw: Draw, doc: dict[str, Any]) -> tuple[bytes, int]:
    value = dumps(doc)
    return value, draw(st.integers(0, len(value) - 1))


@mutation("unknown-type", ALL, R.UNSUPPORTED_EVENT_TYPE)
def _unknown_type(draw: Draw, doc: dict[str, Any]) -> bytes:
    doc["type"] = draw(st.text(max_size=20).filter(lambda t: t not in {e.value for e in EventType}))
    return dumps(doc)


@mutation("newer-version", ALL, R.UNSUPPORTED_SCHEMA_VERSION)
def _newer_version(draw: Draw, doc: dict[str, Any]) -> bytes:
    doc["schemaVersion"] = draw(st.integers(2, 10**30))
    if draw(st.booleans()):
        doc["type"] = "routing.future"  # a newer version may bring types this one cannot know
    return dumps(doc)


_ENVELOPE_FIELDS = ["eventId", "type", "schemaVersion", "occurredAt", "tenantId", "payload"]
_REQUIRED = {
    kind: [
        *_ENVELOPE_FIELDS,
        *(["requestId"] if kind is not P else []),
        *(f"payload.{field}" for field in PAYLOAD_MODELS[kind].model_fields),
    ]
    for kind in ALL
}


def _parent(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, last = path.split(".")
    target = doc
    for part in parents:
        target = target[part]
    return target, last


@mutation("field-missing", ALL, R.SCHEMA_VIOLATION)
def _missing(draw: Draw, doc: dict[str, Any]) -> bytes:
    kind = EventType(doc["type"])
    parent, field = _parent(doc, draw(st.sampled_from(_REQUIRED[kind])))
    del parent[field]
    return dumps(doc)


not_a_string = st.none() | st.booleans() | st.integers() | money | st.lists(short_text, max_size=2)
not_an_integer: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(0, 100).map(str)
    | st.integers(1, 100).map(lambda i: Decimal(i).scaleb(-1) if i % 10 else Decimal(f"{i}.0"))
    | st.just({})
)
not_a_number: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | money.map(str) | st.just([]) | st.just({})
)

_WRONG_KINDS: dict[EventType, list[tuple[str, st.SearchStrategy[Any]]]] = {
    S: [
        ("eventId", not_a_string),
        ("occurredAt", not_a_string),
        ("tenantId", not_a_string),
        ("requestId", not_a_string.filter(lambda v: v is not None)),
        ("payload", not_a_string),
        ("payload.snapshotId", not_a_string),
        ("payload.strategy", not_a_string),
        ("payload.resolvedAlias", not_a_string),
        ("payload.candidateCount", not_an_integer),
        ("payload.timestamp", not_a_string),
        ("payload.costEstimate", not_a_string),
        ("payload.costEstimate.totalCostUsd", not_a_number),
        ("payload.tenantId", not_a_string),
        ("payload.primary", not_a_string),
        ("payload.primary.provider", not_a_string),
        # Not a list of routes: an empty list is one (not_a_string draws lists of strings).
        ("payload.fallbacks", not_a_string.filter(lambda v: v != []) | st.just({})),
    ],
    C: [
        ("payload.inputTokens", not_an_integer),
        ("payload.outputTokens", not_an_integer),
        ("payload.inputCostUsd", not_a_number),
        ("payload.outputCostUsd", not_a_number),
        ("payload.totalCostUsd", not_a_number),
        ("payload.provider", not_a_string),
        ("schemaVersion", st.none() | st.booleans() | st.just("1") | st.just(Decimal("1.0"))),
        ("type", st.none() | st.integers() | st.just(["routing.cost"])),
    ],
    P: [
        ("payload.tenantId", not_a_string),
        ("payload.allowedProviders", st.none() | st.integers() | st.just("a") | st.just(["a", 1])),
        ("payload.deniedProviders", st.just("x") | st.just([None])),
        ("payload.preferredProvider", st.booleans() | st.integers() | st.just([])),
        ("payload.maxCostPerRequestUsd", not_a_number.filter(lambda v: v is not None)),
        ("payload.defaultStrategy", not_a_string),
    ],
}


@mutation("wrong-kind", ALL, R.SCHEMA_VIOLATION)
def _wrong_kind(draw: Draw, doc: dict[str, Any]) -> bytes:
    path, values = draw(st.sampled_from(_WRONG_KINDS[EventType(doc["type"])]))
    parent, field = _parent(doc, path)
    parent[field] = draw(values)
    return dumps(doc)


@mutation("out-of-bounds", ALL, R.SCHEMA_VIOLATION)
def _out_of_bounds(draw: Draw, doc: dict[str, Any]) -> bytes:
    kind = EventType(doc["type"])
    too_long = st.text(min_size=129, max_size=140)
    choices: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("tenantId", st.just("") | too_long),
        ("eventId", st.sampled_from(["", "x", "{" + "0" * 32 + "}", "0" * 32])),
        (
            "occurredAt",
            st.sampled_from(["2026-01-01T00:00:00", "2026-01-01", "2026-13-01T00:00:00Z"]),
        ),
    ]
    if kind is S:
        choices += [
            ("payload.candidateCount", st.integers(-5, 0)),
            ("payload.costEstimate.totalCostUsd", positive_money.map(lambda d: -d)),
            ("payload.primary.model", st.just("")),
            ("payload.tenantId", st.just("") | too_long),
            ("payload.timestamp", st.just("2026-01-01T25:00:00Z")),
        ]
    elif kind is C:
        choices += [
            ("requestId", st.just("") | too_long),
            ("payload.inputTokens", st.integers(max_value=-1)),
            ("payload.outputTokens", st.integers(max_value=-1)),
            ("payload.provider", st.just("")),
        ]
    else:
        choices += [
            ("payload.maxCostPerRequestUsd", money.map(lambda d: -d) | st.just(0)),
            ("payload.tenantId", too_long),
        ]
    path, values = draw(st.sampled_from(choices))
    parent, field = _parent(doc, path)
    parent[field] = draw(values)
    return dumps(doc)


@mutation("duplicate-provider", (P,), R.SCHEMA_VIOLATION)
def _duplicate(draw: Draw, doc: dict[str, Any]) -> bytes:
    field = draw(st.sampled_from(["allowedProviders", "deniedProviders"]))
    items = doc["payload"][field]
    item = draw(st.sampled_from(items)) if items else "p"
    doc["payload"][field] = [*items, item] if items else ["p", "p"]
    if not items and field == "allowedProviders":
        doc["payload"]["preferredProvider"] = None
    return dumps(doc)


@mutation("cost-total", (C,), R.RULE_VIOLATION)
def _cost_total(draw: Draw, doc: dict[str, Any]) -> bytes:
    payload = doc["payload"]
    exact = EXACT.add(payload["inputCostUsd"], payload["outputCostUsd"])
    off = draw(st.decimals(min_value=Decimal("0.0000011"), max_value=10**6, places=7))
    payload["totalCostUsd"] = (
        EXACT.add(exact, off) if exact < off or draw(st.booleans()) else EXACT.subtract(exact, off)
    )
    return dumps(doc)


@mutation("too-many-fallbacks", (S,), R.RULE_VIOLATION)
def _fallbacks(draw: Draw, doc: dict[str, Any]) -> bytes:
    payload = doc["payload"]
    if not payload["fallbacks"]:
        payload["fallbacks"].append(draw(provider_models()))
    payload["candidateCount"] = draw(st.integers(1, len(payload["fallbacks"])))
    return dumps(doc)


@mutation("tenant-mismatch", (S, P), R.RULE_VIOLATION)
def _tenant(draw: Draw, doc: dict[str, Any]) -> bytes:
    doc["payload"]["tenantId"] = draw(identifiers.filter(lambda t: t != doc["tenantId"]))
    return dumps(doc)


def _fresh_name(draw: Draw, payload: dict[str, Any]) -> str:
    taken = {*payload["allowedProviders"], *payload["deniedProviders"]}
    name: str = draw(names.filter(lambda n: n not in taken))
    return name


@mutation("allowed-and-denied", (P,), R.RULE_VIOLATION)
def _both(draw: Draw, doc: dict[str, Any]) -> bytes:
    payload = doc["payload"]
    if payload["allowedProviders"]:
        name = draw(st.sampled_from(payload["allowedProviders"]))
    else:
        name = _fresh_name(draw, payload)
        payload["allowedProviders"].append(name)
        payload["preferredProvider"] = name
    payload["deniedProviders"].append(name)
    return dumps(doc)


@mutation("preferred-denied", (P,), R.RULE_VIOLATION)
def _preferred_denied(draw: Draw, doc: dict[str, Any]) -> bytes:
    payload = doc["payload"]
    if not payload["deniedProviders"]:
        payload["deniedProviders"].append(_fresh_name(draw, payload))
    payload["preferredProvider"] = draw(st.sampled_from(payload["deniedProviders"]))
    return dumps(doc)


@mutation("preferred-not-allowed", (P,), R.RULE_VIOLATION)
def _preferred_outside(draw: Draw, doc: dict[str, Any]) -> bytes:
    payload = doc["payload"]
    if not payload["allowedProviders"]:
        payload["allowedProviders"].append(_fresh_name(draw, payload))
    payload["preferredProvider"] = _fresh_name(draw, payload)
    return dumps(doc)

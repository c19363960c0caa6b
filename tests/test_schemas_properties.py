"""Properties of the contract over generated events (hypothesis).

* Every generated valid event decodes, and its payload model re-encodes to the same JSON: every
  field (unknown ones included, nested too) and every decimal digit for digit.
* Every mutation that breaks exactly one rule is rejected with that rule's reason code, and the
  pydantic :class:`~schemas.Envelope` model agrees with the fast decoder. Each decode reason code
  is covered by at least one mutation kind (checked below).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    DECODE_REASONS,
    PAYLOAD_MODELS,
    DecodedEvent,
    Envelope,
    EventType,
    ReasonCode,
    Rejection,
    decode_event,
    dumps,
    format_rfc3339,
    loads,
    parse_rfc3339,
)
from schemas.build import to_json_value
from schemas.models import _RFC3339, PAYLOAD_CHECKS, RULE_ERROR_TYPE, _from_groups

FAST = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
EXACT = Context(prec=100)

# --- generators of valid events ---------------------------------------------------------------

identifiers = st.text(min_size=1, max_size=128)
short_text = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
# Decimals as a producer would write them: 0.10, 5E+3, 1.23, 0E-7 ...
money = st.builds(
    lambda m, e: Decimal(m).scaleb(e, EXACT),
    st.integers(0, 10**15),
    st.integers(-12, 6),
)
positive_money = st.builds(
    lambda m, e: Decimal(m).scaleb(e, EXACT), st.integers(1, 10**15), st.integers(-12, 6)
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.builds(lambda d: -d, money)
    | money
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
# Unknown fields: an "x" prefix keeps them clear of every known field name.
extras = st.dictionaries(st.text(max_size=8).map(lambda k: "x" + k), json_values, max_size=3)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=offsets
)


def _rfc3339_variants(moment: datetime) -> st.SearchStrategy[str]:
    canonical = format_rfc3339(moment)
    zulu = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return st.sampled_from([canonical, zulu, zulu.lower(), canonical.replace(".", ".000", 0)])


timestamps = instants.flatmap(_rfc3339_variants)


@st.composite
def provider_models(draw: st.DrawFn) -> dict[str, Any]:
    return {"provider": draw(names), "model": draw(names), **draw(extras)}


@st.composite
def snapshot_payloads(draw: st.DrawFn, tenant: str) -> dict[str, Any]:
    fallbacks = draw(st.lists(provider_models(), max_size=3))
    return {
        "snapshotId": draw(short_text),
        "strategy": draw(short_text),
        "resolvedAlias": draw(short_text),
        "candidateCount": 1 + len(fallbacks) + draw(st.integers(0, 3)),
        "timestamp": draw(timestamps),
        "costEstimate": {"totalCostUsd": draw(money), **draw(extras)},
        "tenantId": tenant,
        "primary": draw(provider_models()),
        "fallbacks": fallbacks,
        **draw(extras),
    }


@st.composite
def cost_payloads(draw: st.DrawFn) -> dict[str, Any]:
    input_usd, output_usd = draw(money), draw(money)
    total = EXACT.add(input_usd, output_usd)
    slack = draw(st.sampled_from(["0", "0.000001", "-0.000001", "0.0000005", "-0.00000099"]))
    if EXACT.add(total, Decimal(slack)) >= 0:
        total = EXACT.add(total, Decimal(slack))
    return {
        "inputTokens": draw(st.integers(0, 10**9)),
        "outputTokens": draw(st.integers(0, 10**9)),
        "inputCostUsd": input_usd,
        "outputCostUsd": output_usd,
        "totalCostUsd": total,
        "provider": draw(names),
        **draw(extras),
    }


@st.composite
def policy_payloads(draw: st.DrawFn, tenant: str) -> dict[str, Any]:
    providers = draw(st.lists(names, unique=True, max_size=6))
    split = draw(st.integers(0, len(providers)))
    allowed, denied = providers[:split], providers[split:]
    if allowed:
        preferred = draw(st.none() | st.sampled_from(allowed))
    else:
        preferred = draw(st.none() | names.filter(lambda n: n not in denied))
    return {
        "tenantId": tenant,
        "allowedProviders": allowed,
        "deniedProviders": denied,
        "preferredProvider": preferred,
        "maxCostPerRequestUsd": draw(st.none() | positive_money),
        "defaultStrategy": draw(short_text),
        **draw(extras),
    }


@st.composite
def events(draw: st.DrawFn, event_type: EventType | None = None) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(EventType))) if event_type is None else event_type
    tenant = draw(identifiers)
    doc: dict[str, Any] = {
        "eventId": str(draw(st.uuids())),
        "type": kind.value,
        "schemaVersion": 1,
        "occurredAt": draw(timestamps),
        "tenantId": tenant,
    }
    if kind is not EventType.POLICY:
        doc["requestId"] = draw(identifiers)
    if kind is EventType.SNAPSHOT:
        doc["payload"] = draw(snapshot_payloads(tenant))
    elif kind is EventType.COST:
        doc["payload"] = draw(cost_payloads())
    else:
        doc["payload"] = draw(policy_payloads(tenant))
    return doc


def _assert_same_json(actual: Any, expected: Any, path: str) -> None:
    """Equal as JSON text, value by value: Decimal("0.10") is not Decimal("0.1") here."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_same_json(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same_json(a, e, f"{path}[{index}]")
    else:
        assert dumps(actual) == dumps(expected), path


@settings(FAST, max_examples=60)
@given(doc=events())
def test_valid_events_decode_and_re_encode_every_field_exactly(doc: dict[str, Any]) -> None:
    decoded = decode_event(dumps(doc))
    assert isinstance(decoded, DecodedEvent), decoded
    # Accepted by the fast check, not only by the model behind it.
    assert PAYLOAD_CHECKS[decoded.type](decoded.payload)
    assert str(decoded.event_id) == doc["eventId"]
    assert decoded.occurred_at == parse_rfc3339(doc["occurredAt"])
    assert (decoded.tenant_id, decoded.request_id) == (doc["tenantId"], doc.get("requestId"))
    _assert_same_json(decoded.payload, doc["payload"], "payload")

    model = PAYLOAD_MODELS[decoded.type].model_validate(decoded.payload)
    again = to_json_value(model.model_dump(mode="python"))
    expected = copy.deepcopy(doc["payload"])
    if decoded.type is EventType.SNAPSHOT:
        # A timestamp is re-encoded in one canonical RFC 3339 form: the same instant.
        assert parse_rfc3339(again.pop("timestamp")) == parse_rfc3339(expected.pop("timestamp"))
    _assert_same_json(again, expected, "payload")


@FAST
@given(doc=events())
def test_the_envelope_model_accepts_every_valid_event(doc: dict[str, Any]) -> None:
    model = Envelope.model_validate(doc)
    assert model.payload == doc["payload"]


@FAST
@given(
    moment=instants,
    fraction_digits=st.integers(0, 9),
    zulu=st.booleans(),
    lower=st.booleans(),
)
def test_rfc3339_fast_path_reads_what_the_field_by_field_parser_reads(
    moment: datetime, fraction_digits: int, zulu: bool, lower: bool
) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction_digits:
        text += "." + (f"{moment.microsecond:06d}" + "987")[:fraction_digits]
    if zulu:
        text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + text[19:] + "Z"
    else:
        offset = moment.strftime("%z")
        text += f"{offset[:3]}:{offset[3:]}"
    if lower:
        text = text.lower()
    match = _RFC3339.fullmatch(text)
    assert match is not None, text
    assert parse_rfc3339(text) == _from_groups(match)
    assert parse_rfc3339(text).utcoffset() == _from_groups(match).utcoffset()


# --- single-rule mutations -------------------------------------------------------------------

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
        ("payload.fallbacks", not_a_string | st.just({})),
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


def test_every_decode_reason_code_has_a_mutation() -> None:
    assert {reason for _, reason, _ in MUTATIONS.values()} == set(DECODE_REASONS)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@FAST
@given(data=st.data())
def test_a_single_broken_rule_is_rejected_with_its_reason(name: str, data: st.DataObject) -> None:
    types, reason, mutate = MUTATIONS[name]
    doc = data.draw(events(data.draw(st.sampled_from(types))))
    out = mutate(data.draw, doc)
    value, max_bytes = out if isinstance(out, tuple) else (out, 1_048_576)
    result = decode_event(value, max_bytes=max_bytes)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert len(result.message) <= 500
    if reason in (R.SCHEMA_VIOLATION, R.RULE_VIOLATION):
        # The pydantic Envelope model, the slow reference, says the same.
        with pytest.raises(ValidationError) as caught:
            Envelope.model_validate(loads(value))
        is_rule = [e["type"] for e in caught.value.errors()] == [RULE_ERROR_TYPE]
        assert is_rule == (reason is R.RULE_VIOLATION), caught.value

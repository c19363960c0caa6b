"""Hypothesis strategies of valid events (envelopes as dicts with Decimals), for the property
and differential tests. Every generated event is valid; unknown fields (an "x" prefix keeps them
clear of the known names) appear at every level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from hypothesis import strategies as st

from schemas import EventType, format_rfc3339

#: Exact arithmetic for generated amounts (sums of up to 21-digit decimals stay exact).
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
# Free text as the routing engine's payloads carry it: any script, emoji, quotes, line breaks.
free_text = st.text(max_size=40) | st.sampled_from(
    ["Résumé : réponse avant vendredi", "請總結這份合約", "要約してください 🙏", "한국어로 답변",
     'SQL for "monthly users"\nGROUP BY region', "Zoë\t😀🍂", "Сделай резюме"]
)  # fmt: skip


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """Nested unknown values up to 58 levels: wherever they sit (the deepest spot is level 4, in a
    fallback), a record stays within the contract's 64."""
    levels = draw(st.integers(1, 58))
    shape, key = draw(st.integers(0, 2**levels - 1)), draw(short_text)
    value: Any = draw(free_text)
    for level in range(levels):
        value = [value] if shape >> level & 1 else {key: value}
    return value


# Unknown fields: an "x" prefix keeps them clear of every known field name.
extras = st.dictionaries(
    st.text(max_size=8).map(lambda k: "x" + k),
    json_values | free_text | deep_values(),
    max_size=3,
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=offsets
)


def _rfc3339_variants(moment: datetime) -> st.SearchStrategy[str]:
    canonical = format_rfc3339(moment)
    zulu = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    millis = moment.isoformat(timespec="milliseconds")  # as JavaScript writes it, with an offset
    return st.sampled_from([canonical, zulu, zulu.lower(), millis, millis.replace("+00:00", "Z")])


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

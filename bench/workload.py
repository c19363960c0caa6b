"""The seeded workload: the same events, byte for byte, on every run with the same seed.

The mix follows the routing engine's traffic: for every request one ``routing.snapshot`` and one
``routing.cost`` event (about 45 % each of the stream), and ``tenant.policy`` updates (about 10 %)
over ``tenants`` existing tenants. On top of that base stream about 10 % of the records are
duplicates (the same bytes again, as an at-least-once producer re-sends them) and about 10 % are
late, older versions of a row (a new ``eventId`` with an ``occurredAt`` before one already sent),
which a correct consumer must not let overwrite the newer value.

Every request keeps one tenant, and policies go only to tenants that exist, so no event of the
workload is dead-lettered: the expected rows are simply the newest version per row and field
(:mod:`bench.oracle`). Events are built with the schemas' producer helper
(:func:`schemas.build_event`), i.e. exactly the envelope a real producer sends.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas import EventType, build_event

__all__ = [
    "BASE_TIME",
    "Event",
    "WorkloadMix",
    "generate",
    "make_event",
    "tenant_ids",
]

#: occurredAt of the first event: fixed, so that the same seed gives the same bytes.
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

_PROVIDERS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1"),
    "anthropic": ("claude-sonnet-4", "claude-haiku-3.5", "claude-opus-4"),
    "google": ("gemini-2.5-pro", "gemini-2.5-flash"),
    "mistral": ("mistral-large", "mistral-small", "codestral"),
    "cohere": ("command-r-plus", "command-r"),
    "groq": ("llama-3.3-70b", "mixtral-8x7b"),
    "together": ("llama-3.1-405b", "qwen-2.5-72b"),
    "fireworks": ("deepseek-v3", "llama-3.1-70b"),
    "bedrock": ("claude-sonnet-4", "titan-text", "llama-3.1-70b"),
    "azure": ("gpt-4o", "gpt-4.1-mini"),
}
_PROVIDER_NAMES = tuple(_PROVIDERS)
_STRATEGIES = ("cost", "latency", "quality", "balanced", "fallback-chain")
_ALIASES = ("smart", "fast", "cheap", "code", "long-context", "vision", "default")
_MICRO = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class Event:
    """One record of the workload: what goes on the wire plus what the oracle needs."""

    type: EventType
    key: bytes
    value: bytes
    event_id: uuid.UUID
    occurred_at: datetime
    tenant_id: str
    #: ``requestId`` for snapshot and cost events, ``tenantId`` for policies.
    row_key: str

    @property
    def version(self) -> tuple[datetime, uuid.UUID]:
        """The contract's version of the event: (occurredAt, eventId)."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class WorkloadMix:
    """Shares of the stream (the defaults are the issue's 45/45/10, 10 % dup, 10 % late)."""

    duplicates: float = 0.10
    late: float = 0.10
    policy_share_of_base: float = 0.10


def tenant_ids(count: int) -> list[str]:
    """The ids of the ``count`` tenants that exist before the run (inserted into ``"Tenant"``)."""
    return [f"tenant-{i:05d}" for i in range(count)]


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _usd(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_MICRO)


def _snapshot_payload(rng: random.Random, tenant: str, at: datetime) -> dict[str, Any]:
    chosen = rng.sample(_PROVIDER_NAMES, rng.randint(3, 5))
    models = [{"provider": p, "model": rng.choice(_PROVIDERS[p])} for p in chosen]
    fallbacks = models[1:]
    return {
        "snapshotId": str(_uuid(rng)),
        "strategy": rng.choice(_STRATEGIES),
        "resolvedAlias": rng.choice(_ALIASES),
        "candidateCount": 1 + len(fallbacks) + rng.randint(0, 3),
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "costEstimate": {"totalCostUsd": _usd(rng.uniform(0.00005, 0.25))},
        "tenantId": tenant,
        "primary": models[0],
        "fallbacks": fallbacks,
    }


def _cost_payload(rng: random.Random) -> dict[str, Any]:
    input_tokens = rng.randint(20, 12_000)
    output_tokens = rng.randint(1, 4_000)
    input_cost = (Decimal(input_tokens) * Decimal("0.0000025")).quantize(_MICRO)
    output_cost = (Decimal(output_tokens) * Decimal("0.00001")).quantize(_MICRO)
    return {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "inputCostUsd": input_cost,
        "outputCostUsd": output_cost,
        "totalCostUsd": input_cost + output_cost,
        "provider": rng.choice(_PROVIDER_NAMES),
    }


def _policy_payload(rng: random.Random, tenant: str) -> dict[str, Any]:
    allowed = rng.sample(_PROVIDER_NAMES, rng.choice((0, 2, 3, 4, 5)))
    rest = [p for p in _PROVIDER_NAMES if p not in allowed]
    denied = rng.sample(rest, rng.randint(0, 2)) if allowed else rng.sample(rest, rng.randint(0, 3))
    candidates = allowed or [p for p in _PROVIDER_NAMES if p not in denied]
    preferred = rng.choice(candidates) if rng.random() < 0.7 else None
    max_cost = _usd(rng.uniform(0.001, 2.0)) if rng.random() < 0.6 else None
    return {
        "tenantId": tenant,
        "allowedProviders": allowed,
        "deniedProviders": denied,
        "preferredProvider": preferred,
        "maxCostPerRequestUsd": max_cost,
        "defaultStrategy": rng.choice(_STRATEGIES),
    }


def make_event(
    rng: random.Random,
    kind: EventType,
    *,
    tenant: str,
    request_id: str | None,
    at: datetime,
    validate: bool = False,
) -> Event:
    """Build one event of ``kind`` with a fresh random payload (seeded by ``rng``).

    ``validate=False`` skips the producer helper's model validation for speed: the payloads above
    are valid by construction, and the consumer validates every one of them anyway (a workload
    event that it dead-letters shows up as a wrong row in the check).
    """
    if kind is EventType.SNAPSHOT:
        payload = _snapshot_payload(rng, tenant, at)
    elif kind is EventType.COST:
        payload = _cost_payload(rng)
    else:
        payload = _policy_payload(rng, tenant)
    event_id = _uuid(rng)
    out = build_event(
        kind,
        payload,
        tenant_id=tenant,
        request_id=request_id,
        event_id=event_id,
        occurred_at=at,
        validate=validate,
    )
    return Event(
        type=kind,
        key=out.key,
        value=out.value,
        event_id=event_id,
        occurred_at=at,
        tenant_id=tenant,
        row_key=request_id if request_id is not None else tenant,
    )


def generate(
    count: int,
    *,
    seed: int,
    tenants: list[str],
    mix: WorkloadMix | None = None,
    request_prefix: str = "req",
) -> Iterator[Event]:
    """Yield ``count`` events of the workload, deterministically for ``seed``.

    Streams (memory stays small for a million events). Duplicates are the very same
    :class:`Event` object yielded again; late events are new events whose ``occurredAt`` is up to
    5 s before an event of the same row already yielded.
    """
    mix = mix or WorkloadMix()
    rng = random.Random(seed)
    clock = BASE_TIME
    recent: deque[Event] = deque(maxlen=5_000)
    awaiting_cost: deque[tuple[str, str]] = deque()
    awaiting_snapshot: deque[tuple[str, str]] = deque()
    next_request = 0
    policy_share = mix.policy_share_of_base
    for _ in range(count):
        roll = rng.random()
        if roll < mix.duplicates and recent:
            yield rng.choice(recent)
            continue
        if roll < mix.duplicates + mix.late and recent:
            older = rng.choice(recent)
            at = older.occurred_at - timedelta(milliseconds=rng.randint(1, 5_000))
            request_id = None if older.type is EventType.POLICY else older.row_key
            late = make_event(rng, older.type, tenant=older.tenant_id, request_id=request_id, at=at)
            recent.append(late)
            yield late
            continue
        clock += timedelta(microseconds=rng.randint(200, 3_000))
        kind_roll = rng.random()
        if kind_roll < policy_share:
            tenant = rng.choice(tenants)
            event = make_event(rng, EventType.POLICY, tenant=tenant, request_id=None, at=clock)
        else:
            is_snapshot = kind_roll < policy_share + (1 - policy_share) / 2
            own, other = (
                (awaiting_snapshot, awaiting_cost)
                if is_snapshot
                else (awaiting_cost, awaiting_snapshot)
            )
            # Mostly the second half of a request already begun (snapshot then cost, sometimes
            # the cost first); otherwise a new request whose other half comes later.
            if own and rng.random() < 0.9:
                request_id, tenant = own.popleft()
            else:
                next_request += 1
                request_id = f"{request_prefix}-{next_request:09d}"
                tenant = rng.choice(tenants)
                other.append((request_id, tenant))
            kind = EventType.SNAPSHOT if is_snapshot else EventType.COST
            event = make_event(rng, kind, tenant=tenant, request_id=request_id, at=clock)
        recent.append(event)
        yield event

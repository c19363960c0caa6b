"""Realistic sample traffic: what ``routing-persistence demo`` (``make run``) publishes.

:func:`make_sample` builds from a seed what a routing engine sends (snapshots, costs, policies,
with several versions per row, duplicates, late versions and tombstones) plus at least one bad
record of every reason code a record can be sent with (:data:`SENDABLE_REASONS`: all but
``row_missing``, which takes ``ROUTING_MISSING_ROW_TTL`` to happen), each record labelled with
the outcome the consumer must give it. :func:`seed_database` creates the rows the sample refers
to (Projects A and C) except the late ones, which :func:`create_execution_records` creates after
the events (Project A creating its row after the routing engine published: the events are held
until then), and :func:`publish_sample` publishes it (``acks=all``), leaving out a record the
topic refuses as too large.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from consumer.kafka import client_options
from consumer.logs import get_logger
from consumer.settings import Settings
from schemas import EventType, ReasonCode, build_event, dumps, format_rfc3339

__all__ = [
    "SENDABLE_REASONS",
    "Sample",
    "SampleRecord",
    "create_execution_records",
    "make_sample",
    "publish_sample",
    "seed_database",
    "topic_of",
]

_log = get_logger(__name__)

_MODELS = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-haiku-3.5"),
    ("google", "gemini-2.0-flash"),
    ("mistral", "mistral-large"),
    ("meta", "llama-3.1-70b"),
)
_PROVIDERS = sorted({provider for provider, _ in _MODELS})
_STRATEGIES = ("cost", "latency", "quality", "balanced")
_ALIASES = ("chat-default", "chat-fast", "reasoning", "summarize", "embed-rerank")
#: USD per 1000 tokens (input, output), by provider: enough to look like real bills.
_PRICES = {
    "openai": (Decimal("0.0025"), Decimal("0.01")),
    "anthropic": (Decimal("0.003"), Decimal("0.015")),
    "google": (Decimal("0.0001"), Decimal("0.0004")),
    "mistral": (Decimal("0.002"), Decimal("0.006")),
    "meta": (Decimal("0.00088"), Decimal("0.00088")),
}
_MICRO = Decimal("0.000001")
_UNKNOWN_TENANT = "tenant-unregistered"

#: The reason codes a sample's bad records are sent with: every one but ``row_missing``.
SENDABLE_REASONS: tuple[ReasonCode, ...] = tuple(
    code for code in ReasonCode if code is not ReasonCode.ROW_MISSING
)


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One record to publish to the topic of ``kind`` (see :func:`topic_of`).

    ``reason`` is the dead-letter reason code the consumer must give it; ``None`` for a valid
    event (applied or stale) and for a tombstone (``value is None``: ignored).
    """

    kind: EventType
    key: bytes | None
    value: bytes | None
    reason: ReasonCode | None = None


@dataclass
class Sample:
    """Records in publishing order, and the rows the database must hold before they arrive."""

    records: list[SampleRecord] = field(default_factory=list)
    #: ``"Tenant"."id"`` values to create first (Project C's tenants).
    tenants: list[str] = field(default_factory=list)
    #: ``("requestId", "tenantId")`` of ``"ExecutionRecord"`` rows Project A created already.
    execution_records: list[tuple[str, str]] = field(default_factory=list)
    #: The rows Project A creates only after the events were published (held until then).
    late_execution_records: list[tuple[str, str]] = field(default_factory=list)


def topic_of(settings: Settings, kind: EventType) -> str:
    """The configured source topic of an event type."""
    return {
        EventType.SNAPSHOT: settings.topic_snapshots,
        EventType.COST: settings.topic_costs,
        EventType.POLICY: settings.topic_policies,
    }[kind]


class _Maker:
    def __init__(self, rng: random.Random, max_payload_bytes: int) -> None:
        self.rng = rng
        self.max_payload_bytes = max_payload_bytes

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def money(self, low: float, high: float) -> Decimal:
        return Decimal(str(round(self.rng.uniform(low, high), 6))).quantize(_MICRO)

    def snapshot(self, tenant: str, at: datetime) -> dict[str, Any]:
        rng = self.rng
        chosen = rng.sample(_MODELS, k=rng.randint(1, 4))
        primary, fallbacks = chosen[0], chosen[1:]
        return {
            "snapshotId": f"snap-{self.uuid().hex[:16]}",
            "strategy": rng.choice(_STRATEGIES),
            "resolvedAlias": rng.choice(_ALIASES),
            "candidateCount": len(chosen) + rng.randint(0, 2),
            "timestamp": format_rfc3339(at),
            "costEstimate": {"totalCostUsd": self.money(0.0001, 0.08)},
            "tenantId": tenant,
            "primary": {"provider": primary[0], "model": primary[1]},
            "fallbacks": [{"provider": p, "model": m} for p, m in fallbacks],
        }

    def cost(self) -> dict[str, Any]:
        rng = self.rng
        provider = rng.choice(_PROVIDERS)
        price_in, price_out = _PRICES[provider]
        tokens_in, tokens_out = rng.randint(12, 8000), rng.randint(1, 2000)
        cost_in = (tokens_in * price_in / 1000).quantize(_MICRO)
        cost_out = (tokens_out * price_out / 1000).quantize(_MICRO)
        return {
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
            "inputCostUsd": cost_in,
            "outputCostUsd": cost_out,
            "totalCostUsd": cost_in + cost_out,
            "provider": provider,
        }

    def policy(self, tenant: str) -> dict[str, Any]:
        rng = self.rng
        allowed = rng.sample(_PROVIDERS, k=rng.choice((0, 2, 3, 4)))
        rest = [p for p in _PROVIDERS if p not in allowed]
        denied = rng.sample(rest, k=min(len(rest), rng.randint(0, 2)))
        candidates = allowed or [p for p in _PROVIDERS if p not in denied]
        return {
            "tenantId": tenant,
            "allowedProviders": allowed,
            "deniedProviders": denied,
            "preferredProvider": rng.choice([*candidates, None]),
            "maxCostPerRequestUsd": rng.choice([None, self.money(0.01, 0.5)]),
            "defaultStrategy": rng.choice(_STRATEGIES),
        }

    def envelope(
        self,
        kind: EventType,
        payload: dict[str, Any],
        tenant: str,
        request_id: str | None,
        at: datetime,
    ) -> dict[str, Any]:
        """A raw envelope (for the bad records, which the builder refuses to make)."""
        env: dict[str, Any] = {
            "eventId": str(self.uuid()),
            "type": str(kind),
            "schemaVersion": 1,
            "occurredAt": format_rfc3339(at),
            "tenantId": tenant,
            "payload": payload,
        }
        if request_id is not None:
            env["requestId"] = request_id
        return env


def make_sample(
    events: int,
    *,
    seed: int = 7,
    tenants: int = 50,
    now: datetime | None = None,
    max_payload_bytes: int = 1_048_576,
    duplicate_ratio: float = 0.08,
    reorder_ratio: float = 0.10,
    bad_ratio: float = 0.02,
    late_share: float = 0.0,
) -> Sample:
    """About ``events`` records (at least one bad record per reason code; same seed, same records).

    Every request's ``"ExecutionRecord"`` row is Project A's: ``late_share`` of them are created
    after the events (:attr:`Sample.late_execution_records`), the rest before.

    Event times lie in the minutes before ``now`` (default: the current time), one row gets
    several versions, ``reorder_ratio`` of the records are sent late (after newer versions),
    ``duplicate_ratio`` of them are sent twice. ``max_payload_bytes`` sizes the
    ``payload_too_large`` record just above the consumer's limit.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not secrets
    make = _Maker(rng, max_payload_bytes)
    now = datetime.now(UTC) if now is None else now
    tenant_ids = [f"tenant-{i:03d}" for i in range(1, tenants + 1)]
    n_bad = max(len(SENDABLE_REASONS), round(events * bad_ratio))
    n_tombstones = max(1, events // 500)
    n_valid = max(3, round((events - n_bad - n_tombstones) / (1 + duplicate_ratio)))
    n_requests = max(1, round(n_valid * 0.85 / 2.4))
    requests = [(f"req-{make.uuid().hex[:20]}", rng.choice(tenant_ids)) for _ in range(n_requests)]
    span = timedelta(seconds=max(60.0, n_valid * 0.05))
    start = now - span - timedelta(seconds=5)

    timed: list[tuple[datetime, SampleRecord]] = []
    for i in range(n_valid):
        at = start + span * (i / n_valid) + timedelta(microseconds=rng.randint(0, 999_999))
        roll = rng.random()
        if roll < 0.15:
            tenant = rng.choice(tenant_ids)
            kind, payload, request_id = EventType.POLICY, make.policy(tenant), None
        else:
            request_id, tenant = rng.choice(requests)
            if roll < 0.58:
                kind, payload = EventType.SNAPSHOT, make.snapshot(tenant, at)
            else:
                kind, payload = EventType.COST, make.cost()
        out = build_event(
            kind,
            payload,
            tenant_id=tenant,
            request_id=request_id,
            event_id=make.uuid(),
            occurred_at=at,
        )
        timed.append((at, SampleRecord(kind, out.key, out.value)))

    # Late arrivals: a record sent some way after newer versions went out.
    order = [record for _, record in timed]
    for _ in range(round(len(order) * reorder_ratio)):
        i = rng.randrange(len(order))
        j = min(len(order) - 1, i + rng.randint(5, 200))
        order.insert(j, order.pop(i))
    # Duplicates: the same bytes again, later (a producer retry, a replayed batch).
    for _ in range(round(n_valid * duplicate_ratio)):
        i = rng.randrange(len(order))
        order.insert(rng.randint(i, len(order)), order[i])

    sample = Sample(tenants=tenant_ids)
    n_late = min(len(requests) - 1, round(len(requests) * late_share))
    premade = requests[: len(requests) - n_late]
    sample.execution_records = list(premade)
    sample.late_execution_records = list(requests[len(premade) :])
    bad = list(_bad_records(make, n_bad, premade, tenant_ids, now))
    bad.extend(_tombstones(make, n_tombstones, requests))
    for record in bad:
        order.insert(rng.randint(0, len(order)), record)
    sample.records = order
    return sample


def _bad_records(
    make: _Maker,
    count: int,
    premade: Sequence[tuple[str, str]],
    tenants: Sequence[str],
    now: datetime,
) -> Iterable[SampleRecord]:
    rng = make.rng
    codes = SENDABLE_REASONS
    for i in range(count):
        code = codes[i % len(codes)]
        at = now - timedelta(seconds=rng.uniform(1, 30))
        request_id = f"req-{make.uuid().hex[:20]}"
        tenant = rng.choice(tenants)
        snapshot = make.envelope(
            EventType.SNAPSHOT, make.snapshot(tenant, at), tenant, request_id, at
        )
        kind = EventType.SNAPSHOT
        key: bytes | None = request_id.encode()
        value: bytes
        if code is ReasonCode.INVALID_JSON:
            value = dumps(snapshot)[: rng.randint(10, 60)]
        elif code is ReasonCode.NOT_AN_OBJECT:
            value = dumps([snapshot])
        elif code is ReasonCode.SCHEMA_VIOLATION:
            del snapshot["eventId"]
            value = dumps(snapshot)
        elif code is ReasonCode.RULE_VIOLATION:
            kind = EventType.COST
            cost = make.cost()
            cost["totalCostUsd"] += Decimal("0.01")
            value = dumps(make.envelope(kind, cost, tenant, request_id, at))
        elif code is ReasonCode.UNSUPPORTED_EVENT_TYPE:
            snapshot["type"] = "routing.feedback"
            value = dumps(snapshot)
        elif code is ReasonCode.UNSUPPORTED_SCHEMA_VERSION:
            snapshot["schemaVersion"] = 2
            value = dumps(snapshot)
        elif code is ReasonCode.PAYLOAD_TOO_LARGE:
            snapshot["payload"]["debugTrace"] = "x" * (make.max_payload_bytes + 1024)
            value = dumps(snapshot)
        elif code is ReasonCode.UNKNOWN_TENANT:
            kind = EventType.POLICY
            key = _UNKNOWN_TENANT.encode()
            value = dumps(
                make.envelope(kind, make.policy(_UNKNOWN_TENANT), _UNKNOWN_TENANT, None, at)
            )
        elif code is ReasonCode.TENANT_MISMATCH:
            kind = EventType.COST
            target, owner = rng.choice(premade)
            other = next(t for t in tenants if t != owner) if len(tenants) > 1 else owner + "-x"
            key = target.encode()
            value = dumps(make.envelope(kind, make.cost(), other, target, at))
        else:  # DB_REJECTED: valid JSON PostgreSQL's jsonb refuses (the NUL character)
            # For a row that exists (else it is held until the row does), and newer than any
            # valid version (an older one is stale before its JSON is ever parsed).
            target, owner = rng.choice(premade)
            snapshot = make.envelope(
                EventType.SNAPSHOT, make.snapshot(owner, now), owner, target, now
            )
            snapshot["payload"]["resolvedAlias"] = "chat\u0000default"
            key = target.encode()
            value = dumps(snapshot)
        yield SampleRecord(kind, key, value, code)


def _tombstones(
    make: _Maker, count: int, requests: Sequence[tuple[str, str]]
) -> Iterable[SampleRecord]:
    for _ in range(count):
        request_id, _tenant = make.rng.choice(requests)
        yield SampleRecord(EventType.SNAPSHOT, request_id.encode(), None)


async def seed_database(settings: Settings, sample: Sample) -> None:
    """Create the sample's ``"Tenant"`` and pre-existing ``"ExecutionRecord"`` rows (idempotent).

    These stand in for Projects C and A, which own those tables in production.
    """
    conn = await asyncpg.connect(settings.plain_database_url)
    try:
        await conn.executemany(
            'INSERT INTO "Tenant" ("id", "name") VALUES ($1, $2) ON CONFLICT ("id") DO NOTHING',
            [(t, f"Tenant {t.removeprefix('tenant-')}") for t in sample.tenants],
        )
    finally:
        await conn.close()
    await create_execution_records(settings, sample.execution_records)


async def create_execution_records(settings: Settings, rows: Sequence[tuple[str, str]]) -> None:
    """Create ``"ExecutionRecord"`` rows ``(requestId, tenantId)`` as Project A (idempotent)."""
    conn = await asyncpg.connect(settings.plain_database_url)
    try:
        await conn.executemany(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2) '
            'ON CONFLICT ("requestId") DO NOTHING',
            rows,
        )
    finally:
        await conn.close()


async def publish_sample(
    settings: Settings,
    records: Sequence[SampleRecord],
    *,
    rate: float = 0.0,
    partition: int | None = None,
) -> list[SampleRecord]:
    """Publish ``records`` in order (``acks=all``), at about ``rate`` records/s (0: at once).

    ``partition`` forces every record into that partition (else the key decides, as in
    production). Returns the records published: one the broker refuses as too large for the
    topic (``max.message.bytes``) is left out with a warning; any other refusal is raised.
    """
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=max(1_048_576, 2 * settings.max_payload_bytes + 65_536),
    )
    await producer.start()
    sent: list[tuple[SampleRecord, asyncio.Future[Any]]] = []
    try:
        started = time.monotonic()
        for i, record in enumerate(records):
            future = await producer.send(
                topic_of(settings, record.kind), record.value, key=record.key, partition=partition
            )
            sent.append((record, future))
            if rate > 0:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    finally:
        await producer.stop()
    published = []
    for (record, _), outcome in zip(sent, results, strict=True):
        if isinstance(outcome, MessageSizeTooLargeError):
            _log.warning("demo.record_too_large", reason=record.reason, detail=str(outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            published.append(record)
    return published

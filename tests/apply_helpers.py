"""Helpers for the apply / pipeline / dead-letter tests: valid payloads, events, Kafka records,
and reading what landed in PostgreSQL and on the dead-letter topic, independently of the code
under test."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import create_engine
from consumer.pipeline.apply import ApplyOutcome, PendingEvent, apply_events
from consumer.pipeline.decode import ConsumerEvent
from consumer.pipeline.decode import decode_event as fast_decode_event
from consumer.settings import MissingRowPolicy, Settings
from schemas import DecodedEvent, EventType, OutgoingEvent, Rejection, build_event, decode_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """An event time ``seconds`` after a fixed origin (deterministic versions)."""
    return T0 + timedelta(seconds=seconds)


def snapshot_payload(tenant: str, **extra: Any) -> dict[str, Any]:
    """A valid RoutingPlanSnapshot for ``tenant``; ``extra`` adds or overrides fields."""
    payload: dict[str, Any] = {
        "snapshotId": f"snap-{uuid.uuid4().hex[:8]}",
        "strategy": "cost",
        "resolvedAlias": "fast",
        "candidateCount": 2,
        "timestamp": "2026-01-01T12:00:00Z",
        "costEstimate": {"totalCostUsd": Decimal("0.0012")},
        "tenantId": tenant,
        "primary": {"provider": "openai", "model": "gpt-4o"},
        "fallbacks": [{"provider": "anthropic", "model": "claude"}],
    }
    payload.update(extra)
    return payload


def cost_payload(input_usd: str = "0.1", output_usd: str = "0.2", **extra: Any) -> dict[str, Any]:
    """A valid ActualCost whose total is exactly ``input + output``."""
    payload: dict[str, Any] = {
        "inputTokens": 100,
        "outputTokens": 50,
        "inputCostUsd": Decimal(input_usd),
        "outputCostUsd": Decimal(output_usd),
        "totalCostUsd": Decimal(input_usd) + Decimal(output_usd),
        "provider": "openai",
    }
    payload.update(extra)
    return payload


def policy_payload(tenant: str, **extra: Any) -> dict[str, Any]:
    """A valid TenantRoutingPolicy for ``tenant``."""
    payload: dict[str, Any] = {
        "tenantId": tenant,
        "allowedProviders": ["openai", "anthropic"],
        "deniedProviders": [],
        "preferredProvider": "openai",
        "maxCostPerRequestUsd": Decimal("0.5"),
        "defaultStrategy": "cost",
    }
    payload.update(extra)
    return payload


def snapshot(
    request: str, tenant: str, when: datetime, *, event_id: uuid.UUID | None = None, **extra: Any
) -> OutgoingEvent:
    """A valid snapshot event; ``extra`` goes into the payload."""
    return build_event(
        EventType.SNAPSHOT,
        snapshot_payload(tenant, **extra),
        tenant_id=tenant,
        request_id=request,
        occurred_at=when,
        event_id=event_id,
    )


def cost(
    request: str, tenant: str, when: datetime, *, event_id: uuid.UUID | None = None, **extra: Any
) -> OutgoingEvent:
    """A valid cost event; ``extra`` goes into the payload (``input_usd``/``output_usd`` too)."""
    return build_event(
        EventType.COST,
        cost_payload(**extra),
        tenant_id=tenant,
        request_id=request,
        occurred_at=when,
        event_id=event_id,
    )


def policy(
    tenant: str, when: datetime, *, event_id: uuid.UUID | None = None, **extra: Any
) -> OutgoingEvent:
    """A valid policy event for ``tenant``; ``extra`` goes into the payload."""
    return build_event(
        EventType.POLICY,
        policy_payload(tenant, **extra),
        tenant_id=tenant,
        occurred_at=when,
        event_id=event_id,
    )


def with_raw_payload(event: OutgoingEvent, marker: str, raw_json: str) -> OutgoingEvent:
    """``event`` with the JSON string ``"<marker>"`` in its bytes replaced by ``raw_json``.

    For bytes :func:`build_event` cannot write: ``\\u0000`` escapes, exponent notation.
    """
    value = event.value.replace(f'"{marker}"'.encode(), raw_json.encode(), 1)
    assert value != event.value, f"{marker!r} not in the event"
    return OutgoingEvent(event.type, event.key, value, event.event_id, event.occurred_at)


def decoded(event: OutgoingEvent) -> DecodedEvent:
    result = decode_event(event.value)
    assert not isinstance(result, Rejection), result
    return result


_OFFSETS = itertools.count()


def source_record(
    event: OutgoingEvent,
    *,
    topic: str = "test.source",
    partition: int = 0,
    offset: int | None = None,
) -> ConsumerRecord[bytes, bytes]:
    """A Kafka record as the consumer would have read ``event`` (what holding it keeps)."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=next(_OFFSETS) if offset is None else offset,
        timestamp=int(event.occurred_at.timestamp() * 1000),
        timestamp_type=0,
        key=event.key,
        value=event.value,
        checksum=None,
        serialized_key_size=len(event.key or b""),
        serialized_value_size=len(event.value),
        headers=[("trace", b"\x00\xff"), ("origin", b"tests")],
    )


def pending(event: OutgoingEvent) -> PendingEvent:
    """What the pipeline hands to ``apply_events`` for this record (its decoder's result), with
    a source record (:func:`source_record`) so that it can be held."""
    result = fast_decode_event(event.value)
    assert isinstance(result, ConsumerEvent), result
    return PendingEvent.of(result, event.value, source_record(event))


class RetryRecorder:
    """A :class:`consumer.retry.RetryObserver` that keeps every retry it is told of."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.waits: list[float] = []

    def on_retry(self, error: Exception, wait_s: float) -> None:
        self.errors.append(error)
        self.waits.append(wait_s)


def engine_for(url: str) -> AsyncEngine:
    return create_engine(Settings(database_url=url))


async def apply_in_transaction(
    engine: AsyncEngine,
    events: Sequence[OutgoingEvent],
    *,
    policy: MissingRowPolicy = MissingRowPolicy.CREATE,
) -> ApplyOutcome:
    """One batch through ``apply_events`` (its own committed transaction).

    ``create`` by default: the apply tests that create rows as they go were written for it and
    pin it (``ROUTING_MISSING_ROW_POLICY=create``); tests/test_held.py pins ``park``.
    """
    return await apply_events(engine, [pending(e) for e in events], policy=policy)


# --- Kafka ----------------------------------------------------------------------------------


async def produce(
    bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Produce ``(topic, key, value)`` records (in order per topic) and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=0)
            for topic, key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def fetch(
    bootstrap: str, topics: Sequence[str], count: int, *, timeout_s: float = 20.0
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """Read ``count`` records from the start of ``topics`` (no group), as getmany() gives them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    partitions = [
        TopicPartition(topic, p) for topic in topics for p in await partitions_of(bootstrap, topic)
    ]
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        got = 0
        deadline = asyncio.get_running_loop().time() + timeout_s
        while got < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {got} of {count} records arrived from {topics}")
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                out.setdefault(tp, []).extend(records)
                got += len(records)
        return out
    finally:
        await consumer.stop()


async def create_topic_with(bootstrap: str, name: str, configs: Mapping[str, str]) -> None:
    """Create ``name`` (1 partition, replication 1) with topic ``configs`` and wait for it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=dict(configs))])
        for _ in range(100):
            [described] = await admin.describe_topics([name])
            if described["error_code"] == 0 and described["partitions"]:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topic {name} not ready")
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        assert described["error_code"] == 0, described
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` (sum of its partitions' end offsets: fresh topics, no compaction)."""
    parts = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic``."""
    size = await topic_size(bootstrap, topic)
    if size == 0:
        return []
    batches = await fetch(bootstrap, [topic], size)
    return [r for rs in batches.values() for r in rs]


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def by_offset(
    batch: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
) -> dict[tuple[str, int, int], ConsumerRecord[bytes, bytes]]:
    return {(r.topic, r.partition, r.offset): r for rs in batch.values() for r in rs}

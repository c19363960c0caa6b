"""EventPublisher against the real broker: what is published is read back, byte for byte, on the
topic of its type, keyed by request or tenant, in order per key."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from consumer.producer import EventPublisher, PublishError
from consumer.settings import Settings
from schemas import DecodedEvent, EventType, OutgoingEvent, build_event, decode_event
from tests.conftest import Services, Topics, unique
from tests.schemas_helpers import cost_payload, policy_payload, snapshot_payload

pytestmark = pytest.mark.integration


def _settings(services: Services, topics: Topics) -> Settings:
    return Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        topic_snapshots=topics.snapshots,
        topic_costs=topics.costs,
        topic_policies=topics.policies,
        topic_dlq=topics.dlq,
        metrics_port=0,
    )


async def _read_back(
    services: Services, topic_names: list[str], count: int
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=unique("readback"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        # Nothing beyond what was published.
        extra = await consumer.getmany(timeout_ms=500)
        records.extend(r for batch in extra.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def _events(tenant: str, requests: int) -> list[OutgoingEvent]:
    out = [build_event(EventType.POLICY, policy_payload(tenant), tenant_id=tenant)]
    for n in range(requests):
        request = f"req-{n}"
        out.append(
            build_event(
                EventType.SNAPSHOT, snapshot_payload(tenant), tenant_id=tenant, request_id=request
            )
        )
        out.append(
            build_event(EventType.COST, cost_payload(), tenant_id=tenant, request_id=request)
        )
    return out


async def test_publish_sends_each_type_to_its_topic_with_its_key(
    services: Services, topics: Topics
) -> None:
    events = _events("tenant-p", 1)
    async with EventPublisher(_settings(services, topics)) as publisher:
        for event in events:
            await publisher.publish(event)

    records = await _read_back(services, list(topics.sources), len(events))
    by_value = {r.value: r for r in records}
    assert len(records) == len(events)
    expected_topic = {
        EventType.SNAPSHOT: topics.snapshots,
        EventType.COST: topics.costs,
        EventType.POLICY: topics.policies,
    }
    for event in events:
        record = by_value[event.value]  # the exact bytes built
        assert record.topic == expected_topic[event.type]
        assert record.key == event.key
        decoded = decode_event(record.value)
        assert isinstance(decoded, DecodedEvent)
        assert decoded.event_id == event.event_id
    cost = next(r for r in records if r.topic == topics.costs)
    decoded_cost = decode_event(cost.value)
    assert isinstance(decoded_cost, DecodedEvent)
    assert decoded_cost.payload["totalCostUsd"] == Decimal("0.3")
    assert cost.key == b"req-0"
    policy = next(r for r in records if r.topic == topics.policies)
    assert policy.key == b"tenant-p"


async def test_publish_many_acknowledges_all_and_keeps_order_per_key(
    services: Services, topics: Topics
) -> None:
    events = _events("tenant-m", 150)
    # A second round for the same keys: per key, the later must come after the earlier.
    events += [
        build_event(EventType.COST, cost_payload(), tenant_id="tenant-m", request_id=f"req-{n}")
        for n in range(150)
    ]
    async with EventPublisher(_settings(services, topics)) as publisher:
        assert await publisher.publish_many(events) == len(events)
        assert await publisher.publish_many([]) == 0

    records = await _read_back(services, list(topics.sources), len(events))
    assert sorted(r.value for r in records) == sorted(e.value for e in events)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    order: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        partitions[record.key].add(record.partition)
        order[(record.topic, record.key)].append(record.value)
    assert all(len(p) == 1 for p in partitions.values())
    sent_order: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    topic_of = {
        EventType.SNAPSHOT: topics.snapshots,
        EventType.COST: topics.costs,
        EventType.POLICY: topics.policies,
    }
    for event in events:
        sent_order[(topic_of[event.type], event.key)].append(event.value)
    assert order == sent_order


async def test_a_record_too_large_to_send_raises_after_the_rest_is_acknowledged(
    services: Services, topics: Topics
) -> None:
    small = build_event(EventType.COST, cost_payload(), tenant_id="t", request_id="r-small")
    big_payload = cost_payload()
    big_payload["padding"] = "x" * 300_000
    big = build_event(EventType.COST, big_payload, tenant_id="t", request_id="r-big")
    async with EventPublisher(_settings(services, topics), max_request_size=200_000) as publisher:
        with pytest.raises(MessageSizeTooLargeError):
            await publisher.publish_many([small, big])
    records = await _read_back(services, [topics.costs], 1)
    assert [r.value for r in records] == [small.value]


async def test_records_the_broker_refuses_are_listed_in_publish_error(
    services: Services, topics: Topics
) -> None:
    limited = unique("t") + ".limited-costs"
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(limited, 1, 1, topic_configs={"max.message.bytes": "4096"})]
        )
    finally:
        await admin.close()
    settings = _settings(services, topics).model_copy(update={"topic_costs": limited})
    snapshot = build_event(
        EventType.SNAPSHOT, snapshot_payload("t"), tenant_id="t", request_id="r-1"
    )
    big_payload = cost_payload()
    big_payload["padding"] = "x" * 20_000
    big = build_event(EventType.COST, big_payload, tenant_id="t", request_id="r-1")

    async with EventPublisher(settings) as publisher:
        with pytest.raises(PublishError) as caught:
            await publisher.publish_many([snapshot, big])

    assert [event for event, _ in caught.value.failed] == [big]
    assert "1 of 2 events were not acknowledged" in str(caught.value)
    records = await _read_back(services, [topics.snapshots, limited], 1)
    assert [r.value for r in records] == [snapshot.value]


async def test_publishing_outside_the_context_is_a_clear_error(
    services: Services, topics: Topics
) -> None:
    publisher = EventPublisher(_settings(services, topics))
    event = build_event(EventType.POLICY, policy_payload("t"), tenant_id="t")
    with pytest.raises(RuntimeError, match="not started"):
        await publisher.publish(event)
    assert publisher.topic_for(EventType.POLICY) == topics.policies

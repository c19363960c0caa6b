"""The consume loop end to end on the real stack: rows, dead letters, offsets, metrics, probes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from consumer.demo.sample import (
    SENDABLE_REASONS,
    SampleRecord,
    make_sample,
    publish_sample,
    seed_database,
)
from consumer.service.service import Service
from consumer.settings import Settings
from schemas import EventType
from tests.conftest import Database
from tests.service_helpers import (
    actual_state,
    assert_dead_letters_match,
    assert_same_state,
    committed_offsets,
    dead_letters,
    end_offsets,
    expected_state,
    http_get,
    metric_sum,
    parse_metrics,
    running_service,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

#: Small enough for a default-configured broker to carry the oversized record.
_MAX_PAYLOAD = 8192


def _small_payload_limit(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_payload_bytes": _MAX_PAYLOAD})


def _with_duplicates(records: list[SampleRecord], rng: random.Random) -> list[SampleRecord]:
    """Every record 1-3 times, then the whole list in a random order."""
    out = [r for r in records for _ in range(rng.randint(1, 3))]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize(
    "forced_partition",
    [pytest.param(0, id="one-partition"), pytest.param(None, id="across-partitions")],
)
async def test_duplicates_and_any_order_converge_to_the_newest_rows(
    settings: Settings, database: Database, forced_partition: int | None
) -> None:
    settings = _small_payload_limit(settings)
    rng = random.Random(11)
    sample = make_sample(600, seed=11, tenants=8, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    sent = _with_duplicates(sample.records, rng)
    # Half before the consumer starts, half while it runs: both paths of the loop.
    half = len(sent) // 2
    published = await publish_sample(settings, sent[:half], partition=forced_partition)
    async with running_service(settings):
        published += await publish_sample(settings, sent[half:], partition=forced_partition)
        await wait_caught_up(settings)

    assert len(published) == len(sent)
    expected = expected_state(published, sample.tenants, sample.execution_records)
    assert_same_state(await actual_state(database.url), expected)
    # Duplicated bad records are distinct source records: each is dead-lettered once.
    assert_dead_letters_match(await dead_letters(settings), published)


async def test_one_bad_record_of_each_reason_among_valid_traffic(
    settings: Settings, database: Database
) -> None:
    settings = _small_payload_limit(settings)
    sample = make_sample(300, seed=5, tenants=5, max_payload_bytes=_MAX_PAYLOAD)
    bad = {r.reason: r for r in sample.records if r.reason is not None}
    assert set(bad) == set(SENDABLE_REASONS)
    valid = [r for r in sample.records if r.reason is None]
    rng = random.Random(5)
    records = list(valid)
    for record in bad.values():
        records.insert(rng.randint(0, len(records)), record)
    await seed_database(settings, sample)
    published = await publish_sample(settings, records)
    async with running_service(settings):
        await wait_caught_up(settings)

    letters = await dead_letters(settings)
    assert sorted(letter.reason for letter in letters) == sorted(str(c) for c in SENDABLE_REASONS)
    assert_dead_letters_match(letters, published)
    for letter in letters:
        assert letter.headers["dlq.group"] == settings.group_id
        assert letter.topic in settings.source_topics
    assert_same_state(
        await actual_state(database.url),
        expected_state(published, sample.tenants, sample.execution_records),
    )


async def test_metrics_count_every_outcome_of_a_known_run(
    settings: Settings, database: Database
) -> None:
    settings = _small_payload_limit(settings)
    sample = make_sample(400, seed=3, tenants=6, max_payload_bytes=_MAX_PAYLOAD)
    # One version per row (first sent wins nothing over later versions): then each distinct
    # valid event is applied exactly once and every repeat of it is stale, whatever the batching.
    first: dict[tuple[EventType, bytes | None], SampleRecord] = {}
    records: list[SampleRecord] = []
    for record in sample.records:
        is_valid = record.reason is None and record.value is not None
        if is_valid and first.setdefault((record.kind, record.key), record) != record:
            continue  # a second version of the row: left out
        records.append(record)
    await seed_database(settings, sample)
    published = await publish_sample(settings, records, partition=0)

    async with running_service(settings) as service:
        await wait_caught_up(settings)
        assert service.metrics_port is not None
        await _wait_lag_refreshed(service.metrics_port, settings)
        status, text = await http_get(service.metrics_port, "/metrics")
        assert status == 200
        samples = parse_metrics(text)
        ready_status, _ = await http_get(service.metrics_port, "/readyz")
        health_status, _ = await http_get(service.metrics_port, "/healthz")

    assert (ready_status, health_status) == (200, 200)
    valid = [r for r in published if r.reason is None and r.value is not None]
    distinct = Counter(r.kind for r in set(valid))
    total = Counter(r.kind for r in valid)
    events = "routing_consumer_events_total"
    for kind in EventType:
        topic = {
            EventType.SNAPSHOT: settings.topic_snapshots,
            EventType.COST: settings.topic_costs,
            EventType.POLICY: settings.topic_policies,
        }[kind]
        assert (
            metric_sum(samples, events, topic=topic, type=str(kind), outcome="applied")
            == (distinct[kind])
        )
        assert metric_sum(samples, events, topic=topic, type=str(kind), outcome="stale") == (
            total[kind] - distinct[kind]
        )
    bad = [r for r in published if r.reason is not None]
    assert metric_sum(samples, events, outcome="dead_lettered") == len(bad)
    tombstones = [r for r in published if r.value is None]
    assert metric_sum(samples, events, outcome="ignored") == len(tombstones) > 0

    ends = await end_offsets(settings, settings.source_topics)
    assert await committed_offsets(settings) == {tp: n for tp, n in ends.items() if n > 0}
    for tp, end in ends.items():
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        assert metric_sum(samples, "routing_consumer_log_end_offset", **labels) == end
        assert metric_sum(samples, "routing_consumer_lag_records", **labels) == 0
        assert metric_sum(samples, "routing_consumer_lag_seconds", **labels) == 0
    assert metric_sum(samples, "routing_consumer_assigned_partitions") == len(ends)
    assert metric_sum(samples, "routing_consumer_batch_size_count") >= 1
    assert metric_sum(samples, "routing_consumer_end_to_end_latency_seconds_count") == sum(
        distinct.values()
    )
    assert metric_sum(samples, "routing_consumer_last_commit_timestamp_seconds") > 0
    assert metric_sum(samples, "routing_consumer_rebalances_total") >= 1
    assert metric_sum(samples, "routing_build_info") == 1


async def _wait_lag_refreshed(port: int, settings: Settings) -> None:
    """Wait for the lag timer to see the final committed offsets (it runs every 0.5 s here)."""
    ends = await end_offsets(settings, settings.source_topics)
    for _ in range(100):
        _, text = await http_get(port, "/metrics")
        samples = parse_metrics(text)
        if all(
            metric_sum(
                samples,
                "routing_consumer_log_end_offset",
                topic=tp.topic,
                partition=str(tp.partition),
            )
            == end
            and metric_sum(
                samples,
                "routing_consumer_lag_records",
                topic=tp.topic,
                partition=str(tp.partition),
            )
            == 0
            for tp, end in ends.items()
        ):
            return
        await asyncio.sleep(0.1)


def _owned_partitions(service: Service) -> set[tuple[str, str]]:
    """The partitions an instance reports lag for (its metrics' per-partition series)."""
    samples = parse_metrics(service.metrics.render().decode())
    return {
        (dict(labels)["topic"], dict(labels)["partition"])
        for name, labels in samples
        if name == "routing_consumer_log_end_offset"
    }


async def _wait_partition_split(services: list[Service], total: int) -> None:
    for _ in range(200):
        owned = [_owned_partitions(s) for s in services]
        union: set[tuple[str, str]] = set().union(*owned)
        if len(union) == total and sum(len(o) for o in owned) == total and all(owned):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"partitions not split between instances: {owned}")


@pytest.mark.partitions(6)
async def test_a_member_joining_and_leaving_moves_partitions_and_their_series(
    settings: Settings, database: Database
) -> None:
    settings = _small_payload_limit(settings)
    sample = make_sample(1500, seed=17, tenants=6, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    thirds = [sample.records[i::3] for i in range(3)]
    total = 3 * 6
    async with running_service(settings) as first:
        published = await publish_sample(settings, thirds[0])
        await wait_caught_up(settings)
        async with running_service(settings) as second:
            await _wait_partition_split([first, second], total)
            published += await publish_sample(settings, thirds[1])
            await wait_caught_up(settings)
        # The second left the group cleanly: the first owns everything again.
        await _wait_partition_split([first], total)
        published += await publish_sample(settings, thirds[2])
        await wait_caught_up(settings)
        rebalances = metric_sum(
            parse_metrics(first.metrics.render().decode()), "routing_consumer_rebalances_total"
        )
    assert rebalances >= 3
    assert_same_state(
        await actual_state(database.url),
        expected_state(published, sample.tenants, sample.execution_records),
    )
    # Batches in hand were committed before their partitions moved: nothing was redelivered.
    assert_dead_letters_match(await dead_letters(settings), published, exact_once=True)


async def test_make_run_flow_accounts_for_every_record(
    settings: Settings, database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumer.demo.run import run

    settings = _small_payload_limit(settings)
    assert await run(settings, events=800, rate=0, seed=3) == 0
    out = capsys.readouterr().out
    assert "all accounted for" in out
    assert "lag after the run: 0 records" in out
    assert "exit code 0" in out
    letters = await dead_letters(settings)
    assert {letter.reason for letter in letters} == {str(code) for code in SENDABLE_REASONS}
    await wait_caught_up(settings, within=5)


@pytest.mark.partitions(1)
async def test_partitions_added_while_running_are_read_within_seconds(
    settings: Settings, database: Database
) -> None:
    settings = _small_payload_limit(settings)
    sample = make_sample(400, seed=12, tenants=4, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    async with running_service(settings):
        published = await publish_sample(settings, sample.records[:100])
        await wait_caught_up(settings)
        # An operator scales the topics out (README, "How many partitions") while it runs.
        topics = list(settings.source_topics)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.create_partitions(
                {topic: NewPartitions(total_count=3) for topic in settings.source_topics}
            )
            for _ in range(100):  # until the broker describes them
                described = await admin.describe_topics(topics)
                if sum(len(t["partitions"]) for t in described) == 9:
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        published += await publish_sample(settings, sample.records[100:])
        ends = await end_offsets(settings, settings.source_topics)
        assert len(ends) == 9
        assert all(ends.values()), ends  # the new partitions have records too
        # aiokafka's default metadata age (5 min) left the new partitions unread that long.
        await wait_caught_up(settings, within=45)
    expected = expected_state(published, sample.tenants, sample.execution_records)
    assert_same_state(await actual_state(database.url), expected)

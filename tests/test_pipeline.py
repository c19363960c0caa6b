"""One batch through BatchProcessor on the real stack: records fetched from Kafka, rows in
PostgreSQL, dead letters on the DLQ topic, the offsets to commit, and faults retried."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.db import create_engine
from consumer.errors import DatabaseUnavailable, TransientError, sqlstate_of
from consumer.ops.migrate import upgrade
from consumer.outcomes import Outcome
from consumer.pipeline.batch import BatchProcessor
from consumer.pipeline.deadletter import new_dead_letter_producer
from consumer.retry import observing_retries
from consumer.settings import MissingRowPolicy, Settings
from schemas import EventType, build_event, dumps, loads
from tests.apply_helpers import (
    RetryRecorder,
    at,
    cost,
    cost_payload,
    create_topic_with,
    fetch,
    headers_of,
    policy,
    produce,
    read_topic,
    snapshot,
    with_raw_payload,
)
from tests.conftest import Database, PrivateStack, Topics, create_topics, free_port, unique


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    made = new_dead_letter_producer(settings)
    await made.start()
    yield made
    await made.stop()


def _changed(settings: Settings, changes: dict[str, Any]) -> Settings:
    """``settings`` with ``changes``, validated like the real thing (URLs become secrets)."""
    return Settings.model_validate({**settings.model_dump(), **changes})


def _envelope_edit(value: bytes, **changes: Any) -> bytes:
    document = loads(value)
    document.update(changes)
    return dumps(document)


def _bad_records(settings: Settings) -> list[tuple[str, str, bytes | None, bytes]]:
    """(expected reason, topic, key, value): one record per decode reason code."""
    good = cost("req-bad", "t1", at(0)).value
    invalid_schema = build_event(
        EventType.COST,
        cost_payload(inputTokens=-1),
        tenant_id="t1",
        request_id="req-bad",
        validate=False,
    ).value
    broken_rule = build_event(
        EventType.COST,
        {**cost_payload(), "totalCostUsd": Decimal("9.99")},
        tenant_id="t1",
        request_id="req-bad",
        validate=False,
    ).value
    topic = settings.topic_costs
    return [
        ("invalid_json", topic, b"k1", b'{"eventId": '),
        ("not_an_object", topic, b"k2", b"[1, 2]"),
        ("schema_violation", topic, b"k3", invalid_schema),
        ("rule_violation", topic, b"k4", broken_rule),
        ("unsupported_event_type", topic, b"k5", _envelope_edit(good, type="routing.other")),
        ("unsupported_schema_version", topic, b"k6", _envelope_edit(good, schemaVersion=2)),
        ("payload_too_large", topic, b"k7", _envelope_edit(good, padding="x" * 3000)),
    ]


async def test_a_mixed_batch_applies_the_valid_and_dead_letters_every_bad_record(
    settings: Settings, topics: Topics, database: Database, producer: AIOKafkaProducer
) -> None:
    settings = _changed(settings, {"max_payload_bytes": 2048})
    await database.execute('INSERT INTO "Tenant" ("id") VALUES (\'t1\')')
    # Project A's rows (a missing one would hold its events: tests/test_held.py).
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('req-owned', 'req-owned', 'owner'), ('req-1', 'req-1', 't1'), "
        "('req-2', 'req-2', 't1')"
    )
    valid = [
        (settings.topic_snapshots, snapshot("req-1", "t1", at(1))),
        (settings.topic_costs, cost("req-1", "t1", at(2), input_usd="0.1")),
        (settings.topic_costs, cost("req-1", "t1", at(1), input_usd="0.3")),  # stale
        (settings.topic_policies, policy("t1", at(3))),
    ]
    db_bad = [
        ("unknown_tenant", settings.topic_policies, policy("nobody", at(0))),
        ("tenant_mismatch", settings.topic_snapshots, snapshot("req-owned", "t1", at(0))),
        (
            "db_rejected",
            settings.topic_costs,
            with_raw_payload(cost("req-2", "t1", at(0), note="N"), "N", '"\\u0000"'),
        ),
    ]
    bad = _bad_records(settings)
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, e.key, e.value) for topic, e in valid
    ]
    records += [(topic, key, value) for _, topic, key, value in bad]
    records += [(topic, e.key, e.value) for _, topic, e in db_bad]
    records.append((settings.topic_snapshots, b"req-gone", None))  # a tombstone
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, settings.source_topics, len(records))
    engine = create_engine(settings)
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        result = await processor.process(batch)
    finally:
        await engine.dispose()

    # Offsets: every partition of the batch up to its end.
    assert result.commit_offsets == {tp: max(r.offset for r in rs) + 1 for tp, rs in batch.items()}
    assert sum(result.commit_offsets.values()) == len(records)  # all produced to partition 0
    # Counts per outcome.
    assert result.count(Outcome.APPLIED) == 3
    assert result.count(Outcome.STALE) == 1
    assert result.count(Outcome.IGNORED) == 1
    assert result.count(Outcome.DEAD_LETTERED) == len(bad) + len(db_bad) == result.dead_letters
    assert result.outcomes[(settings.topic_costs, "routing.cost", Outcome.APPLIED)] == 1
    # Rejected once the decoder knew the type: labelled with it in the metrics; before, unknown.
    typed = {"schema_violation", "rule_violation"}
    # Two decode rejections (schema, rule) and the cost PostgreSQL refused.
    assert result.outcomes[(settings.topic_costs, "routing.cost", Outcome.DEAD_LETTERED)] == 3
    assert result.outcomes[(settings.topic_costs, "unknown", Outcome.DEAD_LETTERED)] == len(
        [reason for reason, *_ in bad if reason not in typed]
    )
    assert sorted(result.applied_occurred_at) == [at(1), at(2), at(3)]
    # Rows.
    rows = await database.fetch(
        'SELECT "requestId", "tenantId", "actualCost"->>\'inputCostUsd\' AS input, '
        '"routingSnapshot" IS NOT NULL AS has_snapshot FROM "ExecutionRecord" ORDER BY 1'
    )
    assert [tuple(r) for r in rows] == [
        ("req-1", "t1", "0.1", True),
        ("req-2", "t1", None, False),
        ("req-owned", "owner", None, False),
    ]
    # Dead letters: exactly the bad records, each with its reason and where it came from.
    letters = await read_topic(settings.kafka_bootstrap_servers, topics.dlq)
    sources = {(r.topic, r.offset): r for rs in batch.values() for r in rs}
    got: Counter[str] = Counter()
    for letter in letters:
        headers = headers_of(letter)
        source = sources[(headers["dlq.topic"], int(headers["dlq.offset"]))]
        assert (letter.key, letter.value) == (source.key, source.value)
        assert headers["dlq.group"] == settings.group_id
        assert headers["dlq.timestamp"] == str(source.timestamp)
        assert headers["dlq.error"]
        got[headers["dlq.reason"]] += 1
    assert got == Counter([reason for reason, *_ in bad] + [reason for reason, *_ in db_bad])


async def test_dry_run_validates_and_counts_but_writes_nothing(
    settings: Settings, topics: Topics, database: Database
) -> None:
    records = [
        (settings.topic_costs, b"k", cost("req-1", "t1", at(0)).value),
        (settings.topic_costs, b"k", b"not json"),
        (settings.topic_policies, b"t1", policy("t1", at(0)).value),
    ]
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, settings.source_topics, 3)
    engine = create_engine(settings)
    try:
        processor = BatchProcessor(settings, engine, None, group_id=settings.group_id, dry_run=True)
        result = await processor.process(batch)
    finally:
        await engine.dispose()

    assert result.outcomes == Counter(
        {
            (settings.topic_costs, "routing.cost", "valid"): 1,
            (settings.topic_costs, "unknown", "dead_lettered"): 1,
            (settings.topic_policies, "tenant.policy", "valid"): 1,
        }
    )
    assert result.dead_letter_reasons == Counter({"invalid_json": 1})
    assert result.applied_occurred_at == []
    assert await database.fetch('SELECT * FROM "ExecutionRecord"') == []
    assert await read_topic(settings.kafka_bootstrap_servers, topics.dlq) == []


async def test_an_unexpected_database_error_propagates_and_nothing_is_dead_lettered(
    settings: Settings, topics: Topics, empty_database: Database, producer: AIOKafkaProducer
) -> None:
    # No migrations: "ExecutionRecord" does not exist (42P01). A bug or a misconfiguration must
    # stop the consumer, never skip or dead-letter records.
    settings = _changed(settings, {"database_url": empty_database.url})
    bad = (settings.topic_costs, b"k", b"{}")
    good = (settings.topic_costs, b"req-1", cost("req-1", "t1", at(0)).value)
    await produce(settings.kafka_bootstrap_servers, [good, bad])
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 2)
    engine = create_engine(settings)
    recorder = RetryRecorder()
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        with (
            observing_retries(recorder),
            pytest.raises(Exception, match="ExecutionRecord") as raised,
        ):
            await processor.process(batch)
    finally:
        await engine.dispose()

    assert sqlstate_of(raised.value) == "42P01"
    assert recorder.errors == []
    assert await read_topic(settings.kafka_bootstrap_servers, topics.dlq) == []


async def test_with_a_retry_limit_an_unreachable_database_raises_transient_error(
    settings: Settings, topics: Topics, producer: AIOKafkaProducer
) -> None:
    settings = _changed(
        settings,
        {
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/routing",
            "retry_max_attempts": 3,
            "retry_initial_delay_s": 0.01,
        },
    )
    await produce(settings.kafka_bootstrap_servers, [(settings.topic_costs, b"k", b"[]")])
    await produce(
        settings.kafka_bootstrap_servers,
        [(settings.topic_costs, b"req-1", cost("req-1", "t1", at(0)).value)],
    )
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 2)
    engine = create_engine(settings)
    recorder = RetryRecorder()
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        with observing_retries(recorder), pytest.raises(DatabaseUnavailable) as raised:
            await processor.process(batch)
    finally:
        await engine.dispose()

    # Three attempts: two retries, then the last error propagates (retriable, not ready).
    assert len(recorder.errors) == 2
    assert raised.value.retriable
    assert all(isinstance(e, TransientError) and e.is_unready for e in recorder.errors)
    # The batch failed as a whole: even its decode rejection was not dead-lettered, since the
    # caller will not commit and the record comes again.
    assert await read_topic(settings.kafka_bootstrap_servers, topics.dlq) == []


async def test_a_lock_held_elsewhere_is_retried_with_the_instance_not_ready_meanwhile(
    settings: Settings, database: Database, producer: AIOKafkaProducer
) -> None:
    # The service's sessions give up waiting for a lock after 100 ms (SQLSTATE 55P03).
    settings = settings.model_copy(update={"db_lock_timeout_ms": 100})
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('r', 'r', 't1')"
    )
    event = cost("r", "t1", at(0))
    await produce(
        settings.kafka_bootstrap_servers, [(settings.topic_costs, event.key, event.value)]
    )
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 1)
    holder = await database.connect()
    await holder.execute('BEGIN; SELECT 1 FROM "ExecutionRecord" WHERE "id" = \'r\' FOR UPDATE')
    engine = create_engine(settings)
    recorder = RetryRecorder()
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        with observing_retries(recorder):
            task = asyncio.create_task(processor.process(batch))
        for _ in range(300):
            if len(recorder.errors) >= 2:
                break
            await asyncio.sleep(0.1)
        await holder.execute("ROLLBACK")
        result = await asyncio.wait_for(task, timeout=30)
    finally:
        await holder.close()
        await engine.dispose()

    assert {sqlstate_of(e) for e in recorder.errors} == {"55P03"}
    # Blocked: not ready (it cannot do its work), then written once the lock went.
    assert all(isinstance(e, TransientError) and e.is_unready for e in recorder.errors)
    assert result.wrote_database
    assert result.count(Outcome.APPLIED) == 1
    rows = await database.fetch('SELECT "actualCostEventId" FROM "ExecutionRecord"')
    assert rows[0]["actualCostEventId"] == event.event_id


async def _migrated_private_database(stack: PrivateStack) -> str:
    await asyncio.to_thread(stack.up, "postgres")
    await asyncio.to_thread(upgrade, Settings(database_url=stack.database_url), sql=False)
    return stack.database_url


@pytest.mark.slow
async def test_postgresql_stopped_mid_batch_is_waited_for_and_the_batch_completes(
    settings: Settings, topics: Topics, private_stack: PrivateStack, producer: AIOKafkaProducer
) -> None:
    url = await _migrated_private_database(private_stack)
    settings = _changed(settings, {"database_url": url})
    owner = await asyncpg.connect(url)
    try:  # Project A's rows (a missing one would be held, not written)
        await owner.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
            "SELECT 'req-' || g, 'req-' || g, 't1' FROM generate_series(0, 199) AS g"
        )
    finally:
        await owner.close()
    events = [cost(f"req-{i}", "t1", at(i)) for i in range(200)]
    events += [snapshot(f"req-{i}", "t1", at(i)) for i in range(200)]
    records = [(settings.topic_costs, e.key, e.value) for e in events]
    records.append((settings.topic_costs, b"x", b"nope"))
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], len(records))

    # Hold a lock so the batch's statement is running (blocked) when the server stops.
    blocker = await asyncpg.connect(url)
    await blocker.execute('BEGIN; LOCK TABLE "ExecutionRecord" IN ACCESS EXCLUSIVE MODE')
    engine = create_engine(settings)
    recorder = RetryRecorder()
    processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
    try:
        with observing_retries(recorder):
            task = asyncio.create_task(processor.process(batch))
        await _wait_for_lock_waiter(url)
        assert not task.done()
        await asyncio.to_thread(private_stack.down, "postgres")
        await asyncio.sleep(3)
        assert not task.done()  # still retrying, not failed
        assert recorder.errors
        assert all(isinstance(e, DatabaseUnavailable) for e in recorder.errors)
        await asyncio.to_thread(private_stack.up, "postgres")
        result = await asyncio.wait_for(task, timeout=60)
    finally:
        blocker.terminate()
        await engine.dispose()

    assert result.wrote_database
    assert len(recorder.errors) >= 2
    assert result.count(Outcome.APPLIED) == 400
    assert result.dead_letters == 1
    rows = await asyncpg.connect(url)
    try:
        stored = await rows.fetch(
            'SELECT "requestId", "actualCostEventId", "routingSnapshotEventId" '
            'FROM "ExecutionRecord"'
        )
    finally:
        await rows.close()
    by_request = {r["requestId"]: r for r in stored}
    assert len(by_request) == 200
    for e in events:
        column = "actualCostEventId" if e.type is EventType.COST else "routingSnapshotEventId"
        assert by_request[e.key.decode()][column] == e.event_id
    [letter] = await read_topic(settings.kafka_bootstrap_servers, topics.dlq)
    assert headers_of(letter)["dlq.reason"] == "invalid_json"


async def _wait_for_lock_waiter(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for _ in range(200):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND application_name = 'routing-persistence'"
            )
            if waiting:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the batch never reached the database")
    finally:
        await conn.close()


@pytest.mark.slow
async def test_dead_letters_wait_for_a_broker_that_is_down_and_are_written_when_it_returns(
    settings: Settings, database: Database, private_stack: PrivateStack
) -> None:
    # The source records come from the shared broker; the dead-letter topic lives on a private
    # broker that this test stops while the batch is in hand.
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('r', 'req-1', 't1')"
    )
    await asyncio.to_thread(private_stack.up, "kafka")
    dlq = "private.dlq"
    await create_topics(private_stack.kafka_bootstrap, [dlq], 1)
    settings = _changed(settings, {"topic_dlq": dlq})
    await produce(
        settings.kafka_bootstrap_servers,
        [
            (settings.topic_costs, b"k", b"{oops"),
            (settings.topic_costs, b"req-1", cost("req-1", "t1", at(0)).value),
        ],
    )
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 2)
    producer = AIOKafkaProducer(
        bootstrap_servers=private_stack.kafka_bootstrap, acks="all", request_timeout_ms=3000
    )
    await producer.start()
    engine = create_engine(settings)
    recorder = RetryRecorder()
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        await asyncio.to_thread(private_stack.down, "kafka")
        with observing_retries(recorder):
            task = asyncio.create_task(processor.process(batch))
        await asyncio.sleep(6)
        assert not task.done()  # waiting for the broker, neither failed nor done
        await asyncio.to_thread(private_stack.up, "kafka")
        result = await asyncio.wait_for(task, timeout=120)
    finally:
        await producer.stop()
        await engine.dispose()

    # Retried as dead-letter writes, never counted as database retries.
    assert recorder.errors
    assert {getattr(e, "operation", None) for e in recorder.errors} == {"dead_letter"}
    assert result.dead_letters == 1
    assert result.count(Outcome.APPLIED) == 1
    [letter] = await read_topic(private_stack.kafka_bootstrap, dlq)
    assert letter.value == b"{oops"
    assert headers_of(letter)["dlq.reason"] == "invalid_json"


@pytest.mark.parametrize("missing_rows", [MissingRowPolicy.PARK, MissingRowPolicy.CREATE])
async def test_two_processors_racing_on_the_same_rows_converge(
    settings: Settings,
    database: Database,
    producer: AIOKafkaProducer,
    missing_rows: MissingRowPolicy,
) -> None:
    # Two consumers briefly own the same rows (a rebalance, a replay beside the live consumer):
    # concurrent transactions on the same rows wait for each other, lose races, even deadlock;
    # each is retried or re-offered, and the rows still end at the newest event. Under park
    # Project A made the rows; under create the racing consumers create them.
    settings = _changed(settings, {"missing_row_policy": missing_rows})
    rng = random.Random(5)
    await database.execute('INSERT INTO "Tenant" ("id") VALUES (\'t1\')')
    if missing_rows is MissingRowPolicy.PARK:
        await database.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
            "SELECT 'req-' || g, 'req-' || g, 't1' FROM generate_series(0, 59) AS g"
        )
    events = []
    for n in range(600):
        request = f"req-{rng.randrange(60)}"
        when = at(rng.randrange(40))
        roll = rng.random()
        if roll < 0.45:
            events.append(snapshot(request, "t1", when))
        elif roll < 0.9:
            events.append(cost(request, "t1", when))
        else:
            events.append(policy("t1", when))
        events[-1] = events[-1] if n % 7 else events[rng.randrange(len(events))]  # duplicates
    records = [(settings.topic_costs, e.key, e.value) for e in events]
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], len(records))
    [(tp, fetched)] = batch.items()
    engines = [create_engine(settings), create_engine(settings)]
    try:
        processors = [
            BatchProcessor(settings, engine, producer, group_id=settings.group_id)
            for engine in engines
        ]
        results = []
        for _ in range(4):
            shuffled = [list(fetched), list(fetched)]
            for copy in shuffled:
                rng.shuffle(copy)
            results += await asyncio.gather(
                *(
                    processor.process({tp: copy[: len(copy) // 2]})
                    for processor, copy in zip(processors, shuffled, strict=True)
                ),
                *(
                    processor.process({tp: copy[len(copy) // 2 :]})
                    for processor, copy in zip(processors[::-1], shuffled, strict=True)
                ),
            )
    finally:
        for engine in engines:
            await engine.dispose()

    assert all(r.dead_letters == 0 for r in results)
    newest: dict[tuple[str, EventType], Any] = {}
    for e in events:
        slot = (e.key.decode(), e.type)
        if slot not in newest or (newest[slot].occurred_at, newest[slot].event_id) < (
            e.occurred_at,
            e.event_id,
        ):
            newest[slot] = e
    rows = await database.fetch(
        'SELECT "requestId", "routingSnapshotEventId", "actualCostEventId" FROM "ExecutionRecord"'
    )
    stored = {r["requestId"]: r for r in rows}
    for (key, kind), e in newest.items():
        if kind is EventType.POLICY:
            [tenant] = await database.fetch('SELECT "routingPolicyEventId" FROM "Tenant"')
            assert tenant["routingPolicyEventId"] == e.event_id
        else:
            column = "routingSnapshotEventId" if kind is EventType.SNAPSHOT else "actualCostEventId"
            assert stored[key][column] == e.event_id, (key, kind)


async def test_a_batch_processed_again_counts_the_same_records_once(
    settings: Settings, topics: Topics, database: Database, producer: AIOKafkaProducer
) -> None:
    # What happens after a failed commit or a restart: the same batch comes again.
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('r', 'req-1', 't1')"
    )
    good = cost("req-1", "t1", at(0))
    records = [(settings.topic_costs, good.key, good.value), (settings.topic_costs, b"k", b"[]")]
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 2)
    engine = create_engine(settings)
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        first = await processor.process(batch)
        second = await processor.process(batch)
    finally:
        await engine.dispose()

    assert (first.count(Outcome.APPLIED), first.count(Outcome.STALE), first.dead_letters) == (
        1,
        0,
        1,
    )
    assert (second.count(Outcome.APPLIED), second.count(Outcome.STALE), second.dead_letters) == (
        0,
        1,
        1,
    )
    assert second.commit_offsets == first.commit_offsets
    # At least once: the repeat wrote its dead letter again.
    assert len(await read_topic(settings.kafka_bootstrap_servers, topics.dlq)) == 2


async def test_a_dead_letter_too_large_for_the_dlq_topic_is_written_without_its_value(
    settings: Settings, database: Database
) -> None:
    # The DLQ topic takes records of at most ~20 KB; a 60 KB record (valid JSON, over the
    # 32 KiB payload limit) is rejected payload_too_large, and its dead letter cannot be written
    # whole, ever. It must not block the partition: the letter goes without its value.
    dlq = unique("dlq-small")
    await create_topic_with(settings.kafka_bootstrap_servers, dlq, {"max.message.bytes": "20000"})
    settings = _changed(settings, {"max_payload_bytes": 32768, "topic_dlq": dlq})
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('r', 'req-1', 't1')"
    )
    huge = _envelope_edit(cost("req-huge", "t1", at(0)).value, padding="x" * 60_000)
    good = cost("req-1", "t1", at(1))
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (settings.topic_costs, b"req-huge", huge),
        (settings.topic_costs, b"k-bad", b"[]"),  # a small letter beside it keeps its bytes
        (settings.topic_costs, good.key, good.value),
    ]
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 3)
    engine = create_engine(settings)
    producer = new_dead_letter_producer(settings)
    await producer.start()
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        with structlog.testing.capture_logs() as logs:
            result = await asyncio.wait_for(processor.process(batch), 60)
        # The producer still writes to that DLQ partition afterwards (an idempotent aiokafka
        # producer would not: OutOfOrderSequenceNumber for every later letter).
        await produce(settings.kafka_bootstrap_servers, [(settings.topic_costs, b"k-2", b"{")])
        later = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], 4)
        [(tp_later, all_records)] = later.items()
        next_result = await asyncio.wait_for(processor.process({tp_later: all_records[3:]}), 60)
    finally:
        await producer.stop()
        await engine.dispose()

    assert result.count(Outcome.APPLIED) == 1
    assert result.dead_letter_reasons == Counter({"payload_too_large": 1, "not_an_object": 1})
    # The batch's offsets can be committed: the partition moves on.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(result.commit_offsets))
        await consumer.commit(result.commit_offsets)
        [(tp, end)] = result.commit_offsets.items()
        assert end == 3
        assert await consumer.committed(tp) == 3
    finally:
        await consumer.stop()
    assert next_result.dead_letter_reasons == Counter({"invalid_json": 1})
    letters = {r.key: r for r in await read_topic(settings.kafka_bootstrap_servers, dlq)}
    assert set(letters) == {b"req-huge", b"k-bad", b"k-2"}
    omitted = headers_of(letters[b"req-huge"])
    assert letters[b"req-huge"].value is None
    assert omitted["dlq.value-omitted"] == str(len(huge))
    assert omitted["dlq.reason"] == "payload_too_large"
    assert (omitted["dlq.topic"], omitted["dlq.partition"], omitted["dlq.offset"]) == (
        settings.topic_costs,
        "0",
        "0",
    )
    assert letters[b"k-bad"].value == b"[]"
    assert "dlq.value-omitted" not in headers_of(letters[b"k-bad"])
    [logged] = [e for e in logs if e["event"] == "dead_letter.value_omitted"]
    assert logged["log_level"] == "error"
    assert (logged["offset"], logged["value_bytes"]) == (0, len(huge))
    assert "padding" not in repr(logged)  # no payload in the log


@pytest.mark.parametrize("missing_rows", [MissingRowPolicy.PARK, MissingRowPolicy.CREATE])
async def test_on_a_prisma_like_table_existing_rows_apply_and_missing_ones_wait_or_are_refused(
    settings: Settings,
    topics: Topics,
    database: Database,
    producer: AIOKafkaProducer,
    missing_rows: MissingRowPolicy,
) -> None:
    # Project A's "ExecutionRecord" has "updatedAt" NOT NULL without a default (Prisma fills
    # it): the rows the routing engine created take the events. A missing row is waited for
    # (park, the default: held, no dead letter, no row created); under create the service
    # cannot create it, and says why.
    settings = _changed(settings, {"missing_row_policy": missing_rows})
    await database.execute(
        'ALTER TABLE "ExecutionRecord" ADD COLUMN "updatedAt" timestamptz NOT NULL'
    )
    existing = [f"req-{i}" for i in range(20)]
    for request in existing:
        await database.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId", "updatedAt") '
            "VALUES ($1, $1, 't1', now())",
            request,
        )
    events = [snapshot(r, "t1", at(1)) for r in existing]
    events += [cost(r, "t1", at(2)) for r in existing]
    missing = [cost("req-missing", "t1", at(3)), snapshot("req-missing-2", "t1", at(3))]
    records = [(settings.topic_costs, e.key, e.value) for e in [*events, *missing]]
    await produce(settings.kafka_bootstrap_servers, records)
    batch = await fetch(settings.kafka_bootstrap_servers, [settings.topic_costs], len(records))
    engine = create_engine(settings)
    try:
        processor = BatchProcessor(settings, engine, producer, group_id=settings.group_id)
        result = await processor.process(batch)
    finally:
        await engine.dispose()

    assert result.count(Outcome.APPLIED) == len(events)
    rows = await database.fetch(
        'SELECT count(*) AS n FROM "ExecutionRecord" '
        'WHERE "routingSnapshot" IS NOT NULL AND "actualCost" IS NOT NULL'
    )
    assert rows[0]["n"] == len(existing)
    count = await database.fetch('SELECT count(*) AS n FROM "ExecutionRecord"')
    assert count[0]["n"] == len(existing)
    held = await database.fetch("SELECT request_id FROM routing_persistence.held_field")
    letters = await read_topic(settings.kafka_bootstrap_servers, topics.dlq)
    if missing_rows is MissingRowPolicy.PARK:
        assert result.count(Outcome.HELD) == 2
        assert result.dead_letter_reasons == Counter()
        assert letters == []
        assert sorted(r["request_id"] for r in held) == ["req-missing", "req-missing-2"]
        return
    assert held == []
    assert result.dead_letter_reasons == Counter({"db_rejected": 2})
    assert sorted(letter.key for letter in letters) == [b"req-missing", b"req-missing-2"]
    for letter in letters:
        headers = headers_of(letter)
        assert headers["dlq.reason"] == "db_rejected"
        assert 'requires column "updatedAt"' in headers["dlq.error"]
        assert "cannot fill" in headers["dlq.error"]
        assert letter.value in {e.value for e in missing}

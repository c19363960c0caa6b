"""Rows that do not exist yet (docs/contract.md §3): held under ``park``, written once the row
appears, through the same guards; dead-lettered as ``row_missing`` after the TTL; ``create``
creates the row as before. Real PostgreSQL and Kafka: rows, the held table, dead letters."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import create_engine, translate_error
from consumer.errors import DatabaseBusy, TransientError
from consumer.outcomes import Outcome
from consumer.pipeline.apply import apply_events
from consumer.pipeline.deadletter import DeadLetterWriter, new_dead_letter_producer
from consumer.pipeline.release import Releaser
from consumer.settings import MissingRowPolicy, Settings
from schemas import OutgoingEvent
from tests.apply_helpers import (
    apply_in_transaction,
    at,
    cost,
    pending,
    read_topic,
    snapshot,
    source_record,
)
from tests.conftest import ROOT, Database, Topics

pytestmark = pytest.mark.integration

HELD = "routing_persistence.held_field"


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    made = create_engine(Settings(database_url=database.url))
    yield made
    await made.dispose()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    made = new_dead_letter_producer(settings)
    await made.start()
    yield made
    await made.stop()


def _releaser(settings: Settings, engine: AsyncEngine, producer: AIOKafkaProducer) -> Releaser:
    writer = DeadLetterWriter(producer, topic=settings.topic_dlq, group_id=settings.group_id)
    return Releaser(settings, engine, writer)


async def _until_no_race_is_lost(step: Callable[[], Awaitable[object]]) -> None:
    """Run ``step`` again while its transaction loses a race with the other writers (a
    deadlock: concurrent transactions lock shared rows in different orders), as the service
    does: its batches are retried, its release timer tries again at the next cycle."""
    for _ in range(50):
        try:
            await step()
            return
        except Exception as exc:
            lost = exc if isinstance(exc, TransientError) else translate_error(exc, operation="t")
            if not isinstance(lost, DatabaseBusy):
                raise
    raise AssertionError("lost 50 races in a row")


def _dlq_headers(letter: Any) -> dict[str, str]:
    """The letter's dlq.* headers (the copied originals may be any bytes)."""
    return {k: v.decode() for k, v in letter.headers if k.startswith("dlq.")}


async def _create_row(database: Database, request: str, tenant: str | None) -> None:
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2)',
        request,
        tenant,
    )


async def _held(database: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in await database.fetch(f"SELECT * FROM {HELD} ORDER BY 1, 2, 4")]


async def _stored(database: Database, request: str) -> dict[str, Any]:
    [row] = await database.fetch(
        'SELECT "routingSnapshotEventId" AS snap, "actualCostEventId" AS cost, '
        '"routingSnapshot"::text AS snap_text FROM "ExecutionRecord" WHERE "requestId" = $1',
        request,
    )
    return dict(row)


async def test_park_holds_every_version_and_never_creates_a_row(
    engine: AsyncEngine, database: Database
) -> None:
    await _create_row(database, "req-here", "t1")
    older, newer = snapshot("req-new", "t1", at(1)), snapshot("req-new", "t1", at(2))
    money, present = cost("req-new", "t1", at(1)), cost("req-here", "t1", at(1))
    events = [pending(e) for e in (older, newer, money, present)]

    outcome = await apply_events(engine, events, policy=MissingRowPolicy.PARK)

    assert [r.outcome for r in outcome.results] == [Outcome.HELD] * 3 + [Outcome.APPLIED]
    rows = await database.fetch('SELECT "requestId" FROM "ExecutionRecord"')
    assert [r["requestId"] for r in rows] == ["req-here"]
    held = await _held(database)
    assert [(h["request_id"], h["field"], h["event_id"]) for h in held] == [
        ("req-new", "actualCost", money.event_id),
        ("req-new", "routingSnapshot", older.event_id),
        ("req-new", "routingSnapshot", newer.event_id),
    ]
    # What a dead letter needs, as the record was consumed.
    for h, pend in zip(held, [events[2], events[0], events[1]], strict=True):
        source = pend.source
        assert source is not None
        assert (bytes(h["record_key"]), bytes(h["record_value"])) == (source.key, source.value)
        assert (h["source_topic"], h["source_partition"], h["source_offset"]) == (
            source.topic,
            source.partition,
            source.offset,
        )
        assert h["source_timestamp"] == source.timestamp
        assert h["tenant_id"] == "t1"
        assert h["occurred_at"] == pend.event.occurred_at

    # The same records again (redelivery, replay, another consumer): nothing new is held.
    again = await apply_events(engine, events, policy=MissingRowPolicy.PARK)
    assert [r.outcome for r in again.results] == [Outcome.STALE] * 4
    assert await _held(database) == held


async def test_create_keeps_creating_the_row_with_its_key_columns(
    engine: AsyncEngine, database: Database
) -> None:
    outcome = await apply_in_transaction(
        engine, [snapshot("req-c", "t1", at(1))], policy=MissingRowPolicy.CREATE
    )
    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED]
    rows = await database.fetch('SELECT "id", "requestId", "tenantId" FROM "ExecutionRecord"')
    assert [tuple(r) for r in rows] == [("req-c", "req-c", "t1")]
    assert await _held(database) == []


async def test_release_applies_through_the_version_guard_and_tenant_isolation(
    settings: Settings,
    engine: AsyncEngine,
    database: Database,
    producer: AIOKafkaProducer,
    topics: Topics,
) -> None:
    # Held newest first: another tenant's (refused once the row says whose it is), then two of
    # the row's own tenant; and a cost. A bad newest must not hide the older valid one.
    intruder = snapshot("req-r", "t-other", at(3))
    valid, oldest = snapshot("req-r", "t1", at(2)), snapshot("req-r", "t1", at(1))
    money = cost("req-r", "t1", at(1))
    held_events = [pending(e) for e in (intruder, valid, oldest, money)]
    outcome = await apply_events(engine, held_events, policy=MissingRowPolicy.PARK)
    assert {r.outcome for r in outcome.results} == {Outcome.HELD}

    releaser = _releaser(settings, engine, producer)
    nothing = await releaser.cycle()  # no row yet: nothing happens
    assert (nothing.candidates, sum(nothing.released.values())) == (0, 0)
    assert len(await _held(database)) == 4

    await _create_row(database, "req-r", "t1")
    report = await releaser.cycle()

    assert report.released == {
        ("routing.snapshot", Outcome.APPLIED): 1,
        ("routing.snapshot", Outcome.STALE): 1,
        ("routing.snapshot", Outcome.DEAD_LETTERED): 1,
        ("routing.cost", Outcome.APPLIED): 1,
    }
    stored = await _stored(database, "req-r")
    assert (stored["snap"], stored["cost"]) == (valid.event_id, money.event_id)
    assert await _held(database) == []
    [letter] = await read_topic(settings.kafka_bootstrap_servers, topics.dlq)
    source = held_events[0].source
    assert source is not None
    assert (letter.key, letter.value) == (intruder.key, intruder.value)
    headers = _dlq_headers(letter)
    assert headers["dlq.reason"] == "tenant_mismatch"
    assert (headers["dlq.topic"], headers["dlq.partition"], headers["dlq.offset"]) == (
        source.topic,
        str(source.partition),
        str(source.offset),
    )
    assert headers["dlq.timestamp"] == str(source.timestamp)
    assert headers["dlq.group"] == settings.group_id
    # The original headers, bytes for bytes (the held table keeps them).
    assert [h for h in letter.headers if not h[0].startswith("dlq.")] == list(source.headers)


async def test_expired_held_fields_are_dead_lettered_as_row_missing(
    settings: Settings,
    engine: AsyncEngine,
    database: Database,
    producer: AIOKafkaProducer,
    topics: Topics,
) -> None:
    settings = settings.model_copy(update={"missing_row_ttl": timedelta(hours=1)})
    gone, late = snapshot("req-never", "t1", at(1)), cost("req-late", "t1", at(1))
    fresh = snapshot("req-fresh", "t1", at(1))
    events = [pending(e) for e in (gone, late, fresh)]
    await apply_events(engine, events, policy=MissingRowPolicy.PARK)
    # Held two hours ago (no sleeping for a TTL): two are past it, one is not.
    await database.execute(
        f"UPDATE {HELD} SET held_at = now() - interval '2 hours' "
        "WHERE request_id IN ('req-never', 'req-late')"
    )
    # The row of one of them appeared: it is released, never expired.
    await _create_row(database, "req-late", "t1")

    report = await _releaser(settings, engine, producer).cycle()

    assert report.dead_letter_reasons == {"row_missing": 1}
    assert report.released[("routing.snapshot", Outcome.DEAD_LETTERED)] == 1
    assert report.released[("routing.cost", Outcome.APPLIED)] == 1
    assert [h["request_id"] for h in await _held(database)] == ["req-fresh"]
    [letter] = await read_topic(settings.kafka_bootstrap_servers, topics.dlq)
    source = events[0].source
    assert source is not None
    assert (letter.key, letter.value) == (gone.key, gone.value)
    headers = _dlq_headers(letter)
    assert headers["dlq.reason"] == "row_missing"
    assert "req-never" in headers["dlq.error"]
    assert "ROUTING_MISSING_ROW_TTL" in headers["dlq.error"]
    assert (headers["dlq.topic"], headers["dlq.offset"]) == (source.topic, str(source.offset))
    assert ("trace", b"\x00\xff") in letter.headers


async def test_hold_release_and_direct_writes_converge_under_redelivery_and_two_consumers(
    settings: Settings, database: Database, producer: AIOKafkaProducer
) -> None:
    """Two consumers apply the same batches twice each (redelivery, a replay beside the live
    consumer) while Project A creates the rows at random moments and two releasers run: every
    row ends with the newest valid event of each field, nothing stays held, nothing is lost."""
    rng = random.Random(14)
    requests = [f"req-{n}" for n in range(40)]
    events: list[OutgoingEvent] = []
    for _ in range(500):
        request = rng.choice(requests)
        make = snapshot if rng.random() < 0.5 else cost
        events.append(make(request, "t1", at(rng.randrange(30))))
    batches = [events[i : i + 50] for i in range(0, len(events), 50)]
    engines = [create_engine(settings), create_engine(settings)]
    releasers = [_releaser(settings, e, producer) for e in engines]
    creating = list(requests)
    rng.shuffle(creating)

    async def consume(engine: AsyncEngine, order: list[list[OutgoingEvent]]) -> None:
        for batch in order:
            await _until_no_race_is_lost(partial(apply_events, engine, [pending(e) for e in batch]))

    async def project_a() -> None:
        for request in creating:
            await _create_row(database, request, "t1")
            await asyncio.sleep(rng.random() * 0.02)

    async def release(releaser: Releaser) -> None:
        for _ in range(20):
            await _until_no_race_is_lost(releaser.cycle)
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(
            consume(engines[0], batches + batches),
            consume(engines[1], batches[::-1] + batches),
            project_a(),
            *(release(r) for r in releasers),
        )
        # Whatever raced: cycles until nothing is held (bounded: every row exists by now).
        for _ in range(10):
            if not await _held(database):
                break
            for releaser in releasers:
                await _until_no_race_is_lost(releaser.cycle)
    finally:
        for made in engines:
            await made.dispose()

    assert await _held(database) == []
    newest: dict[tuple[str, bool], OutgoingEvent] = {}
    for e in events:
        slot = (e.key.decode(), e.type.value == "routing.snapshot")
        if slot not in newest or (newest[slot].occurred_at, newest[slot].event_id) < (
            e.occurred_at,
            e.event_id,
        ):
            newest[slot] = e
    for (request, is_snapshot), e in newest.items():
        stored = await _stored(database, request)
        assert stored["snap" if is_snapshot else "cost"] == e.event_id, (request, is_snapshot)
    assert await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq) == []


async def test_the_least_privilege_role_holds_releases_and_expires(
    settings: Settings, database: Database, producer: AIOKafkaProducer
) -> None:
    # deploy/sql/grants.sql alone (park): enough to hold, release and expire; no INSERT into
    # Project A's table is needed (or granted).
    await database.execute((ROOT / "deploy" / "sql" / "grants.sql").read_text())
    as_role = create_engine(
        settings, connect_args={"server_settings": {"role": "routing_persistence"}}
    )
    try:
        events = [pending(snapshot("req-g", "t1", at(1))), pending(cost("req-x", "t1", at(1)))]
        outcome = await apply_events(as_role, events)
        assert [r.outcome for r in outcome.results] == [Outcome.HELD] * 2
        await _create_row(database, "req-g", "t1")
        await database.execute(
            f"UPDATE {HELD} SET held_at = now() - interval '8 days' WHERE request_id = 'req-x'"
        )
        report = await _releaser(settings, as_role, producer).cycle()
    finally:
        await as_role.dispose()
    assert report.released == {
        ("routing.snapshot", Outcome.APPLIED): 1,
        ("routing.cost", Outcome.DEAD_LETTERED): 1,
    }
    assert await _held(database) == []


def test_a_source_record_is_what_the_held_row_gives_back() -> None:
    from consumer.pipeline.held import HeldEvent, _encode_headers

    event = snapshot("req-1", "t1", at(1))
    record = source_record(event, topic="topic-x", partition=2, offset=41)
    row = (
        "req-1",
        "routingSnapshot",
        event.event_id,
        event.occurred_at,
        "t1",
        event.occurred_at,
        record.key,
        record.value,
        _encode_headers(record.headers),
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
    )
    back = HeldEvent.of_row(row).record
    assert (back.topic, back.partition, back.offset, back.timestamp) == (
        "topic-x",
        2,
        41,
        record.timestamp,
    )
    assert (back.key, back.value, list(back.headers)) == (record.key, record.value, record.headers)

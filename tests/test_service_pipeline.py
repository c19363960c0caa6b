"""The loop hands finished batches' offsets to a committer and goes on: still no offset is
committed before everything below it is in PostgreSQL (CONTRACT §3), whatever the timing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import datetime

import asyncpg
import pytest
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from consumer.demo.sample import make_sample, publish_sample, seed_database
from consumer.ops.migrate import upgrade
from consumer.service.service import Service
from consumer.settings import Settings
from tests.conftest import PrivateStack
from tests.service_helpers import committed_offsets, metric_sum, parse_metrics, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_MAX_PAYLOAD = 8192

#: (type, row key) -> the version (occurredAt, eventId) a row's field must hold at least.
Versions = dict[tuple[str, str], tuple[datetime, uuid.UUID]]


def _retries(service: Service) -> float:
    samples = parse_metrics(service.metrics.render().decode())
    return metric_sum(samples, "routing_consumer_db_retries_total")


async def _stored_versions(database_url: str) -> Versions:
    conn = await asyncpg.connect(database_url)
    try:
        executions = await conn.fetch(
            'SELECT "requestId", "routingSnapshotOccurredAt", "routingSnapshotEventId", '
            '"actualCostOccurredAt", "actualCostEventId" FROM "ExecutionRecord"'
        )
        tenants = await conn.fetch(
            'SELECT "id", "routingPolicyOccurredAt", "routingPolicyEventId" FROM "Tenant"'
        )
    finally:
        await conn.close()
    stored: Versions = {}
    for r in executions:
        if r[1] is not None:
            stored[("routing.snapshot", r[0])] = (r[1], r[2])
        if r[3] is not None:
            stored[("routing.cost", r[0])] = (r[3], r[4])
    for r in tenants:
        if r[1] is not None:
            stored[("tenant.policy", r[0])] = (r[1], r[2])
    return stored


@pytest.mark.partitions(2)
async def test_postgres_lost_mid_pipeline_commits_nothing_it_does_not_hold(
    settings: Settings, private_stack: PrivateStack
) -> None:
    await asyncio.to_thread(private_stack.up, "postgres")
    settings = settings.model_copy(
        update={
            "database_url": SecretStr(private_stack.database_url),
            "max_payload_bytes": _MAX_PAYLOAD,
            # Many small batches: there is nearly always one being applied and one prepared.
            "batch_max_records": 20,
            "shutdown_timeout_s": 2.0,
        }
    )
    await asyncio.to_thread(upgrade, settings)
    sample = make_sample(6000, seed=23, tenants=8, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    published = await publish_sample(settings, sample.records)
    total = len(published)
    valid_values = {r.value for r in published if r.reason is None and r.value is not None}

    service = Service(settings, metrics_port=0)
    task = asyncio.create_task(service.run())
    try:
        # Lose PostgreSQL while the backlog is being worked through.
        deadline = time.monotonic() + 60
        while sum((await committed_offsets(settings)).values()) < total // 10:
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "nothing committed"
            await asyncio.sleep(0.02)
        # A batch in hand when the server goes, whatever the timing: another session's lock
        # holds the next batch inside PostgreSQL (the rest of the backlog would otherwise be
        # consumed before a loaded machine has stopped the server).
        blocker = await asyncpg.connect(settings.plain_database_url)
        await blocker.execute('BEGIN; LOCK TABLE "ExecutionRecord" IN ACCESS EXCLUSIVE MODE')
        while not await blocker.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND application_name = 'routing-persistence'"
        ):
            assert time.monotonic() < deadline, "no batch reached the locked table"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(private_stack.down, "postgres")
        blocker.terminate()
        # A fresh deadline: stopping PostgreSQL takes a while on a loaded machine.
        deadline = time.monotonic() + 120
        while _retries(service) == 0:  # a batch is in hand, its apply failing
            assert time.monotonic() < deadline, "no apply was retried"
            await asyncio.sleep(0.05)
        seen = [await committed_offsets(settings)]
        await asyncio.sleep(1.0)
        seen.append(await committed_offsets(settings))
        # The batch in hand can never be applied: the shutdown gives up on it, uncommitted.
        service.request_stop()
        code = await asyncio.wait_for(asyncio.shield(task), 30)
    finally:
        if not task.done():  # close its clients here, not in a later test's garbage collection
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert code == 1
    committed = await committed_offsets(settings)
    assert seen[0] == seen[1] == committed, "offsets moved while PostgreSQL was down"
    assert 0 < sum(committed.values()) < total

    # PostgreSQL back with no consumer running: it holds exactly what was durable at the loss.
    await asyncio.to_thread(private_stack.up, "postgres")
    stored = await _stored_versions(settings.plain_database_url)
    needed: Versions = {}
    below = 0
    for topic in settings.source_topics:
        for record in await read_topic(settings, topic):
            tp_committed = committed.get(TopicPartition(record.topic, record.partition), 0)
            if record.offset >= tp_committed or record.value not in valid_values:
                continue
            below += 1
            env = json.loads(record.value)
            row = env["tenantId"] if env["type"] == "tenant.policy" else env["requestId"]
            version = (datetime.fromisoformat(env["occurredAt"]), uuid.UUID(env["eventId"]))
            key = (env["type"], row)
            needed[key] = max(needed.get(key, version), version)
    assert below > 0
    missing = [key for key in needed if key not in stored]
    older = [key for key, version in needed.items() if key in stored and stored[key] < version]
    assert not missing, f"committed past rows PostgreSQL does not hold, e.g. {missing[:3]}"
    assert not older, f"committed past versions PostgreSQL does not hold, e.g. {older[:3]}"

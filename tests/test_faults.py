"""Faults of the services the consumer depends on, on a private stack the test may stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from consumer.demo.sample import make_sample, publish_sample, seed_database
from consumer.ops.migrate import upgrade
from consumer.service.service import Service
from consumer.settings import Settings
from tests.conftest import Database, PrivateStack, create_topics
from tests.service_helpers import (
    actual_state,
    assert_dead_letters_match,
    assert_same_state,
    committed_offsets,
    dead_letters,
    expected_state,
    http_get,
    metric_sum,
    parse_metrics,
    running_service,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_MAX_PAYLOAD = 8192


async def _wait_status(port: int, path: str, status: int, within: float) -> float:
    """Poll ``path`` until it answers ``status``; returns how long that took."""
    started = time.monotonic()
    while True:
        got, body = await http_get(port, path)
        if got == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{path} still {got}: {body}"
        await asyncio.sleep(0.1)


async def test_postgres_down_for_ten_seconds_mid_stream(
    settings: Settings, private_stack: PrivateStack
) -> None:
    await asyncio.to_thread(private_stack.up, "postgres")
    settings = settings.model_copy(
        update={
            "database_url": SecretStr(private_stack.database_url),
            "max_payload_bytes": _MAX_PAYLOAD,
            "batch_max_records": 200,
        }
    )
    await asyncio.to_thread(upgrade, settings)
    sample = make_sample(2000, seed=9, tenants=8, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    half = len(sample.records) // 2

    async with running_service(settings) as service:
        port = service.metrics_port
        assert port is not None
        published = await publish_sample(settings, sample.records[:half])
        await wait_caught_up(settings)
        before = await committed_offsets(settings)

        await asyncio.to_thread(private_stack.down, "postgres")
        down_at = time.monotonic()
        published += await publish_sample(settings, sample.records[half:])
        await _wait_status(port, "/readyz", 503, within=10)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        # Down for 10 s: alive (restarting would not help), nothing committed past the outage.
        assert (await http_get(port, "/healthz"))[0] == 200
        assert await committed_offsets(settings) == before
        await asyncio.to_thread(private_stack.up, "postgres")

        await wait_caught_up(settings, within=60)
        await _wait_status(port, "/readyz", 200, within=15)
        samples = parse_metrics((await http_get(port, "/metrics"))[1])

    assert metric_sum(samples, "routing_consumer_db_retries_total") > 0
    assert_same_state(
        await actual_state(settings.plain_database_url),
        expected_state(published, sample.tenants, sample.execution_records),
    )
    assert_dead_letters_match(await dead_letters(settings), published, exact_once=True)


async def _until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _retries(service: Service) -> float:
    samples = parse_metrics(service.metrics.render().decode())
    return metric_sum(samples, "routing_consumer_db_retries_total")


async def _private_postgres_settings(settings: Settings, stack: PrivateStack) -> Settings:
    await asyncio.to_thread(stack.up, "postgres")
    settings = settings.model_copy(
        update={
            "database_url": SecretStr(stack.database_url),
            "max_payload_bytes": _MAX_PAYLOAD,
        }
    )
    await asyncio.to_thread(upgrade, settings)
    return settings


async def test_shutdown_gives_up_on_a_stuck_batch_after_the_timeout_uncommitted(
    settings: Settings, private_stack: PrivateStack
) -> None:
    settings = await _private_postgres_settings(settings, private_stack)
    settings = settings.model_copy(update={"shutdown_timeout_s": 2.0})
    sample = make_sample(300, seed=4, tenants=4, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    half = len(sample.records) // 2
    service = Service(settings, metrics_port=0)
    task = asyncio.create_task(service.run())
    try:
        while not service.health.is_ready():
            assert not task.done(), task.result()
            await asyncio.sleep(0.05)
        await publish_sample(settings, sample.records[:half])
        await wait_caught_up(settings)
        before = await committed_offsets(settings)
        await asyncio.to_thread(private_stack.down, "postgres")
        await publish_sample(settings, sample.records[half:])
        # A batch is in hand once the apply is being retried.
        await _until(lambda: _retries(service) > 0, within=15)
        started = time.monotonic()
        service.request_stop()
        # The database stays down: a service that did not give up would never return. The upper
        # bound is that, not a speed (on a loaded machine the closing alone took seconds).
        code = await asyncio.wait_for(asyncio.shield(task), 45)
        elapsed = time.monotonic() - started
    finally:
        if not task.done():  # close its clients here, not in a later test's garbage collection
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert code == 1
    assert 2.0 <= elapsed < 30.0, elapsed
    assert await committed_offsets(settings) == before


async def test_broker_down_at_start_and_mid_stream(
    settings: Settings, database: Database, private_stack: PrivateStack
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": private_stack.kafka_bootstrap,
            "max_payload_bytes": _MAX_PAYLOAD,
            "kafka_session_timeout_ms": 6000,
        }
    )
    sample = make_sample(1500, seed=8, tenants=6, max_payload_bytes=_MAX_PAYLOAD)
    await seed_database(settings, sample)
    half = len(sample.records) // 2
    service = Service(settings, metrics_port=0)
    task = asyncio.create_task(service.run())
    try:
        # No broker at all: alive, not ready, retrying.
        await _until(lambda: service.metrics_port is not None, within=10)
        port = service.metrics_port
        assert port is not None
        await asyncio.sleep(1.0)
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/readyz"))[0] == 503
        assert not task.done()

        await asyncio.to_thread(private_stack.up, "kafka")
        # The service's consumer, retrying since the start, may ask for its topics' metadata
        # first and so have the broker auto-create them (num.partitions): either is fine here.
        await create_topics(
            private_stack.kafka_bootstrap,
            [*settings.source_topics, settings.topic_dlq],
            3,
            exist_ok=True,
        )
        await _wait_status(port, "/readyz", 200, within=60)
        published = await publish_sample(settings, sample.records[:half])
        await wait_caught_up(settings)

        await asyncio.to_thread(private_stack.down, "kafka")
        await _wait_status(port, "/readyz", 503, within=15)
        assert (await http_get(port, "/healthz"))[0] == 200
        await asyncio.to_thread(private_stack.up, "kafka")
        await _wait_status(port, "/readyz", 200, within=60)
        published += await publish_sample(settings, sample.records[half:])
        await wait_caught_up(settings, within=60)
        service.request_stop()
        assert await asyncio.wait_for(asyncio.shield(task), 30) == 0
    finally:
        if not task.done():  # close its clients here, not in a later test's garbage collection
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert_same_state(
        await actual_state(database.url),
        expected_state(published, sample.tenants, sample.execution_records),
    )
    assert_dead_letters_match(await dead_letters(settings), published, exact_once=False)

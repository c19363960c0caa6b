"""Faults of the services the consumer depends on, on a private stack the test may stop."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from consumer.demo import make_sample, publish_sample, seed_database
from consumer.migrate import upgrade
from consumer.settings import Settings
from tests.conftest import PrivateStack
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

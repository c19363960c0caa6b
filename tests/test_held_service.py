"""Holding end to end with the real service: events before their rows, a restart while they are
held, the rows created afterwards; offsets, metrics, ``held``, ``replay`` and the TTL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from consumer.demo.sample import (
    create_execution_records,
    make_sample,
    publish_sample,
    seed_database,
)
from consumer.settings import Settings
from tests.conftest import Database
from tests.ops_helpers import run_cli
from tests.service_helpers import (
    actual_state,
    assert_dead_letters_match,
    assert_same_state,
    dead_letters,
    expected_state,
    http_get,
    metric_sum,
    parse_metrics,
    running_service,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

_MAX_PAYLOAD = 8192


async def _held_count(database: Database) -> int:
    rows = await database.fetch("SELECT count(*) AS n FROM routing_persistence.held_field")
    return int(rows[0]["n"])


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"{what} not within {within} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _metrics(port: int | None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    assert port is not None
    status, text = await http_get(port, "/metrics")
    assert status == 200
    return parse_metrics(text)


async def test_events_before_their_rows_are_held_across_a_restart_and_land_when_rows_appear(
    settings: Settings, database: Database
) -> None:
    settings = settings.model_copy(
        update={
            "max_payload_bytes": _MAX_PAYLOAD,
            "held_release_interval_s": 0.2,
            "lag_refresh_interval_s": 0.3,
        }
    )
    sample = make_sample(600, seed=21, tenants=6, max_payload_bytes=_MAX_PAYLOAD, late_share=0.4)
    late = sample.late_execution_records
    await seed_database(settings, sample)
    published = await publish_sample(settings, sample.records)

    # The first run: everything consumed and committed; the late rows' events are held.
    async with running_service(settings) as service:
        await wait_caught_up(settings)
        counted = await _metrics(service.metrics_port)
        held_events = metric_sum(counted, "routing_consumer_events_total", outcome="held")
        assert held_events > 0
        await _eventually(
            lambda: _gauge_equals(
                service.metrics_port, "routing_consumer_held_fields", held_events
            ),
            "the held gauge",
            30,
        )
        first = await _metrics(service.metrics_port)
    assert await _held_count(database) == held_events
    assert metric_sum(first, "routing_consumer_held_fields") == held_events
    assert metric_sum(first, "routing_consumer_held_oldest_age_seconds") > 0
    requests = {r for r, _ in late}
    rows = await database.fetch('SELECT "requestId" FROM "ExecutionRecord"')
    assert not requests & {r["requestId"] for r in rows}, "a row was created under park"

    # The operator's view while they are held.
    shown = await run_cli(
        settings, "held", "--json", "--max-age", "0", ROUTING_MAX_PAYLOAD_BYTES=str(_MAX_PAYLOAD)
    )
    assert shown.code == 1, shown.stderr  # the oldest is older than 0 s
    document = json.loads(shown.stdout)
    assert document["total"] == held_events
    assert document["with_row"] == 0

    # A replay while held: the same events, held already; nothing more is held, no letter.
    replayed = await run_cli(
        settings, "replay", "--from-beginning", ROUTING_MAX_PAYLOAD_BYTES=str(_MAX_PAYLOAD)
    )
    assert replayed.code == 0, replayed.stderr
    assert await _held_count(database) == held_events

    # Restarted; then Project A creates the rows: the fields land within seconds, by themselves.
    async with running_service(settings) as service:
        await create_execution_records(settings, late)
        took = await _eventually(
            lambda: _nothing_held(database), "the release of every held field", 30
        )
        await _eventually(
            lambda: _gauge_equals(service.metrics_port, "routing_consumer_held_fields", 0.0),
            "the held gauge back to 0",
            30,
        )
        second = await _metrics(service.metrics_port)
    assert took < 10, took
    released = metric_sum(second, "routing_consumer_released_total")
    assert released == held_events
    assert metric_sum(second, "routing_consumer_released_total", outcome="dead_lettered") == 0
    assert metric_sum(second, "routing_consumer_held_oldest_age_seconds") == 0

    rows_now = sample.execution_records + late
    assert_same_state(
        await actual_state(database.url), expected_state(published, sample.tenants, rows_now)
    )
    # Only the sample's bad records are letters (the replay wrote its own copies of them).
    letters = await dead_letters(settings)
    assert_dead_letters_match(
        [letter for letter in letters if letter.headers["dlq.group"] == settings.group_id],
        published,
    )


async def _nothing_held(database: Database) -> bool:
    return await _held_count(database) == 0


async def _gauge_equals(port: int | None, name: str, value: float) -> bool:
    """Whether gauge ``name`` is ``value`` now."""
    return metric_sum(await _metrics(port), name) == value


async def test_held_fields_past_the_ttl_are_dead_lettered_as_row_missing(
    settings: Settings, database: Database
) -> None:
    settings = settings.model_copy(
        update={
            "max_payload_bytes": _MAX_PAYLOAD,
            "held_release_interval_s": 0.2,
            "missing_row_ttl": timedelta(seconds=2),
        }
    )
    sample = make_sample(200, seed=4, tenants=3, max_payload_bytes=_MAX_PAYLOAD, late_share=0.3)
    await seed_database(settings, sample)
    published = await publish_sample(settings, sample.records)
    async with running_service(settings) as service:
        await wait_caught_up(settings)
        await _eventually(lambda: _nothing_held(database), "the expiry", 30)
        samples = await _metrics(service.metrics_port)
    held = metric_sum(samples, "routing_consumer_events_total", outcome="held")
    assert held > 0
    assert metric_sum(samples, "routing_consumer_dead_letters_total", reason="row_missing") == held
    letters = await dead_letters(settings)
    missing = [letter for letter in letters if letter.reason == "row_missing"]
    assert len(missing) == held
    late = {r.encode() for r, _ in sample.late_execution_records}
    sent = {(r.key, r.value) for r in published}
    for letter in missing:
        assert letter.key in late
        assert (letter.key, letter.value) in sent  # the original bytes
        assert letter.headers["dlq.group"] == settings.group_id
    rows = await database.fetch('SELECT count(*) AS n FROM "ExecutionRecord"')
    assert rows[0]["n"] == len(sample.execution_records)  # and no row created


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("604800", 604_800),
        ("7d", 604_800),
        ("12h", 43_200),
        ("1.5h", 5_400),
        ("30m", 1_800),
        ("45s", 45),
        ("1w", 604_800),
        ("P7D", 604_800),
        ("PT1H30M", 5_400),
        (3, 3),
    ],
)
def test_the_ttl_takes_seconds_a_unit_or_iso_8601(given: object, seconds: float) -> None:
    settings = Settings.model_validate({"missing_row_ttl": given})
    assert settings.missing_row_ttl == timedelta(seconds=seconds)
    assert Settings().missing_row_ttl == timedelta(days=7)
    assert Settings().missing_row_policy == "park"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ROUTING_MISSING_ROW_TTL", "soon", "is not a duration: give seconds (604800)"),
        ("ROUTING_MISSING_ROW_TTL", "0", "the duration must be positive"),
        ("ROUTING_MISSING_ROW_TTL", "-3d", "the duration must be positive"),
        ("ROUTING_MISSING_ROW_POLICY", "hold", "missing_row_policy"),
    ],
)
async def test_a_bad_missing_row_setting_exits_2_naming_it(
    settings: Settings, variable: str, value: str, message: str
) -> None:
    env: dict[str, str] = {variable: value}
    result = await run_cli(settings, "held", time_limit_s=60.0, **env)
    assert result.code == 2, result.stderr
    assert "configuration error" in result.stderr
    assert message in result.stderr
    if variable.endswith("_TTL"):
        assert "missing_row_ttl" in result.stderr


async def test_held_exits_2_on_a_database_that_was_never_migrated(
    settings: Settings, empty_database: Database
) -> None:
    result = await run_cli(settings, "held", ROUTING_DATABASE_URL=empty_database.url)
    assert result.code == 2, result.stderr
    assert "cannot read the held fields" in result.stderr

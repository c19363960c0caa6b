"""``routing-persistence run`` as a real process: SIGTERM, SIGKILL and a group of two.

Each test sends a seeded sample (duplicates, late versions, bad records), disturbs the consumer
processes, and then checks what a user would: the rows in PostgreSQL are the newest valid event
per row and field, every bad record is on the dead-letter topic with its reason, and the group's
committed offsets reach the end offsets.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.demo.sample import Sample, SampleRecord, make_sample, publish_sample, seed_database
from consumer.settings import Settings
from tests.conftest import Database, Services, Topics, free_port, unique
from tests.service_helpers import (
    CLI,
    ConsumerProcess,
    actual_state,
    assert_dead_letters_match,
    assert_same_state,
    committed_offsets,
    dead_letters,
    end_offsets,
    expected_state,
    lagging_partitions,
    running_service,
    settings_env,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

_MAX_PAYLOAD = 8192


@pytest.fixture
def process_settings(settings: Settings) -> Settings:
    """Small batches (many commits to be interrupted) and the broker's shortest session."""
    return settings.model_copy(
        update={
            "max_payload_bytes": _MAX_PAYLOAD,
            "batch_max_records": 100,
            "kafka_session_timeout_ms": 6000,
            "shutdown_timeout_s": 15.0,
        }
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ConsumerProcess]]:
    """Consumer processes started by a test; any still running are killed afterwards."""
    started: list[ConsumerProcess] = []
    yield started
    for proc in started:
        proc.cleanup()


def _spawn(settings: Settings, processes: list[ConsumerProcess], tmp_path: Path) -> ConsumerProcess:
    proc = ConsumerProcess(
        settings, tmp_path / f"consumer-{len(processes)}.log", metrics_port=free_port()
    )
    processes.append(proc)
    return proc


async def _sample(settings: Settings, events: int, seed: int) -> tuple[Sample, list[SampleRecord]]:
    sample = make_sample(events, seed=seed, tenants=10, max_payload_bytes=_MAX_PAYLOAD)
    rng = random.Random(seed)
    records = [r for r in sample.records for _ in range(rng.randint(1, 2))]
    rng.shuffle(records)
    await seed_database(settings, sample)
    return sample, records


async def _assert_outcome(
    settings: Settings,
    database: Database,
    sample: Sample,
    published: list[SampleRecord],
    *,
    exact_once: bool,
) -> None:
    ends = await end_offsets(settings, settings.source_topics)
    assert await committed_offsets(settings) == {tp: n for tp, n in ends.items() if n > 0}
    assert_same_state(
        await actual_state(database.url),
        expected_state(published, sample.tenants, sample.execution_records),
    )
    assert_dead_letters_match(await dead_letters(settings), published, exact_once=exact_once)


async def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    process_settings: Settings,
    database: Database,
    processes: list[ConsumerProcess],
    tmp_path: Path,
) -> None:
    settings = process_settings
    sample, records = await _sample(settings, 3000, seed=21)
    consumer = _spawn(settings, processes, tmp_path)
    await consumer.wait_ready()
    publishing = asyncio.create_task(publish_sample(settings, records, rate=4000))
    # Mid-stream: once something is committed and the rest is still coming.
    deadline = time.monotonic() + 30
    while not await committed_offsets(settings):
        assert time.monotonic() < deadline, consumer.tail()
        await asyncio.sleep(0.05)
    started = time.monotonic()
    code = await consumer.terminate()
    elapsed = time.monotonic() - started
    assert code == 0, consumer.tail()
    assert elapsed < settings.shutdown_timeout_s, f"took {elapsed:.1f} s"
    assert '"consumer.stopped"' in consumer.log_path.read_text()
    published = await publishing

    # What it committed, it had applied: a successor resumes there and the end state is exact,
    # with every bad record dead-lettered exactly once (a clean stop repeats nothing).
    successor = _spawn(settings, processes, tmp_path)
    await successor.wait_ready()
    await wait_caught_up(settings)
    assert await successor.terminate() == 0, successor.tail()
    await _assert_outcome(settings, database, sample, published, exact_once=True)


@pytest.mark.slow
async def test_sigkill_at_random_points_loses_nothing(
    process_settings: Settings,
    database: Database,
    processes: list[ConsumerProcess],
    tmp_path: Path,
) -> None:
    settings = process_settings
    sample, records = await _sample(settings, 25_000, seed=33)
    published = await publish_sample(settings, records)  # a backlog: every kill is mid-stream
    rng = random.Random(33)
    consumer = _spawn(settings, processes, tmp_path)
    for _ in range(3):
        await consumer.wait_ready()
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        assert await lagging_partitions(settings), "caught up before the kill: grow the backlog"
        consumer.kill()
        consumer = _spawn(settings, processes, tmp_path)
    await consumer.wait_ready()
    await wait_caught_up(settings, within=90)
    assert await consumer.terminate() == 0, consumer.tail()
    # A kill between a dead letter and its offset commit writes the letter again on redelivery.
    await _assert_outcome(settings, database, sample, published, exact_once=False)


@pytest.mark.slow
@pytest.mark.partitions(6)
async def test_two_consumers_share_the_group_and_survive_losing_one(
    process_settings: Settings,
    database: Database,
    processes: list[ConsumerProcess],
    tmp_path: Path,
) -> None:
    settings = process_settings
    sample, records = await _sample(settings, 6000, seed=44)
    first = _spawn(settings, processes, tmp_path)
    second = _spawn(settings, processes, tmp_path)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    publishing = asyncio.create_task(publish_sample(settings, records, rate=2000))
    await asyncio.sleep(1.0)
    second.kill()  # mid-stream; its partitions move to the first after the session timeout
    published = await publishing
    await wait_caught_up(settings, within=90)
    first_log = first.log_path.read_text()
    assert await first.terminate() == 0, first.tail()
    # The survivor saw at least two assignments: shared, then all partitions.
    assert first_log.count('"partitions.assigned"') >= 2, first_log[-3000:]
    await _assert_outcome(settings, database, sample, published, exact_once=False)


async def test_demo_publish_only_publishes_a_sample_the_consumer_handles(
    process_settings: Settings, database: Database
) -> None:
    settings = process_settings
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CLI), "demo", "--publish-only", "--events", "300", "--seed", "5"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    sample = make_sample(300, seed=5, max_payload_bytes=_MAX_PAYLOAD)
    assert f"published {len(sample.records)} records" in done.stdout
    async with running_service(settings):
        await wait_caught_up(settings)
    letters = await dead_letters(settings)
    assert sorted(letter.reason for letter in letters) == sorted(
        str(r.reason) for r in sample.records if r.reason is not None
    )
    rows = await database.fetch('SELECT count(*) AS n FROM "ExecutionRecord"')
    assert rows[0]["n"] > 0


async def test_demo_runs_the_whole_flow_and_exits_zero_when_everything_matched(
    process_settings: Settings, database: Database
) -> None:
    """What ``make run`` runs: topics, migrate, seed, an in-process consumer, publish, check."""
    settings = process_settings
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CLI), "demo", "--events", "400", "--rate", "0", "--seed", "8"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all accounted for" in done.stdout
    assert "lag after the run: 0 records" in done.stdout
    assert "consumer stopped with exit code 0" in done.stdout
    sample = make_sample(400, seed=8, max_payload_bytes=_MAX_PAYLOAD)
    # What a user checks on their own: the group is caught up and every bad record is a letter.
    ends = await end_offsets(settings, settings.source_topics)
    assert await committed_offsets(settings) == {tp: n for tp, n in ends.items() if n > 0}
    letters = await dead_letters(settings)
    assert sorted(letter.reason for letter in letters) == sorted(
        str(r.reason) for r in sample.records if r.reason is not None
    )


async def test_a_fatal_error_exits_one_loudly_and_commits_nothing(
    services: Services, topics: Topics, empty_database: Database
) -> None:
    # A database nobody migrated: the first apply fails with "relation does not exist", which
    # no retry can fix.
    settings = Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        database_url=empty_database.url,
        group_id=unique("group"),
        topic_snapshots=topics.snapshots,
        topic_costs=topics.costs,
        topic_policies=topics.policies,
        topic_dlq=topics.dlq,
        metrics_port=0,
    )
    sample = make_sample(100, seed=2, tenants=2, max_payload_bytes=_MAX_PAYLOAD)
    await publish_sample(settings, [r for r in sample.records if r.reason is None])
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CLI), "run"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    fatal = [line for line in done.stderr.splitlines() if '"consumer.fatal"' in line]
    assert fatal, done.stderr[-2000:]
    assert "UndefinedTable" in fatal[0] or "does not exist" in fatal[0]
    assert await committed_offsets(settings) == {}


async def test_a_metrics_port_in_use_is_a_configuration_error(process_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await asyncio.to_thread(
            subprocess.run,
            [str(CLI), "run"],
            env=settings_env(process_settings, metrics_port=port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot serve metrics on port {port}" in done.stderr

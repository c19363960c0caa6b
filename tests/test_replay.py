"""``routing-persistence replay``, run as an operator runs it, against the real stack.

The first pass is the real ``routing-persistence run``; the replay must rebuild exactly the rows it
built, without moving the main group's offsets.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from consumer.ops.migrate import upgrade
from consumer.ops.replay import STALL_TIMEOUT_S, replay_topics
from consumer.settings import Settings
from schemas import EventType, build_event, loads
from tests.conftest import Database, PrivateStack, Topics, unique
from tests.ops_helpers import (
    committed_offsets,
    cost_payload,
    end_offsets,
    headers_of,
    live_consumer,
    policy_payload,
    produce_aborted,
    produce_raw,
    read_topic,
    run_cli,
    run_consumer_until_caught_up,
    snapshot_payload,
    topic_for,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
_NO_FIELDS = {
    f"{field}{suffix}": None
    for field in ("routingSnapshot", "actualCost")
    for suffix in ("", "OccurredAt", "EventId")
}


async def _rows(database: Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of both tables, every column but Project A's "createdAt" (set by now())."""
    records = await database.fetch('SELECT * FROM "ExecutionRecord" ORDER BY "requestId"')
    tenants = await database.fetch('SELECT * FROM "Tenant" ORDER BY "id"')
    return (
        [{k: v for k, v in dict(r).items() if k != "createdAt"} for r in records],
        [dict(r) for r in tenants],
    )


async def _create_rows(database: Database, tenant_of: dict[str, str]) -> None:
    """Project A's rows (the service waits for a missing one: tests/test_held.py)."""
    for request, tenant in tenant_of.items():
        await database.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2)',
            request,
            tenant,
        )


async def _empty(database: Database) -> None:
    """Undo what the service wrote: its columns, never the owners' rows."""
    await database.execute(
        'UPDATE "ExecutionRecord" SET "routingSnapshot" = NULL, '
        '"routingSnapshotOccurredAt" = NULL, "routingSnapshotEventId" = NULL, '
        '"actualCost" = NULL, "actualCostOccurredAt" = NULL, "actualCostEventId" = NULL'
    )
    await database.execute(
        'UPDATE "Tenant" SET "routingPolicy" = NULL, "routingPolicyOccurredAt" = NULL, '
        '"routingPolicyEventId" = NULL'
    )


def _summary(stdout: str) -> dict[str, dict[str, int]]:
    """The per-type summary table of replay's plain output: {TYPE: {COLUMN: n}}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TYPE "))
    header = lines[start].split()
    table: dict[str, dict[str, int]] = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        table[cells[0]] = dict(zip(header[1:], map(int, cells[1:]), strict=True))
        if cells[0] == "TOTAL":  # the last row
            return table
    raise AssertionError(f"no TOTAL row in:\n{stdout}")


async def _publish_scenario(settings: Settings) -> dict[str, int]:
    """Snapshots and costs for 12 requests, duplicates, an out-of-order older snapshot, policies
    (one for an unknown tenant), one invalid JSON record and one tombstone."""
    events = []
    for i in range(12):
        tenant = "tenant-a" if i % 2 else "tenant-b"
        at = T0 + timedelta(seconds=i)
        events.append(
            build_event(
                EventType.SNAPSHOT,
                snapshot_payload(tenant, f"alias-{i}"),
                tenant_id=tenant,
                request_id=f"req-{i}",
                occurred_at=at,
            )
        )
        events.append(
            build_event(
                EventType.COST,
                cost_payload(100 + i),
                tenant_id=tenant,
                request_id=f"req-{i}",
                occurred_at=at,
            )
        )
    duplicates = events[:4]
    older = build_event(
        EventType.SNAPSHOT,
        snapshot_payload("tenant-b", "older"),
        tenant_id="tenant-b",
        request_id="req-0",
        occurred_at=T0 - timedelta(hours=1),
    )
    policies = [
        build_event(
            EventType.POLICY,
            policy_payload("tenant-a", "cost"),
            tenant_id="tenant-a",
            occurred_at=T0,
        ),
        build_event(
            EventType.POLICY,
            policy_payload("tenant-a", "latency"),
            tenant_id="tenant-a",
            occurred_at=T0 + timedelta(minutes=1),
        ),
        build_event(
            EventType.POLICY, policy_payload("tenant-b"), tenant_id="tenant-b", occurred_at=T0
        ),
        build_event(
            EventType.POLICY,
            policy_payload("tenant-ghost"),
            tenant_id="tenant-ghost",
            occurred_at=T0,
        ),
    ]
    everything = [*events, *duplicates, older, *policies]
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topic_for(settings, e.type), e.key, e.value) for e in everything
    ]
    records.append((settings.topic_snapshots, b"req-bad", b"{not json"))
    records.append((settings.topic_costs, b"req-0", None))
    await produce_raw(settings.kafka_bootstrap_servers, records)
    return {"valid": len(everything), "total": len(records)}


async def test_replay_from_beginning_rebuilds_the_rows_and_leaves_the_group_alone(
    settings: Settings, database: Database
) -> None:
    await database.execute(
        """INSERT INTO "Tenant" ("id", "name") VALUES ('tenant-a', 'A'), ('tenant-b', 'B')"""
    )
    await _create_rows(
        database, {f"req-{i}": "tenant-a" if i % 2 else "tenant-b" for i in range(12)}
    )
    counts = await _publish_scenario(settings)
    await run_consumer_until_caught_up(settings)
    first_records, first_tenants = await _rows(database)
    assert len(first_records) == 12
    assert all(r["routingSnapshot"] and r["actualCost"] for r in first_records)
    assert {t["id"]: loads(t["routingPolicy"])["defaultStrategy"] for t in first_tenants} == {
        "tenant-a": "latency",
        "tenant-b": "cost",
    }
    committed_before = await committed_offsets(settings.kafka_bootstrap_servers, settings.group_id)
    letters_before = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)
    assert sorted(headers_of(r)["dlq.reason"] for r in letters_before) == [
        "invalid_json",
        "unknown_tenant",
    ]

    await _empty(database)

    # Dry run: validates and counts, writes nothing anywhere.
    dry = await run_cli(settings, "replay", "--from-beginning", "--dry-run")
    assert dry.code == 0, dry.stderr
    table = _summary(dry.stdout)
    assert table["TOTAL"] == {
        "VALID": counts["valid"],
        "DEAD_LETTERED": 1,
        "IGNORED": 1,
        "TOTAL": counts["total"],
    }
    assert table["routing.snapshot"]["VALID"] == 12 + 2 + 1
    assert table["tenant.policy"]["VALID"] == 4
    assert await _rows(database) == (
        [{**r, **_NO_FIELDS} for r in first_records],
        [
            {
                **t,
                "routingPolicy": None,
                "routingPolicyOccurredAt": None,
                "routingPolicyEventId": None,
            }
            for t in first_tenants
        ],
    )
    assert len(await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)) == 2

    # The replay rebuilds exactly what the live consumer built.
    replayed = await run_cli(settings, "replay", "--from-beginning")
    assert replayed.code == 0, replayed.stderr
    assert f"replay: {counts['total']}/{counts['total']} records (100.0%)" in replayed.stdout
    table = _summary(replayed.stdout)
    assert table["TOTAL"]["TOTAL"] == counts["total"]
    assert table["TOTAL"]["DEAD_LETTERED"] == 2  # invalid JSON, unknown tenant
    assert table["TOTAL"]["IGNORED"] == 1
    assert table["TOTAL"]["APPLIED"] + table["TOTAL"]["STALE"] == counts["valid"] - 1
    assert await _rows(database) == (first_records, first_tenants)

    # The main group's offsets did not move; the replay's dead letters say who wrote them.
    assert (
        await committed_offsets(settings.kafka_bootstrap_servers, settings.group_id)
        == committed_before
    )
    letters = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)
    seen = {(r.partition, r.offset) for r in letters_before}
    new = [headers_of(r) for r in letters if (r.partition, r.offset) not in seen]
    assert len(letters) == 4
    assert {h["dlq.group"] for h in new} == {f"{settings.group_id}.replay"}
    assert sorted(h["dlq.reason"] for h in new) == ["invalid_json", "unknown_tenant"]


async def test_replay_never_applies_records_of_aborted_transactions(
    settings: Settings, database: Database
) -> None:
    def snapshot(n: int, alias: str, minutes: int) -> Any:
        return build_event(
            EventType.SNAPSHOT,
            snapshot_payload("tenant-t", alias),
            tenant_id="tenant-t",
            request_id=f"req-{n}",
            occurred_at=T0 + timedelta(minutes=minutes),
        )

    async def publish(events: list[Any]) -> None:
        await produce_raw(
            settings.kafka_bootstrap_servers,
            [(settings.topic_snapshots, e.key, e.value) for e in events],
        )

    await _create_rows(database, {f"req-{n}": "tenant-t" for n in range(7)})
    committed = [snapshot(n, "committed-1", 1) for n in range(6)]
    await publish(committed)
    # What the rows are without the aborted records: the replay of the committed ones alone.
    first = await run_cli(settings, "replay", "--from-beginning")
    assert first.code == 0, first.stderr
    without = await _rows(database)
    assert [r["routingSnapshot"] is None for r in without[0]] == [False] * 6 + [True]
    assert {
        loads(r["routingSnapshot"])["resolvedAlias"] for r in without[0] if r["routingSnapshot"]
    } == {"committed-1"}
    await _empty(database)

    # Newest-looking versions of every row (and a row of their own), in a transaction that a
    # real transactional producer aborts; then more committed records after them, so the
    # replay has to read past the aborted ones to reach its end offsets.
    aborted = [snapshot(n, "aborted", 60) for n in range(7)]
    positions = await produce_aborted(
        settings.kafka_bootstrap_servers,
        [(settings.topic_snapshots, e.key, e.value) for e in aborted],
    )
    assert len(positions) == 7
    await publish(committed)  # the same events again: stale

    # In process, through the public coroutine, then as an operator runs it.
    assert await replay_topics(settings, since=None) == 0
    assert await _rows(database) == without
    await _empty(database)
    replayed = await run_cli(settings, "replay", "--from-beginning")
    assert replayed.code == 0, replayed.stderr
    assert await _rows(database) == without
    totals = _summary(replayed.stdout)["TOTAL"]
    assert (totals["APPLIED"], totals["STALE"], totals["TOTAL"]) == (6, 6, 12)
    dlq_ends = await end_offsets(settings.kafka_bootstrap_servers, [settings.topic_dlq])
    assert sum(dlq_ends.values()) == 0, "no dead letter either"

    # A dry run counts only the committed records too.
    dry = await run_cli(settings, "replay", "--from-beginning", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert _summary(dry.stdout)["TOTAL"] == {
        "VALID": 12,
        "DEAD_LETTERED": 0,
        "IGNORED": 0,
        "TOTAL": 12,
    }


async def test_replay_since_until_topic_window(
    settings: Settings, database: Database, topics: Topics
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await _create_rows(database, {f"req-{n}": "tenant-x" for n in (0, 1, 2, 9)})
    stamps = [now - timedelta(hours=h) for h in (3, 2, 1)]
    for n, stamp in enumerate(stamps):
        event = build_event(
            EventType.SNAPSHOT,
            snapshot_payload("tenant-x"),
            tenant_id="tenant-x",
            request_id=f"req-{n}",
        )
        await produce_raw(
            settings.kafka_bootstrap_servers,
            [(settings.topic_snapshots, event.key, event.value)],
            partition=0,
            timestamp_ms=int(stamp.timestamp() * 1000),
        )
    # A cost event inside the window but on a topic not asked for.
    cost = build_event(EventType.COST, cost_payload(5), tenant_id="tenant-x", request_id="req-9")
    await produce_raw(
        settings.kafka_bootstrap_servers,
        [(settings.topic_costs, cost.key, cost.value)],
        timestamp_ms=int((now - timedelta(hours=2)).timestamp() * 1000),
    )
    window = await run_cli(
        settings,
        "replay",
        "--since",
        (now - timedelta(hours=2, minutes=30)).isoformat(),
        "--until",
        (now - timedelta(hours=1, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),  # naive = UTC
        "--topic",
        settings.topic_snapshots,
        "--partition",
        "0",
    )
    assert window.code == 0, window.stderr
    rows = await database.fetch(
        'SELECT "requestId" FROM "ExecutionRecord" '
        'WHERE "routingSnapshot" IS NOT NULL OR "actualCost" IS NOT NULL'
    )
    assert [r["requestId"] for r in rows] == ["req-1"]
    assert _summary(window.stdout)["TOTAL"]["APPLIED"] == 1


async def test_replay_usage_errors_exit_2(settings: Settings) -> None:
    missing = unique("missing")
    result = await run_cli(settings, "replay", "--from-beginning", "--topic", missing)
    assert result.code == 2
    assert f"topic(s) not found on the broker: {missing}" in result.stderr
    result = await run_cli(settings, "replay", "--from-beginning", "--partition", "99")
    assert result.code == 2
    assert "partition(s) 99 exist in none of" in result.stderr
    result = await run_cli(settings, "replay")
    assert result.code == 2
    assert "exactly one of --from-beginning or --since" in result.stderr
    result = await run_cli(
        settings, "replay", "--since", "2026-11-25T10:00:00Z", "--until", "2026-11-25T09:00:00Z"
    )
    assert result.code == 2
    assert "--until is before --since" in result.stderr


async def test_replay_with_nothing_to_read_says_so(settings: Settings) -> None:
    result = await run_cli(settings, "replay", "--from-beginning")
    assert result.code == 0, result.stderr
    assert _summary(result.stdout)["TOTAL"]["TOTAL"] == 0
    assert f"the offsets of group {settings.group_id!r} were not touched" in result.stdout


async def test_replay_beside_a_live_consumer_never_moves_rows_backwards(
    settings: Settings, database: Database
) -> None:
    def snapshot(n: int, version: int) -> Any:
        return build_event(
            EventType.SNAPSHOT,
            snapshot_payload("tenant-live", f"v{version}"),
            tenant_id="tenant-live",
            request_id=f"req-{n}",
            occurred_at=T0 + timedelta(minutes=version),
        )

    async def publish(version: int) -> None:
        events = [snapshot(n, version) for n in range(40)]
        await produce_raw(
            settings.kafka_bootstrap_servers,
            [(settings.topic_snapshots, e.key, e.value) for e in events],
        )

    await _create_rows(database, {f"req-{n}": "tenant-live" for n in range(40)})
    await publish(1)
    await publish(2)
    async with live_consumer(settings) as process:
        await wait_caught_up(settings, process)
        # Replay every old version while the live consumer applies a newer one.
        replay = asyncio.create_task(run_cli(settings, "replay", "--from-beginning"))
        await publish(3)
        result = await replay
        assert result.code == 0, result.stderr
        await wait_caught_up(settings, process)
        ends = await end_offsets(settings.kafka_bootstrap_servers, settings.source_topics)
        committed = await committed_offsets(settings.kafka_bootstrap_servers, settings.group_id)
    assert {tp: committed.get(tp, 0) for tp in ends} == ends
    rows = await database.fetch('SELECT "routingSnapshot" FROM "ExecutionRecord"')
    assert len(rows) == 40
    assert {loads(r["routingSnapshot"])["resolvedAlias"] for r in rows} == {"v3"}


@pytest.mark.slow
async def test_replay_waits_out_a_database_outage_longer_than_its_stall_timeout(
    settings: Settings, private_stack: PrivateStack
) -> None:
    # The replay's database is a private PostgreSQL this test may stop; Kafka is the shared one.
    await asyncio.to_thread(private_stack.up, "postgres")
    await asyncio.to_thread(upgrade, Settings(database_url=private_stack.database_url), sql=False)
    settings = settings.model_copy(update={"database_url": SecretStr(private_stack.database_url)})
    await _create_rows(
        Database("routing", private_stack.database_url, private_stack.database_url),
        {f"req-{i}": "tenant-o" for i in range(20)},
    )
    events = [
        build_event(EventType.COST, cost_payload(i), tenant_id="tenant-o", request_id=f"req-{i}")
        for i in range(20)
    ]
    await produce_raw(
        settings.kafka_bootstrap_servers,
        [(settings.topic_costs, e.key, e.value) for e in events],
    )
    await asyncio.to_thread(private_stack.down, "postgres")
    # Several batches, so reading goes on after the batch that waited for the database.
    replay = asyncio.create_task(
        run_cli(settings, "replay", "--from-beginning", ROUTING_BATCH_MAX_RECORDS="5")
    )
    # Longer than STALL_TIMEOUT_S: time spent retrying a batch is not a stalled fetch.
    await asyncio.sleep(STALL_TIMEOUT_S + 3)
    assert not replay.done()
    await asyncio.to_thread(private_stack.up, "postgres")
    result = await replay
    assert result.code == 0, result.stderr[-3000:]
    assert _summary(result.stdout)["TOTAL"]["APPLIED"] == 20
    assert '"event": "retry.scheduled"' in result.stderr
    assert '"operation": "database"' in result.stderr
    conn = await asyncpg.connect(private_stack.database_url)
    try:
        assert await conn.fetchval('SELECT count(*) FROM "ExecutionRecord"') == 20
    finally:
        await conn.close()

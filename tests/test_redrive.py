"""``routing-persistence dlq redrive``, run as an operator runs it, against the real stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.settings import Settings
from schemas import EventType, build_event, loads
from tests.conftest import Database, unique
from tests.ops_helpers import (
    end_offsets,
    headers_of,
    policy_payload,
    produce_aborted,
    produce_raw,
    read_topic,
    run_cli,
    run_consumer_until_caught_up,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _policy(tenant: str, minutes: int = 0) -> Any:
    return build_event(
        EventType.POLICY,
        policy_payload(tenant),
        tenant_id=tenant,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


async def test_redrive_applies_unknown_tenant_policies_once_the_tenants_exist(
    settings: Settings, database: Database
) -> None:
    await database.execute("""INSERT INTO "Tenant" ("id", "name") VALUES ('known', 'K')""")
    ghosts = [_policy("ghost-1"), _policy("ghost-2")]
    await produce_raw(
        settings.kafka_bootstrap_servers,
        [
            *[(settings.topic_policies, e.key, e.value) for e in ghosts],
            (settings.topic_policies, _policy("known").key, _policy("known").value),
            (settings.topic_policies, b"known", b"{broken"),
        ],
    )
    await run_consumer_until_caught_up(settings)
    letters = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)
    assert sorted(headers_of(r)["dlq.reason"] for r in letters) == [
        "invalid_json",
        "unknown_tenant",
        "unknown_tenant",
    ]
    assert await database.fetch('SELECT "id" FROM "Tenant" WHERE "routingPolicy" IS NULL') == []

    # Project C creates the missing tenants; the operator redrives the unknown_tenant letters.
    await database.execute(
        """INSERT INTO "Tenant" ("id", "name") VALUES ('ghost-1', 'G1'), ('ghost-2', 'G2')"""
    )
    result = await run_cli(settings, "dlq", "redrive", "--reason", "unknown_tenant")
    assert result.code == 0, result.stderr
    assert "redriven: 2, refused: 0, superseded: 0" in result.stdout
    assert f"2 x unknown_tenant -> {settings.topic_policies}" in result.stdout

    # Published back with the original key and bytes, and a redrive count of 1.
    republished = [
        r
        for r in await read_topic(settings.kafka_bootstrap_servers, settings.topic_policies)
        if "dlq.redrive-count" in headers_of(r)
    ]
    assert sorted((r.key, r.value) for r in republished) == sorted((e.key, e.value) for e in ghosts)
    assert {headers_of(r)["dlq.redrive-count"] for r in republished} == {"1"}

    await run_consumer_until_caught_up(settings)
    rows = await database.fetch(
        """SELECT "id", "routingPolicy" FROM "Tenant" WHERE "id" LIKE 'ghost-%' ORDER BY "id" """
    )
    assert [(r["id"], loads(r["routingPolicy"].encode())) for r in rows] == [
        ("ghost-1", policy_payload("ghost-1")),
        ("ghost-2", policy_payload("ghost-2")),
    ]
    # Nothing failed again: the dead-letter topic holds only the first three letters.
    assert len(await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)) == 3


async def test_redrive_stops_after_three_attempts_of_a_record_that_keeps_failing(
    settings: Settings, database: Database
) -> None:
    ghost = _policy("never-created")
    await produce_raw(
        settings.kafka_bootstrap_servers, [(settings.topic_policies, ghost.key, ghost.value)]
    )
    await run_consumer_until_caught_up(settings)
    for attempt in (1, 2, 3):
        result = await run_cli(settings, "dlq", "redrive")
        assert result.code == 0, result.stderr
        assert f"redriven: 1, refused: 0, superseded: {attempt - 1}" in result.stdout
        await run_consumer_until_caught_up(settings)
        letters = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq)
        assert len(letters) == attempt + 1
        newest = headers_of(letters[-1])
        assert newest["dlq.reason"] == "unknown_tenant"
        assert newest["dlq.redrive-count"] == str(attempt)
        assert (letters[-1].key, letters[-1].value) == (ghost.key, ghost.value)

    refused = await run_cli(settings, "dlq", "redrive")
    assert refused.code == 0, refused.stderr
    assert "redriven: 0, refused: 1, superseded: 3" in refused.stdout
    assert "redriven 3 times already" in refused.stdout
    policies_before = await end_offsets(settings.kafka_bootstrap_servers, [settings.topic_policies])
    await run_cli(settings, "dlq", "redrive")
    assert (
        await end_offsets(settings.kafka_bootstrap_servers, [settings.topic_policies])
        == policies_before
    )


def _letter_headers(
    reason: str, topic: str, *, count: int | None = None, redrive_of: str | None = None
) -> list[tuple[str, bytes]]:
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.error", f"because {reason}".encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", b"0"),
        ("dlq.offset", b"7"),
        ("dlq.timestamp", b"1764057600000"),
        ("dlq.group", b"routing-persistence"),
    ]
    if count is not None:
        headers.append(("dlq.redrive-count", str(count).encode()))
    if redrive_of is not None:
        headers.append(("dlq.redrive-of", redrive_of.encode()))
    return headers


async def test_redrive_dry_run_lists_decisions_and_filters_select(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    dlq = settings.topic_dlq
    letters = [
        ("unknown_tenant", settings.topic_policies, None, None),  # offset 0: superseded by 3
        ("schema_violation", settings.topic_snapshots, None, None),  # offset 1
        ("unknown_tenant", settings.topic_policies, 3, None),  # offset 2: limit reached
        ("unknown_tenant", settings.topic_policies, 1, f"{dlq}/0/0"),  # offset 3
        ("tenant_mismatch", unique("elsewhere"), None, None),  # offset 4: not a source topic
    ]
    for n, (reason, topic, count, of) in enumerate(letters):
        await produce_raw(
            bootstrap,
            [(dlq, f"key-{n}".encode(), f'{{"n": {n}}}'.encode())],
            partition=0,
            headers=_letter_headers(reason, topic, count=count, redrive_of=of),
        )
    sources_before = await end_offsets(bootstrap, settings.source_topics)

    dry = await run_cli(settings, "dlq", "redrive", "--dry-run")
    assert dry.code == 0, dry.stderr
    rows = {
        int(line.split()[1]): line for line in dry.stdout.splitlines() if line.split()[:1] == ["0"]
    }
    assert "superseded" in rows[0]
    assert rows[1].split()[4:7] == ["schema_violation", settings.topic_snapshots, "key-1"]
    assert rows[1].split()[8] == "redrive"
    assert "refused (redriven 3 times already)" in rows[2]
    assert rows[3].split()[8] == "redrive"
    assert "is not a source topic" in rows[4]
    assert "would redrive: 2, refused: 2, superseded: 1" in dry.stdout
    assert await end_offsets(bootstrap, settings.source_topics) == sources_before

    only = await run_cli(settings, "dlq", "redrive", "--reason", "schema_violation")
    assert only.code == 0, only.stderr
    assert "redriven: 1, refused: 0, superseded: 0" in only.stdout
    snapshots = await read_topic(bootstrap, settings.topic_snapshots)
    assert [(r.key, r.value) for r in snapshots] == [(b"key-1", b'{"n": 1}')]
    headers = headers_of(snapshots[0])
    assert headers == {"dlq.redrive-count": "1", "dlq.redrive-of": f"{dlq}/0/1"}

    limited = await run_cli(settings, "dlq", "redrive", "--limit", "1", "--dry-run")
    assert "would redrive: 1," in limited.stdout

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = await run_cli(settings, "dlq", "redrive", "--since", future)
    assert none.code == 0, none.stderr
    assert "redriven: 0, refused: 0, superseded: 0" in none.stdout


async def test_redrive_exit_2_when_the_dead_letter_topic_is_missing(settings: Settings) -> None:
    missing = unique("missing-dlq")
    result = await run_cli(settings, "dlq", "redrive", ROUTING_TOPIC_DLQ=missing)
    assert result.code == 2
    assert f"topic(s) not found on the broker: {missing}" in result.stderr


async def test_redrive_never_republishes_dead_letters_of_aborted_transactions(
    settings: Settings,
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    dlq = settings.topic_dlq
    headers = _letter_headers("unknown_tenant", settings.topic_policies)
    await produce_raw(bootstrap, [(dlq, b"kept", b'{"n": "kept"}')], partition=0, headers=headers)
    await produce_aborted(
        bootstrap,
        [(dlq, f"aborted-{n}".encode(), f'{{"n": {n}}}'.encode()) for n in range(3)],
        partition=0,
        headers=headers,
    )
    await produce_raw(bootstrap, [(dlq, b"later", b'{"n": "later"}')], partition=0, headers=headers)

    dry = await run_cli(settings, "dlq", "redrive", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "would redrive: 2, refused: 0, superseded: 0" in dry.stdout
    assert "aborted-" not in dry.stdout
    result = await run_cli(settings, "dlq", "redrive")
    assert result.code == 0, result.stderr
    assert "redriven: 2, refused: 0, superseded: 0" in result.stdout
    republished = await read_topic(bootstrap, settings.topic_policies)
    assert sorted(r.key for r in republished) == [b"kept", b"later"]


async def test_redrive_republishes_the_original_records_headers(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    dlq = settings.topic_dlq
    original = [
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("baggage", b"tenant=a"),
        ("baggage", b"region=eu"),  # a repeated name keeps both values, in order
        ("x-binary", b"\xff\x00\xfe"),  # not UTF-8: sent back byte for byte
    ]
    # As the dead-letter writer lays them out: the original's headers next to the dlq.* ones.
    headers = [*original, *_letter_headers("unknown_tenant", settings.topic_policies)]
    await produce_raw(bootstrap, [(dlq, b"tenant-a", b'{"n": 1}')], partition=0, headers=headers)

    result = await run_cli(settings, "dlq", "redrive")
    assert result.code == 0, result.stderr
    assert "redriven: 1, refused: 0, superseded: 0" in result.stdout
    [record] = await read_topic(bootstrap, settings.topic_policies)
    assert (record.key, record.value) == (b"tenant-a", b'{"n": 1}')
    assert list(record.headers) == [
        *original,
        ("dlq.redrive-count", b"1"),
        ("dlq.redrive-of", f"{dlq}/0/0".encode()),
    ]

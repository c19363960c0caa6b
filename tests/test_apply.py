"""The set-based apply path against a real, migrated PostgreSQL: rows are what CONTRACT §3 says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import create_engine
from consumer.outcomes import Outcome
from consumer.pipeline.apply import apply_events
from consumer.pipeline.sql import SEPARATOR, round_sql
from consumer.pipeline.statement import literal
from consumer.settings import MissingRowPolicy, Settings
from consumer.tables import EXECUTION_RECORD
from schemas import ReasonCode
from tests.apply_helpers import (
    apply_in_transaction,
    at,
    cost,
    engine_for,
    pending,
    policy,
    snapshot,
    with_raw_payload,
)
from tests.conftest import ROOT, Database


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    made = engine_for(database.url)
    yield made
    await made.dispose()


async def _record(database: Database, request: str) -> dict[str, Any]:
    rows = await database.fetch(
        'SELECT *, "routingSnapshot"::text AS snap_text, "actualCost"::text AS cost_text '
        'FROM "ExecutionRecord" WHERE "requestId" = $1',
        request,
    )
    assert len(rows) == 1, f"{len(rows)} rows for {request}"
    return dict(rows[0])


def _payload(value: bytes) -> Any:
    return json.loads(value)["payload"]


async def test_creates_the_row_and_stores_the_payload_of_the_original_bytes(
    engine: AsyncEngine, database: Database
) -> None:
    snap = snapshot("req-1", "t1", at(0), extraField={"nested": [1, "two"]})
    money = cost("req-1", "t1", at(1), input_usd="0.1", output_usd="0.2")

    outcome = await apply_in_transaction(engine, [snap, money])

    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED, Outcome.APPLIED]
    row = await _record(database, "req-1")
    assert row["id"] == "req-1"
    assert row["tenantId"] == "t1"
    assert row["routingSnapshotEventId"] == snap.event_id
    assert row["routingSnapshotOccurredAt"] == at(0)
    assert row["actualCostEventId"] == money.event_id
    # The stored JSON is exactly the payload of the bytes sent, unknown fields included.
    same = await database.fetch(
        "SELECT \"routingSnapshot\" = ($1::jsonb) -> 'payload' AS snap_same, "
        "\"actualCost\" = ($2::jsonb) -> 'payload' AS cost_same "
        'FROM "ExecutionRecord" WHERE "requestId" = $3',
        snap.value.decode(),
        money.value.decode(),
        "req-1",
    )
    assert same[0]["snap_same"]
    assert same[0]["cost_same"]
    assert json.loads(row["snap_text"])["extraField"] == {"nested": [1, "two"]}


async def test_decimals_stay_exact(engine: AsyncEngine, database: Database) -> None:
    event = with_raw_payload(
        cost(
            "req-d",
            "t1",
            at(0),
            input_usd="0.1",
            output_usd="0.0000001",
            tinyUnknown="TINY",
            hugeUnknown="HUGE",
        ),
        "TINY",
        "1.5e-7",
    )
    event = with_raw_payload(event, "HUGE", "12345678901234567890.123456789012345678901")

    await apply_in_transaction(engine, [event])

    rows = await database.fetch(
        "SELECT \"actualCost\"->'inputCostUsd' AS i, \"actualCost\"->'outputCostUsd' AS o, "
        "(\"actualCost\"->>'tinyUnknown')::numeric = 0.00000015 AS tiny, "
        "\"actualCost\"->>'hugeUnknown' AS huge, \"actualCost\"->>'totalCostUsd' AS total "
        'FROM "ExecutionRecord"'
    )
    assert rows[0]["i"] == "0.1"  # never 0.1000000000000000055511151231257827
    assert rows[0]["o"] == "0.0000001"
    assert rows[0]["tiny"] is True
    assert rows[0]["huge"] == "12345678901234567890.123456789012345678901"
    assert rows[0]["total"] == "0.1000001"


async def test_applying_twice_changes_nothing(engine: AsyncEngine, database: Database) -> None:
    events = [
        snapshot("req-a", "t1", at(0)),
        cost("req-a", "t1", at(0)),
        snapshot("req-b", "t2", at(5)),
    ]
    await apply_in_transaction(engine, events)
    before = await database.fetch('SELECT * FROM "ExecutionRecord" ORDER BY "requestId"')

    again = await apply_in_transaction(engine, events)

    assert [r.outcome for r in again.results] == [Outcome.STALE] * 3
    assert await database.fetch('SELECT * FROM "ExecutionRecord" ORDER BY "requestId"') == before


async def test_newest_version_wins_whatever_the_order(
    engine: AsyncEngine, database: Database
) -> None:
    old = snapshot("req-o", "t1", at(0), strategy="old")
    new = snapshot("req-o", "t1", at(10), strategy="new")
    # Same occurredAt: the greater eventId wins.
    tie_a = cost("req-o", "t1", at(3), provider="a")
    tie_b = cost("req-o", "t1", at(3), provider="b")
    tie_winner = max((tie_a, tie_b), key=lambda e: e.event_id)

    first = await apply_in_transaction(engine, [new, tie_a])
    second = await apply_in_transaction(engine, [old, tie_b])

    row = await _record(database, "req-o")
    assert json.loads(row["snap_text"])["strategy"] == "new"
    assert json.loads(row["cost_text"]) == _payload(tie_winner.value)
    assert second.results[0].outcome is Outcome.STALE
    assert first.results[1].outcome is Outcome.APPLIED
    assert second.results[1].outcome is (Outcome.APPLIED if tie_winner is tie_b else Outcome.STALE)


async def test_within_a_batch_only_the_newest_is_written_the_rest_are_stale(
    engine: AsyncEngine, database: Database
) -> None:
    events = [snapshot("req-c", "t1", at(s), strategy=f"s{s}") for s in (3, 9, 1, 9, 4)]
    events[3] = events[1]  # an exact duplicate of the newest

    outcome = await apply_in_transaction(engine, events)

    assert [r.outcome for r in outcome.results].count(Outcome.APPLIED) == 1
    assert [r.outcome for r in outcome.results].count(Outcome.STALE) == 4
    assert outcome.results[1].outcome is Outcome.APPLIED
    assert json.loads((await _record(database, "req-c"))["snap_text"])["strategy"] == "s9"
    assert outcome.statements == 1  # one statement for the whole field, whatever the batch


async def test_keys_tenants_and_times_of_any_shape_are_stored_exactly(
    engine: AsyncEngine, database: Database
) -> None:
    # The statement's columns go as array literals (consumer.pipeline.statement.literal):
    # characters JSON escapes differently, braces, commas, a key spelled NULL; times at the
    # ends of the contract's range and around the epoch, to the microsecond.
    keys = [
        'q"uote',
        "back\\slash",
        "line\nbreak",
        "unit\x1fsep",
        "café-東京",
        "NULL",
        "{a,b}",
        " x ",
    ]
    tenants = ["t\\1", 't"2', "t\t3", "t4", "t5", "NULL", "t,7", "é8"]
    times = [
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        at(0.000001),
        at(123.456789),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 999999, tzinfo=UTC),
    ]
    events = [
        snapshot(key, tenant, when) for key, tenant, when in zip(keys, tenants, times, strict=True)
    ]
    events.append(cost(keys[0], tenants[0], times[1]))

    outcome = await apply_in_transaction(engine, events)

    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED] * len(events)
    for key, tenant, when in zip(keys, tenants, times, strict=True):
        row = await _record(database, key)
        assert (row["tenantId"], row["routingSnapshotOccurredAt"]) == (tenant, when)
    assert (await _record(database, keys[0]))["actualCostOccurredAt"] == times[1]


async def test_a_candidate_that_loses_a_race_to_another_session_is_settled_against_the_winner(
    engine: AsyncEngine, database: Database
) -> None:
    await apply_in_transaction(engine, [snapshot("req-r", "t1", at(0)), cost("req-r", "t1", at(0))])
    winner = snapshot("req-r", "t1", at(20), strategy="winner")
    other = await database.connect()
    try:
        # Another writer (a second consumer after a rebalance) holds the row with a newer
        # snapshot, not committed yet: the batch reads the old row, then waits on its lock.
        held = other.transaction()
        await held.start()
        await other.execute(
            'UPDATE "ExecutionRecord" SET "routingSnapshot" = $1::jsonb -> \'payload\', '
            '"routingSnapshotOccurredAt" = $2, "routingSnapshotEventId" = $3 '
            'WHERE "requestId" = $4',
            winner.value.decode(),
            at(20),
            winner.event_id,
            "req-r",
        )
        batch = [
            snapshot("req-r", "t1", at(10), strategy="ours"),
            snapshot("req-r", "t1", at(5), strategy="older"),
            cost("req-r", "t1", at(10), provider="ours"),
        ]
        applying = asyncio.create_task(apply_in_transaction(engine, batch))
        await _until_waiting_on_a_lock(database)
        await held.commit()
        outcome = await asyncio.wait_for(applying, 30)
    finally:
        await other.close()

    # The cost was written beside the winner's snapshot; ours lost the race, was offered again
    # and is stale against the winner, like everything older.
    assert [r.outcome for r in outcome.results] == [Outcome.STALE, Outcome.STALE, Outcome.APPLIED]
    assert outcome.statements == 2
    row = await _record(database, "req-r")
    assert json.loads(row["snap_text"])["strategy"] == "winner"
    assert row["routingSnapshotEventId"] == winner.event_id
    assert json.loads(row["cost_text"])["provider"] == "ours"


async def _until_waiting_on_a_lock(database: Database) -> None:
    for _ in range(300):
        waiting = await database.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting[0]["n"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the batch never waited on the row lock")


async def test_tenant_mismatch_leaves_the_row_untouched_and_older_matching_event_applies(
    engine: AsyncEngine, database: Database
) -> None:
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2)',
        "req-m",
        "owner",
    )
    intruder = snapshot("req-m", "intruder", at(10), strategy="intruder")
    owner = snapshot("req-m", "owner", at(5), strategy="owner")
    intruder_cost = cost("req-m", "intruder", at(1))

    old_intruder = snapshot("req-m", "intruder", at(2))  # older than the winner: still rejected

    outcome = await apply_in_transaction(engine, [intruder, owner, intruder_cost, old_intruder])

    assert outcome.results[0].reason is ReasonCode.TENANT_MISMATCH
    assert "intruder" in outcome.results[0].message
    assert "owner" not in outcome.results[0].message  # the row's tenant is not disclosed
    assert outcome.results[1].outcome is Outcome.APPLIED
    assert outcome.results[2].reason is ReasonCode.TENANT_MISMATCH
    assert outcome.results[3].reason is ReasonCode.TENANT_MISMATCH
    row = await _record(database, "req-m")
    assert row["tenantId"] == "owner"
    assert json.loads(row["snap_text"])["strategy"] == "owner"
    assert row["actualCost"] is None


async def test_a_row_created_in_the_batch_belongs_to_its_creator(
    engine: AsyncEngine, database: Database
) -> None:
    creator = cost("req-new", "t1", at(5))
    other = cost("req-new", "t2", at(1))

    outcome = await apply_in_transaction(engine, [other, creator])

    assert outcome.results[1].outcome is Outcome.APPLIED
    assert outcome.results[0].reason is ReasonCode.TENANT_MISMATCH
    assert (await _record(database, "req-new"))["tenantId"] == "t1"


async def test_a_refused_record_older_than_the_stored_value_is_just_stale(
    engine: AsyncEngine, database: Database
) -> None:
    await apply_in_transaction(engine, [cost("req-s", "t1", at(10))])
    refused = with_raw_payload(cost("req-s", "t1", at(1), note="N"), "N", '"\\u0000"')

    outcome = await apply_in_transaction(engine, [refused])

    # Only what would be written is parsed by PostgreSQL: a replay of old records costs no JSON
    # parsing, and an old record is stale whatever its bytes.
    assert outcome.results[0].outcome is Outcome.STALE


async def test_a_null_tenant_row_accepts_any_tenant_and_keeps_its_null(
    engine: AsyncEngine, database: Database
) -> None:
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "createdAt") '
        "VALUES ('pk-1', 'req-n', '2020-01-01T00:00:00Z')"
    )
    first = snapshot("req-n", "t1", at(0))
    second = cost("req-n", "t2", at(1))

    outcome = await apply_in_transaction(engine, [first, second])

    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED, Outcome.APPLIED]
    row = await _record(database, "req-n")
    assert row["tenantId"] is None
    assert row["id"] == "pk-1"  # Project A's columns are never updated
    assert row["createdAt"].year == 2020


async def test_policies_update_known_tenants_and_reject_unknown_ones(
    engine: AsyncEngine, database: Database
) -> None:
    await database.execute('INSERT INTO "Tenant" ("id", "name") VALUES (\'known\', \'Known\')')
    newer = policy("known", at(9), defaultStrategy="quality")
    older = policy("known", at(2), defaultStrategy="cost")
    stranger = policy("stranger", at(1))
    stranger_again = policy("stranger", at(2))

    outcome = await apply_in_transaction(engine, [older, stranger, newer, stranger_again])

    assert [r.outcome for r in outcome.results] == [
        Outcome.STALE,
        Outcome.DEAD_LETTERED,
        Outcome.APPLIED,
        Outcome.DEAD_LETTERED,
    ]
    assert outcome.results[1].reason is ReasonCode.UNKNOWN_TENANT
    assert outcome.results[3].reason is ReasonCode.UNKNOWN_TENANT
    rows = await database.fetch('SELECT * FROM "Tenant"')
    assert len(rows) == 1  # "Tenant" rows are never created
    assert rows[0]["name"] == "Known"
    assert json.loads(rows[0]["routingPolicy"])["defaultStrategy"] == "quality"
    assert rows[0]["routingPolicyEventId"] == newer.event_id


async def test_a_record_postgresql_refuses_is_isolated_and_the_rest_applied(
    engine: AsyncEngine, database: Database
) -> None:
    events = [cost(f"req-{i}", "t1", at(i), note="fine") for i in range(40)]
    bad_rows = (3, 17, 38)
    for i in bad_rows:  # jsonb refuses \u0000 (SQLSTATE 22P05); Python's JSON accepts it
        events[i] = with_raw_payload(events[i], "fine", '"nul \\u0000 here"')
    # For req-17, an older valid event is in the same batch: it must win the row.
    fallback = cost("req-17", "t1", at(-5), note="fallback")
    events.append(fallback)

    outcome = await apply_in_transaction(engine, events)

    rejected = [i for i, r in enumerate(outcome.results) if r.outcome is Outcome.DEAD_LETTERED]
    assert rejected == list(bad_rows)
    for i in bad_rows:
        assert outcome.results[i].reason is ReasonCode.DB_REJECTED
        assert "22P05" in outcome.results[i].message
    assert outcome.count(Outcome.APPLIED) == 38
    rows = await database.fetch('SELECT "requestId", "actualCost" FROM "ExecutionRecord"')
    stored = {r["requestId"]: json.loads(r["actualCost"])["note"] for r in rows}
    assert stored == {
        **{f"req-{i}": "fine" for i in range(40) if i not in bad_rows},
        "req-17": "fallback",
    }


async def test_thousands_of_refused_records_for_one_key_are_all_dead_lettered_in_bounded_work(
    engine: AsyncEngine, database: Database
) -> None:
    # A producer's retry storm: the same record PostgreSQL refuses, 1,500 times, plus 1,100
    # different refused versions of the same row, and the row's one valid event, oldest of all.
    storm = with_raw_payload(cost("hot", "t1", at(10), note="N"), "N", '"\\u0000"')
    versions = [
        with_raw_payload(cost("hot", "t1", at(100 + n), note="N"), "N", f'"v{n} \\u0000"')
        for n in range(1100)
    ]
    valid = cost("hot", "t1", at(0))
    events = [storm] * 1500 + versions + [valid]

    outcome = await apply_in_transaction(engine, events)

    assert outcome.count(Outcome.DEAD_LETTERED) == 2600
    assert {r.reason for r in outcome.results[:-1]} == {ReasonCode.DB_REJECTED}
    assert outcome.results[-1].outcome is Outcome.APPLIED
    # Copies share their original's verdict: a statement per distinct version, not per copy.
    assert outcome.statements < 2 * (1100 + 1) + 10
    rows = await database.fetch('SELECT "actualCostEventId" FROM "ExecutionRecord"')
    assert [r["actualCostEventId"] for r in rows] == [valid.event_id]


async def test_a_number_no_decimal_can_hold_in_an_unknown_field_is_db_rejected_not_a_crash(
    engine: AsyncEngine, database: Database
) -> None:
    # Valid JSON the contract keeps as written; PostgreSQL's numeric cannot hold it either, so
    # the record is refused there (db_rejected), and the batch goes on.
    huge = with_raw_payload(cost("req-huge", "t1", at(0), note="N"), "N", "1e9999999999999999999")
    fine = cost("req-fine", "t1", at(0))

    outcome = await apply_in_transaction(engine, [huge, fine])

    assert [(r.outcome, r.reason) for r in outcome.results] == [
        (Outcome.DEAD_LETTERED, ReasonCode.DB_REJECTED),
        (Outcome.APPLIED, None),
    ]
    rows = await database.fetch('SELECT "requestId" FROM "ExecutionRecord"')
    assert [r["requestId"] for r in rows] == ["req-fine"]


async def test_a_refusal_on_the_fast_first_attempt_is_redone_carefully_in_a_new_transaction(
    engine: AsyncEngine, database: Database
) -> None:
    # The first attempt takes no savepoints: PostgreSQL's refusal aborts it whole, and the
    # batch is redone with a savepoint per statement, which isolates the refused record.
    fine = cost("req-f", "t1", at(0))
    refused = with_raw_payload(cost("req-r", "t1", at(0), note="N"), "N", '"\\u0000"')

    outcome = await apply_events(
        engine, [pending(fine), pending(refused)], policy=MissingRowPolicy.CREATE
    )

    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED, Outcome.DEAD_LETTERED]
    assert "22P05" in outcome.results[1].message
    # One statement in the aborted attempt, then the careful one's: the whole, its halves.
    assert outcome.statements == 3
    rows = await database.fetch('SELECT "requestId" FROM "ExecutionRecord"')
    assert [r["requestId"] for r in rows] == ["req-f"]


async def test_a_refused_cost_beside_its_snapshot_leaves_the_snapshot_applied(
    engine: AsyncEngine, database: Database
) -> None:
    snap = snapshot("req-p", "t1", at(1))
    refused = with_raw_payload(cost("req-p", "t1", at(2), note="N"), "N", '"\\u0000"')
    older_cost = cost("req-p", "t1", at(0), note="older")

    outcome = await apply_in_transaction(engine, [snap, refused, older_cost])

    assert [r.outcome for r in outcome.results] == [
        Outcome.APPLIED,
        Outcome.DEAD_LETTERED,
        Outcome.APPLIED,
    ]
    assert '"ExecutionRecord"."actualCost"' in outcome.results[1].message
    row = await _record(database, "req-p")
    assert row["routingSnapshotEventId"] == snap.event_id
    assert row["actualCostEventId"] == older_cost.event_id


async def test_snapshot_and_cost_of_a_new_request_with_different_tenants(
    engine: AsyncEngine, database: Database
) -> None:
    # One row, one tenant: the snapshot creates it (same statement order as a lone snapshot
    # followed by a lone cost), the cost of another tenant is then a mismatch.
    snap = snapshot("req-t", "t1", at(0))
    other = cost("req-t", "t2", at(1))

    outcome = await apply_in_transaction(engine, [other, snap])

    assert outcome.results[1].outcome is Outcome.APPLIED
    assert outcome.results[0].reason is ReasonCode.TENANT_MISMATCH
    row = await _record(database, "req-t")
    assert row["tenantId"] == "t1"
    assert row["actualCost"] is None


async def test_a_key_column_conflict_is_db_rejected_not_fatal(
    engine: AsyncEngine, database: Database
) -> None:
    # Project A's row has "id" 'req-x' but another requestId: creating the row for requestId
    # 'req-x' (id = requestId) violates the primary key (SQLSTATE 23505).
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId") VALUES (\'req-x\', \'other\')'
    )
    clash = snapshot("req-x", "t1", at(0))
    fine = snapshot("req-y", "t1", at(0))

    outcome = await apply_in_transaction(engine, [clash, fine])

    assert outcome.results[0].reason is ReasonCode.DB_REJECTED
    assert "23505" in outcome.results[0].message
    assert outcome.results[1].outcome is Outcome.APPLIED
    rows = await database.fetch('SELECT "id", "requestId" FROM "ExecutionRecord" ORDER BY "id"')
    assert [(r["id"], r["requestId"]) for r in rows] == [("req-x", "other"), ("req-y", "req-y")]


async def test_a_batch_of_mixed_types_costs_one_statement_per_table(
    engine: AsyncEngine, database: Database
) -> None:
    await database.execute('INSERT INTO "Tenant" ("id") VALUES (\'t1\')')
    events = []
    for i in range(300):
        events.append(snapshot(f"r{i}", "t1", at(i)))
        events.append(cost(f"r{i}", "t1", at(i)))
    events.append(policy("t1", at(0)))

    outcome = await apply_in_transaction(engine, events)

    assert outcome.count(Outcome.APPLIED) == len(events)
    assert outcome.statements == 2  # snapshot and cost of a request: one row write
    rows = await database.fetch(
        'SELECT count(*) AS n FROM "ExecutionRecord" '
        'WHERE "routingSnapshot" IS NOT NULL AND "actualCost" IS NOT NULL'
    )
    assert rows[0]["n"] == 300


async def test_the_least_privilege_role_of_deploy_sql_grants_can_apply_every_kind_of_batch(
    engine: AsyncEngine, database: Database
) -> None:
    # deploy/sql/grants.sql gives the service's role exactly the columns it needs; the real
    # statements must need no more (inserting, updating both fields, stale, both rejections).
    await database.execute((ROOT / "deploy" / "sql" / "grants.sql").read_text())
    # These batches create rows (create): the grant that policy needs on top.
    await database.execute((ROOT / "deploy" / "sql" / "grants-create-rows.sql").read_text())
    await database.execute('INSERT INTO "Tenant" ("id") VALUES (\'t1\')')
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('owned', 'owned', 'other')"
    )
    first = [snapshot("r1", "t1", at(1)), cost("r1", "t1", at(1)), policy("t1", at(1))]
    second = [
        snapshot("r1", "t1", at(2)),
        cost("r1", "t1", at(0)),
        snapshot("owned", "t1", at(0)),
        policy("nobody", at(0)),
        with_raw_payload(cost("r2", "t1", at(0), note="N"), "N", '"\\u0000"'),
    ]
    verdicts = []
    # Sessions that run as the role from their start, as the service's do in production.
    as_role = create_engine(
        Settings(database_url=database.url),
        connect_args={"server_settings": {"role": "routing_persistence"}},
    )
    try:
        for events in (first, second):
            outcome = await apply_events(
                as_role, [pending(e) for e in events], policy=MissingRowPolicy.CREATE
            )
            verdicts.append([r.reason or r.outcome for r in outcome.results])
    finally:
        await as_role.dispose()

    assert verdicts == [
        [Outcome.APPLIED] * 3,
        [
            Outcome.APPLIED,
            Outcome.STALE,
            ReasonCode.TENANT_MISMATCH,
            ReasonCode.UNKNOWN_TENANT,
            ReasonCode.DB_REJECTED,
        ],
    ]


async def test_a_table_with_a_not_null_column_without_default_updates_existing_rows(
    engine: AsyncEngine, database: Database
) -> None:
    # Project A's Prisma table: "updatedAt" (@updatedAt) is NOT NULL with no database default.
    # PostgreSQL checks an INSERT's NOT NULL constraints before ON CONFLICT: an upsert would
    # fail for every row, existing ones too.
    await database.execute(
        'ALTER TABLE "ExecutionRecord" ADD COLUMN "updatedAt" timestamptz NOT NULL, '
        'ADD COLUMN "model" text NOT NULL'
    )
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId", "updatedAt", "model") '
        "VALUES ('a', 'req-1', 't1', '2020-01-01Z', 'm'), ('b', 'req-null', NULL, '2020-01-01Z', "
        "'m'), ('c', 'req-own', 'owner', '2020-01-01Z', 'm')"
    )
    snap, money = snapshot("req-1", "t1", at(5)), cost("req-1", "t1", at(5))
    events = [
        snap,
        money,
        snapshot("req-1", "t1", at(1)),  # stale
        cost("req-null", "t2", at(1)),  # a null-tenant row accepts any tenant
        snapshot("req-own", "intruder", at(1)),  # tenant_mismatch
        snapshot("req-missing", "t1", at(3)),  # no row, and none can be created
        cost("req-missing", "t1", at(3)),
        snapshot("req-missing", "t1", at(2)),  # older: would fail the same way
        cost("req-gone", "t1", at(0)),
    ]

    outcome = await apply_in_transaction(engine, events)

    verdicts = [r.reason or r.outcome for r in outcome.results]
    assert verdicts == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.STALE,
        Outcome.APPLIED,
        ReasonCode.TENANT_MISMATCH,
        *[ReasonCode.DB_REJECTED] * 4,
    ]
    for result in outcome.results[5:]:
        assert "cannot create" in result.message
        # PostgreSQL names the first such column (in the table's order).
        assert 'requires column "updatedAt" (NOT NULL without a default)' in result.message
    rows = await database.fetch(
        'SELECT "requestId", "tenantId", "updatedAt", "routingSnapshotEventId" AS s, '
        '"actualCostEventId" AS c FROM "ExecutionRecord" ORDER BY "requestId"'
    )
    assert [(r["requestId"], r["tenantId"], r["s"], r["c"]) for r in rows] == [
        ("req-1", "t1", snap.event_id, money.event_id),
        ("req-null", None, None, events[3].event_id),
        ("req-own", "owner", None, None),
    ]
    assert {r["updatedAt"].year for r in rows} == {2020}  # Project A's column is not ours

    again = await apply_in_transaction(engine, events[:4])
    assert [r.outcome for r in again.results] == [Outcome.STALE] * 4


async def test_a_table_with_a_not_null_column_with_a_default_just_works(
    engine: AsyncEngine, database: Database
) -> None:
    await database.execute(
        'ALTER TABLE "ExecutionRecord" ADD COLUMN "updatedAt" timestamptz NOT NULL '
        'DEFAULT now(), ADD COLUMN "version" integer NOT NULL DEFAULT 1'
    )
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "VALUES ('a', 'old', 't1')"
    )
    events = [snapshot("old", "t1", at(1)), snapshot("new", "t1", at(1)), cost("new", "t1", at(2))]

    outcome = await apply_in_transaction(engine, events)

    assert [r.outcome for r in outcome.results] == [Outcome.APPLIED] * 3
    rows = await database.fetch(
        'SELECT "requestId", "version", "routingSnapshot" IS NOT NULL AS has_snapshot '
        'FROM "ExecutionRecord" ORDER BY 1'
    )
    assert [tuple(r) for r in rows] == [("new", 1, True), ("old", 1, True)]


async def test_batches_probe_the_index_whatever_the_table_size(
    engine: AsyncEngine, database: Database
) -> None:
    """The round statement looks its keys up in the index; it never reads the table whole.

    With PostgreSQL's default planner costs (``random_page_cost`` 4) a table of this size is
    scanned whole for every batch (a hash join), which doubled PostgreSQL's CPU per event on the
    benchmark's live runs; the service's sessions use 1.1 (consumer.db.create_engine). The
    keys' collation too: keys in "C" (what convert_from returns) cannot use the index of a
    column in the default collation, and the plan is the same whole-table scan.
    """
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "SELECT 'r' || g, 'r' || g, 't' FROM generate_series(1, 20000) AS g"
    )
    await database.execute('ANALYZE "ExecutionRecord"')
    keys = [f"r{n}" for n in range(1, 400, 2)]  # a live batch: a few hundred rows
    nulls = literal([None] * len(keys))
    no_texts = SEPARATOR * (len(keys) - 1)  # a column of NULL texts (consumer.pipeline.sql)
    params = (literal(keys), literal(["t"] * len(keys)), *[nulls, nulls, no_texts, no_texts] * 2)
    sql = "EXPLAIN " + round_sql(EXECUTION_RECORD)

    async def plan(setting: str | None) -> str:
        async with engine.connect() as conn:
            if setting is not None:
                await conn.exec_driver_sql(f"SET random_page_cost = {setting}")
            result = await conn.exec_driver_sql(sql, params)
            return "\n".join(row[0] for row in result.all())

    assert 'Seq Scan on "ExecutionRecord"' not in await plan(None)
    # The test can fail: PostgreSQL's default costs choose the whole-table scan here.
    assert 'Seq Scan on "ExecutionRecord"' in await plan("4")

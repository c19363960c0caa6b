"""Loaders validate what they read (drift is an error naming table, row and field) and the policy
saver validates before writing, under the consumer's newer-wins guard; on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.db import create_engine
from consumer.errors import RejectedRecord, SchemaDriftError
from consumer.loaders import (
    load_actual_cost,
    load_routing_snapshot,
    load_tenant_policy,
    save_tenant_policy,
)
from consumer.settings import Settings
from schemas import ActualCost, RoutingPlanSnapshot, TenantRoutingPolicy, dumps, loads
from tests.conftest import Database
from tests.schemas_helpers import REQUEST, TENANT, cost_payload, policy_payload, snapshot_payload

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    made = create_engine(Settings(database_url=database.url))
    yield made
    await made.dispose()


async def _store_execution(
    database: Database, request_id: str, snapshot: bytes | None, cost: bytes | None
) -> None:
    await database.execute(
        'INSERT INTO "ExecutionRecord" '
        '("id", "requestId", "tenantId", "routingSnapshot", "actualCost") '
        "VALUES ($1, $1, $2, $3::text::jsonb, $4::text::jsonb)",
        request_id,
        TENANT,
        None if snapshot is None else snapshot.decode(),
        None if cost is None else cost.decode(),
    )


async def _store_tenant(database: Database, tenant_id: str, policy: bytes | None = None) -> None:
    await database.execute(
        'INSERT INTO "Tenant" ("id", "routingPolicy") VALUES ($1, $2::text::jsonb)',
        tenant_id,
        None if policy is None else policy.decode(),
    )


async def test_good_rows_load_as_validated_models_with_exact_decimals(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_execution(database, REQUEST, dumps(snapshot_payload()), dumps(cost_payload()))
    await _store_tenant(database, TENANT, dumps(policy_payload()))

    snapshot = await load_routing_snapshot(engine, REQUEST)
    assert isinstance(snapshot, RoutingPlanSnapshot)
    assert snapshot.model_extra == {
        "routerBuild": {"sha": "abc123", "flags": [1, Decimal("2.50"), None, True]}
    }
    assert str(snapshot.fallbacks[0].model_extra["weight"]) == "0.5"  # type: ignore[index]
    assert snapshot.timestamp == datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)

    cost = await load_actual_cost(engine, REQUEST)
    assert isinstance(cost, ActualCost)
    assert (cost.inputCostUsd, cost.totalCostUsd) == (Decimal("0.1"), Decimal("0.3"))
    assert cost.model_extra == {"cachedTokens": 17}

    policy = await load_tenant_policy(engine, TENANT)
    assert isinstance(policy, TenantRoutingPolicy)
    assert str(policy.maxCostPerRequestUsd) == "0.50"
    assert policy.model_extra == {"notes": "kept as sent"}


async def test_missing_rows_and_null_values_load_as_none(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_execution(database, "req-empty", None, None)
    await _store_tenant(database, "tenant-empty")
    assert await load_routing_snapshot(engine, "req-empty") is None
    assert await load_actual_cost(engine, "req-empty") is None
    assert await load_routing_snapshot(engine, "req-absent") is None
    assert await load_tenant_policy(engine, "tenant-empty") is None
    assert await load_tenant_policy(engine, "tenant-absent") is None


async def test_hand_corrupted_rows_raise_schema_drift_naming_table_row_and_field(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_execution(database, REQUEST, dumps(snapshot_payload()), dumps(cost_payload()))
    await _store_tenant(database, TENANT, dumps(policy_payload()))
    await database.execute(
        'UPDATE "ExecutionRecord" SET "routingSnapshot" = '
        """jsonb_set("routingSnapshot", '{fallbacks,0,model}', '""'), """
        """"actualCost" = jsonb_set("actualCost", '{totalCostUsd}', '"0.3"')"""
    )
    await database.execute(
        'UPDATE "Tenant" SET "routingPolicy" = '
        """jsonb_set("routingPolicy", '{preferredProvider}', '"mistral"')"""
    )

    with pytest.raises(SchemaDriftError) as snap_error:
        await load_routing_snapshot(engine, REQUEST)
    assert '"ExecutionRecord"' in str(snap_error.value)
    assert repr(REQUEST) in str(snap_error.value)
    assert "routingSnapshot.fallbacks[0].model" in str(snap_error.value)

    with pytest.raises(SchemaDriftError) as cost_error:
        await load_actual_cost(engine, REQUEST)
    assert "actualCost.totalCostUsd" in str(cost_error.value)
    assert "got string" in str(cost_error.value)

    with pytest.raises(SchemaDriftError) as policy_error:
        await load_tenant_policy(engine, TENANT)
    assert '"Tenant" row with "id" = ' + repr(TENANT) in str(policy_error.value)
    assert "routingPolicy.preferredProvider" in str(policy_error.value)
    assert "denied" in str(policy_error.value)


async def test_stored_json_python_cannot_read_is_drift(
    database: Database, engine: AsyncEngine
) -> None:
    # jsonb keeps 1e5000 as a 5001-digit integer: beyond what Python reads as an int by default.
    cost = dumps(cost_payload()).decode().replace('"cachedTokens":17', '"cachedTokens":1e5000')
    await _store_execution(database, REQUEST, None, cost.encode())
    with pytest.raises(SchemaDriftError, match="actualCost cannot be read as JSON"):
        await load_actual_cost(engine, REQUEST)


async def test_a_policy_stored_under_another_tenant_is_drift(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_tenant(database, "tenant-b", dumps(policy_payload("tenant-a")))
    with pytest.raises(SchemaDriftError, match=r"routingPolicy\.tenantId"):
        await load_tenant_policy(engine, "tenant-b")


def _canonical(value: object) -> bytes:
    """JSON text with keys sorted (jsonb reorders them), numbers exactly as stored."""

    def sort(item: object) -> object:
        if isinstance(item, dict):
            return {key: sort(item[key]) for key in sorted(item)}
        if isinstance(item, list):
            return [sort(v) for v in item]
        return item

    return dumps(sort(value))


async def _stored_policy(
    database: Database, tenant_id: str
) -> tuple[object, datetime | None, uuid.UUID | None]:
    rows = await database.fetch(
        'SELECT "routingPolicy"::text AS p, "routingPolicyOccurredAt" AS at, '
        '"routingPolicyEventId" AS eid FROM "Tenant" WHERE "id" = $1',
        tenant_id,
    )
    (row,) = rows
    return (None if row["p"] is None else loads(row["p"]), row["at"], row["eid"])


async def test_save_tenant_policy_validates_then_writes_with_a_version(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_tenant(database, TENANT)
    policy = TenantRoutingPolicy.model_validate(policy_payload())
    before = datetime.now(UTC)

    assert await save_tenant_policy(engine, policy) is True

    stored, at, event_id = await _stored_policy(database, TENANT)
    assert _canonical(stored) == _canonical(policy_payload())  # every field, "0.50" as is
    assert at is not None
    assert before - timedelta(seconds=5) <= at <= datetime.now(UTC)
    assert isinstance(event_id, uuid.UUID)
    assert await load_tenant_policy(engine, TENANT) == policy

    changed = policy.model_copy(update={"defaultStrategy": "latency"})
    assert await save_tenant_policy(engine, changed) is True
    stored, at2, event_id2 = await _stored_policy(database, TENANT)
    assert stored["defaultStrategy"] == "latency"  # type: ignore[index]
    assert at2 is not None
    assert at2 >= at
    assert event_id2 != event_id


async def test_save_tenant_policy_never_overwrites_a_newer_policy(
    database: Database, engine: AsyncEngine
) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    newer = dumps(policy_payload())
    await database.execute(
        'INSERT INTO "Tenant" '
        '("id", "routingPolicy", "routingPolicyOccurredAt", "routingPolicyEventId") '
        "VALUES ($1, $2::text::jsonb, $3, $4)",
        TENANT,
        newer.decode(),
        future,
        uuid.uuid4(),
    )
    older = TenantRoutingPolicy.model_validate({**policy_payload(), "defaultStrategy": "older"})
    assert await save_tenant_policy(engine, older) is False
    stored, at, _ = await _stored_policy(database, TENANT)
    assert _canonical(stored) == _canonical(loads(newer))
    assert at == future


async def test_save_tenant_policy_refuses_invalid_policies_and_unknown_tenants(
    database: Database, engine: AsyncEngine
) -> None:
    await _store_tenant(database, TENANT)
    broken = TenantRoutingPolicy.model_construct(
        **{**policy_payload(), "deniedProviders": ["openai"]}  # openai is also allowed
    )
    with pytest.raises(ValidationError, match="both allowed and denied"):
        await save_tenant_policy(engine, broken)
    assert await _stored_policy(database, TENANT) == (None, None, None)

    stranger = TenantRoutingPolicy.model_validate(policy_payload("tenant-unknown"))
    with pytest.raises(RejectedRecord) as caught:
        await save_tenant_policy(engine, stranger)
    assert caught.value.reason == "unknown_tenant"
    assert await database.fetch('SELECT 1 FROM "Tenant" WHERE "id" = $1', "tenant-unknown") == []

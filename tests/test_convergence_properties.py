"""Property: any delivery order, any duplication, any batch split converges to the same rows.

Hypothesis draws a set of events over a few rows — some from the wrong tenant, some PostgreSQL
refuses, some for an unknown tenant, many with colliding ``occurredAt`` — then delivers every
event one to three times in a random order, cut into random batches, each applied in its own
transaction. The rows must then hold, per row and field, the payload of the valid event with the
greatest ``(occurredAt, eventId)``; every delivery of another tenant's event or of a policy for an
unknown tenant is rejected with its reason, and a record PostgreSQL refuses is never applied.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcomes import Outcome
from consumer.pipeline.apply import apply_events
from consumer.settings import MissingRowPolicy
from schemas import EventType, OutgoingEvent, ReasonCode
from tests.apply_helpers import at, cost, engine_for, pending, policy, snapshot, with_raw_payload
from tests.conftest import Database

#: request -> the tenant its events carry when they are meant to match.
_REQUESTS = {
    "new-a": "t0",  # no row yet: created by the first valid event
    "new-b": "t1",
    "owned": "owner",  # exists, "tenantId" = 'owner': other tenants are rejected
    "open": None,  # exists, "tenantId" NULL: every tenant is accepted, the NULL stays
}
_KNOWN_TENANT, _UNKNOWN_TENANT = "t0", "ghost"


@dataclass(frozen=True)
class _Spec:
    kind: EventType
    row: str  # requestId, or tenant id for policies
    intruder: bool  # carries another tenant than the row's
    refused: bool  # holds \u0000: PostgreSQL refuses it
    second: int
    event_id: uuid.UUID


_specs = st.builds(
    _Spec,
    kind=st.sampled_from(list(EventType)),
    row=st.sampled_from(sorted(_REQUESTS)),
    intruder=st.booleans(),
    refused=st.integers(0, 7).map(lambda n: n == 0),
    second=st.integers(0, 4),
    event_id=st.uuids(),
)


def _build(n: int, spec: _Spec) -> tuple[OutgoingEvent, ReasonCode | None]:
    """The event of ``spec`` (marker ``e<n>`` in its payload) and its expected rejection."""
    marker = f"e{n}"
    when = at(spec.second)
    if spec.kind is EventType.POLICY:
        tenant = _UNKNOWN_TENANT if spec.intruder else _KNOWN_TENANT
        event = policy(tenant, when, event_id=spec.event_id, defaultStrategy=marker)
        reason = ReasonCode.UNKNOWN_TENANT if spec.intruder else None
    else:
        row_tenant = _REQUESTS[spec.row]
        # Rows that do not exist yet only ever see their own tenant: which tenant creates a
        # row is first-come by contract, so mixing tenants there is not order-independent.
        intruder = spec.intruder and spec.row in ("owned", "open")
        tenant = "intruder" if intruder else (row_tenant or "t9")
        make = snapshot if spec.kind is EventType.SNAPSHOT else cost
        extra = {"strategy": marker} if spec.kind is EventType.SNAPSHOT else {"provider": marker}
        event = make(spec.row, tenant, when, event_id=spec.event_id, **extra)
        reason = ReasonCode.TENANT_MISMATCH if intruder and spec.row == "owned" else None
    if spec.refused and reason is None:
        event = with_raw_payload(event, marker, '"\\u0000"')
        reason = ReasonCode.DB_REJECTED
    return event, reason


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[_Spec], list[list[int]]]:
    specs = draw(st.lists(_specs, min_size=1, max_size=14, unique_by=lambda s: s.event_id))
    deliveries = [i for i in range(len(specs)) for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(deliveries))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    batches, start = [], 0
    for cut in [*cuts, len(order)]:
        if cut > start:
            batches.append(list(order[start:cut]))
            start = cut
    return specs, batches


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    made = engine_for(database.url)
    yield made
    await made.dispose()


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql('TRUNCATE "ExecutionRecord", "Tenant"')
        await conn.exec_driver_sql(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
            "VALUES ('owned', 'owned', 'owner'), ('open', 'open', NULL)"
        )
        await conn.exec_driver_sql(f'INSERT INTO "Tenant" ("id") VALUES (\'{_KNOWN_TENANT}\')')


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenarios())
async def test_any_order_duplication_and_split_converges_to_the_newest_valid_event(
    engine: AsyncEngine, scenario: tuple[list[_Spec], list[list[int]]]
) -> None:
    specs, batches = scenario
    built = [_build(n, spec) for n, spec in enumerate(specs)]
    await _reset(engine)

    for batch in batches:
        outcome = await apply_events(
            engine, [pending(built[i][0]) for i in batch], policy=MissingRowPolicy.CREATE
        )
        for i, result in zip(batch, outcome.results, strict=True):
            expected_reason = built[i][1]
            if expected_reason is None:
                assert result.outcome in (Outcome.APPLIED, Outcome.STALE), (specs[i], result)
            elif expected_reason is ReasonCode.DB_REJECTED:
                # Refused when offered for writing; older than what is stored, it is merely
                # stale (never parsed), like any old event.
                assert result.outcome is not Outcome.APPLIED, (specs[i], result)
                assert result.reason in (None, ReasonCode.DB_REJECTED), (specs[i], result)
            else:
                # Tenant rules hold whatever the versions: never downgraded to "stale".
                assert result.reason is expected_reason, (specs[i], result)

    # Expected: per (row, field) the valid event with the greatest version.
    winners: dict[tuple[str, EventType], OutgoingEvent] = {}
    for (event, reason), spec in zip(built, specs, strict=True):
        if reason is not None:
            continue
        slot = (_KNOWN_TENANT if spec.kind is EventType.POLICY else spec.row, spec.kind)
        best = winners.get(slot)
        if best is None or (event.occurred_at, event.event_id) > (
            best.occurred_at,
            best.event_id,
        ):
            winners[slot] = event

    async with engine.connect() as conn:
        records: dict[str, tuple[Any, ...]] = {
            row[0]: tuple(row[1:])
            for row in await conn.exec_driver_sql(
                'SELECT "requestId", "tenantId", "routingSnapshotEventId", "actualCostEventId", '
                "\"routingSnapshot\"->>'strategy', \"actualCost\"->>'provider' "
                'FROM "ExecutionRecord"'
            )
        }
        tenants: dict[str, tuple[Any, ...]] = {
            row[0]: tuple(row[1:])
            for row in await conn.exec_driver_sql(
                'SELECT "id", "routingPolicyEventId", "routingPolicy"->>\'defaultStrategy\' '
                'FROM "Tenant"'
            )
        }

    expected_requests = {"owned", "open"} | {
        row for row, kind in winners if kind is not EventType.POLICY
    }
    assert set(records) == expected_requests
    for request, (tenant, snap_id, cost_id, snap_marker, cost_marker) in records.items():
        assert tenant == _REQUESTS[request], request  # set on creation, never changed
        snap = winners.get((request, EventType.SNAPSHOT))
        money = winners.get((request, EventType.COST))
        assert snap_id == (snap.event_id if snap else None), request
        assert cost_id == (money.event_id if money else None), request
        assert snap_marker == (json.loads(snap.value)["payload"]["strategy"] if snap else None)
        assert cost_marker == (json.loads(money.value)["payload"]["provider"] if money else None)
    assert set(tenants) == {_KNOWN_TENANT}  # never created
    rule = winners.get((_KNOWN_TENANT, EventType.POLICY))
    assert tenants[_KNOWN_TENANT][0] == (rule.event_id if rule else None)

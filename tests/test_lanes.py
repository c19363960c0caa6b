"""How a batch is dealt into lanes, and how the lanes' transactions end together."""

from __future__ import annotations

import asyncio

import pytest

from consumer.errors import DatabaseUnavailable
from consumer.pipeline.lanes import lane_of, settle, split
from consumer.settings import Settings
from schemas import EventType
from tests.apply_helpers import at, cost, pending, policy, snapshot


def test_a_rows_events_share_a_lane_and_every_event_has_one() -> None:
    events = []
    for n in range(200):
        request, tenant = f"r-{n % 37}", f"t-{n % 5}"
        events.append(pending(snapshot(request, tenant, at(n))))
        events.append(pending(cost(request, tenant, at(n))))
        events.append(pending(policy(tenant, at(n))))
    lanes = split(events, 3)
    assert len(lanes) == 3
    assert sorted(i for lane in lanes for i in lane) == list(range(len(events)))
    for n, lane in enumerate(lanes):
        assert lane == sorted(lane)  # the batch's order within a lane
        for i in lane:
            event = events[i].event
            key = event.tenant_id if event.type is EventType.POLICY else event.request_id
            assert lane_of(key, 3) == n
    assert all(lanes)  # 42 keys over 3 lanes


def test_one_lane_is_the_whole_batch() -> None:
    events = [pending(snapshot(f"r-{n}", "t", at(n))) for n in range(5)]
    assert split(events, 1) == [[0, 1, 2, 3, 4]]


async def test_settle_returns_results_in_order() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    tasks = [asyncio.ensure_future(after(d, v)) for d, v in ((0.02, 1), (0, 2), (0.01, 3))]
    assert await settle(tasks) == [1, 2, 3]


async def test_the_first_failure_cancels_the_other_lanes_and_keeps_its_type() -> None:
    unwound: list[str] = []

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.append("slow")  # a transaction's rollback runs here
        return 0

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise DatabaseUnavailable("gone", operation="database")

    tasks = [asyncio.ensure_future(slow()), asyncio.ensure_future(failing())]
    with pytest.raises(DatabaseUnavailable):
        await settle(tasks)
    assert unwound == ["slow"]
    assert tasks[0].cancelled()


async def test_cancelled_from_outside_it_cancels_every_lane() -> None:
    tasks = [asyncio.ensure_future(asyncio.sleep(30)) for _ in range(2)]
    waiting = asyncio.ensure_future(settle(tasks))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert all(task.cancelled() for task in tasks)


@pytest.mark.parametrize(
    ("lanes", "pool", "expected"), [(2, 4, 2), (4, 3, 2), (2, 2, 1), (2, 1, 1), (1, 4, 1)]
)
def test_lanes_leave_a_connection_of_the_pool_free(lanes: int, pool: int, expected: int) -> None:
    # The held-field release and the readiness probe need a connection while lanes apply.
    url = "postgresql://u@db.invalid/routing"
    assert Settings(database_url=url, db_lanes=lanes, db_pool_size=pool).lanes == expected

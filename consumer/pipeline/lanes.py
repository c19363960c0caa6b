"""A batch's events in lanes: split by row key, applied as concurrent transactions.

One transaction per batch leaves the process's one thread idle while PostgreSQL runs each
statement, and PostgreSQL idle while Python builds the next. :func:`split` deals the events
into lanes by their row's key (a snapshot and a cost of one request, every policy of one
tenant, in the same lane, batch after batch), so no two lanes write the same row: their
transactions never wait for each other's locks and cannot deadlock, and each lane's outcome is
what it would be alone. The same lane of successive batches runs one transaction after the
other (:meth:`.batch.BatchProcessor.submit`), so each row sees its writes in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from consumer.pipeline.columns import PendingEvent
from schemas import EventType

__all__ = ["lane_of", "settle", "split"]

_T = TypeVar("_T")


def lane_of(key: str | None, lanes: int) -> int:
    """The lane of row key ``key``: its hash, stable within the process (all that disjointness
    needs; ``PYTHONHASHSEED`` may differ between processes)."""
    return hash(key) % lanes


def split(events: Sequence[PendingEvent], lanes: int) -> list[list[int]]:
    """The indices of ``events`` in each of ``lanes`` lanes (some may be empty), in order.

    An event's lane is its row key's (:func:`lane_of`): ``tenantId`` for a policy, else
    ``requestId``.
    """
    if lanes <= 1:
        return [list(range(len(events)))]
    dealt: list[list[int]] = [[] for _ in range(lanes)]
    policy = EventType.POLICY
    for i, pending in enumerate(events):
        event = pending.event
        key = event.tenant_id if event.type is policy else event.request_id
        dealt[hash(key) % lanes].append(i)  # lane_of, inlined: this runs for every event
    return dealt


async def settle(tasks: Sequence[asyncio.Task[_T]]) -> list[_T]:
    """The results of ``tasks``, in order, once all have ended.

    The first to fail cancels the others and waits for them to unwind (their transactions
    roll back); its error propagates unchanged, never as an ``ExceptionGroup`` (callers tell
    errors apart by type). Cancelled from outside, it cancels them too.
    """
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        unfinished = [task for task in tasks if not task.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
    errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error
    return [task.result() for task in tasks]

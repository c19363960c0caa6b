"""The seeded workloads: the same events, byte for byte, on every run with the same seed.

Two workloads (:data:`WORKLOADS`) share the stream below and differ in the records:

* ``benchmark``: compact ASCII payloads (snapshots ~480 bytes with 2-4 fallbacks), ``occurredAt``
  in UTC with microseconds, as :func:`schemas.build_event` writes it;
* ``realistic``: shaped like the routing engine's traffic: payloads of 300-1,500 bytes, 0-4
  fallbacks, free text in many scripts (accents, CJK, Cyrillic, emoji; sometimes quotes and line
  breaks, written as JSON escapes) in unknown nested fields the contract keeps, money as a
  JavaScript producer writes it (``0.1 + 0.2`` is ``0.30000000000000004``), ``occurredAt`` and
  ``timestamp`` with milliseconds and offsets (``Z``, ``+05:30``, ``-08:00``, ...).

The mix follows the routing engine's traffic: for every request one ``routing.snapshot`` and one
``routing.cost`` event (about 45 % each of the stream), and ``tenant.policy`` updates (about 10 %)
over ``tenants`` existing tenants. On top of that base stream about 10 % of the records are
duplicates (the same bytes again, as an at-least-once producer re-sends them) and about 10 % are
late, older versions of a row (a new ``eventId`` with an ``occurredAt`` before one already sent),
which a correct consumer must not let overwrite the newer value.

Every request keeps one tenant, and policies go only to tenants that exist, so no event of the
workload is dead-lettered: the expected rows are simply the newest version per row and field
(:mod:`bench.oracle`). ``benchmark`` events are built with the schemas' producer helper
(:func:`schemas.build_event`); ``realistic`` ones with the same envelope, written with their own
time format.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from bench.payloads import benchmark_payload, random_uuid, realistic_record
from schemas import EventType, build_event

__all__ = [
    "BASE_TIME",
    "WORKLOADS",
    "Event",
    "Workload",
    "WorkloadMix",
    "generate",
    "make_event",
    "tenant_ids",
]

#: The name of a workload: its records' shape (see the module docstring).
Workload = Literal["benchmark", "realistic"]
WORKLOADS: Final[tuple[Workload, ...]] = ("benchmark", "realistic")

#: occurredAt of the first event: fixed, so that the same seed gives the same bytes.
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One record of the workload: what goes on the wire plus what the oracle needs."""

    type: EventType
    key: bytes
    value: bytes
    event_id: uuid.UUID
    occurred_at: datetime
    tenant_id: str
    #: ``requestId`` for snapshot and cost events, ``tenantId`` for policies.
    row_key: str

    @property
    def version(self) -> tuple[datetime, uuid.UUID]:
        """The contract's version of the event: (occurredAt, eventId)."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class WorkloadMix:
    """Shares of the stream (the defaults are the issue's 45/45/10, 10 % dup, 10 % late)."""

    duplicates: float = 0.10
    late: float = 0.10
    policy_share_of_base: float = 0.10


def tenant_ids(count: int) -> list[str]:
    """The ids of the ``count`` tenants that exist before the run (inserted into ``"Tenant"``)."""
    return [f"tenant-{i:05d}" for i in range(count)]


def make_event(
    rng: random.Random,
    kind: EventType,
    *,
    tenant: str,
    request_id: str | None,
    at: datetime,
    validate: bool = False,
    workload: Workload = "benchmark",
) -> Event:
    """Build one event of ``kind`` with a fresh random payload (seeded by ``rng``).

    ``validate=False`` skips the validation for speed: the payloads (:mod:`bench.payloads`)
    are valid by construction, and the consumer validates every one of them anyway (a workload
    event that it dead-letters shows up as a wrong row in the check). A ``realistic`` event's
    ``occurred_at`` is ``at`` to the millisecond, as written.
    """
    if workload == "realistic":
        value, event_id, at = realistic_record(rng, kind, tenant, request_id, at, validate=validate)
        key = request_id if request_id is not None else tenant
        return Event(kind, key.encode(), value, event_id, at, tenant, key)
    payload = benchmark_payload(rng, kind, tenant, at)
    event_id = random_uuid(rng)
    out = build_event(
        kind,
        payload,
        tenant_id=tenant,
        request_id=request_id,
        event_id=event_id,
        occurred_at=at,
        validate=validate,
    )
    return Event(
        type=kind,
        key=out.key,
        value=out.value,
        event_id=event_id,
        occurred_at=at,
        tenant_id=tenant,
        row_key=request_id if request_id is not None else tenant,
    )


def generate(
    count: int,
    *,
    seed: int,
    tenants: list[str],
    mix: WorkloadMix | None = None,
    request_prefix: str = "req",
    workload: Workload = "benchmark",
) -> Iterator[Event]:
    """Yield ``count`` events of the workload, deterministically for ``seed``.

    Streams (memory stays small for a million events). Duplicates are the very same
    :class:`Event` object yielded again; late events are new events whose ``occurredAt`` is up to
    5 s before an event of the same row already yielded.
    """
    mix = mix or WorkloadMix()
    rng = random.Random(seed)
    clock = BASE_TIME
    recent: deque[Event] = deque(maxlen=5_000)
    awaiting_cost: deque[tuple[str, str]] = deque()
    awaiting_snapshot: deque[tuple[str, str]] = deque()
    next_request = 0
    policy_share = mix.policy_share_of_base
    for _ in range(count):
        roll = rng.random()
        if roll < mix.duplicates and recent:
            yield rng.choice(recent)
            continue
        if roll < mix.duplicates + mix.late and recent:
            older = rng.choice(recent)
            at = older.occurred_at - timedelta(milliseconds=rng.randint(1, 5_000))
            request_id = None if older.type is EventType.POLICY else older.row_key
            late = make_event(
                rng,
                older.type,
                tenant=older.tenant_id,
                request_id=request_id,
                at=at,
                workload=workload,
            )
            recent.append(late)
            yield late
            continue
        clock += timedelta(microseconds=rng.randint(200, 3_000))
        kind_roll = rng.random()
        if kind_roll < policy_share:
            tenant = rng.choice(tenants)
            event = make_event(
                rng, EventType.POLICY, tenant=tenant, request_id=None, at=clock, workload=workload
            )
        else:
            is_snapshot = kind_roll < policy_share + (1 - policy_share) / 2
            own, other = (
                (awaiting_snapshot, awaiting_cost)
                if is_snapshot
                else (awaiting_cost, awaiting_snapshot)
            )
            # Mostly the second half of a request already begun (snapshot then cost, sometimes
            # the cost first); otherwise a new request whose other half comes later.
            if own and rng.random() < 0.9:
                request_id, tenant = own.popleft()
            else:
                next_request += 1
                request_id = f"{request_prefix}-{next_request:09d}"
                tenant = rng.choice(tenants)
                other.append((request_id, tenant))
            kind = EventType.SNAPSHOT if is_snapshot else EventType.COST
            event = make_event(
                rng, kind, tenant=tenant, request_id=request_id, at=clock, workload=workload
            )
        recent.append(event)
        yield event

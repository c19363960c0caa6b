"""The expected final rows of a workload, and the check of a database against them.

:class:`Oracle` keeps, while the events stream past, the payload of the greatest (``occurredAt``,
``eventId``) per row and field; :func:`check_rows` compares a database with it inside PostgreSQL
(``COPY`` into a temporary table, ``jsonb`` ``IS DISTINCT FROM``), fast for a million rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.workload import Event
from schemas import EventType, dumps, loads

__all__ = ["CheckResult", "Oracle", "check_rows", "payload_text"]


class Oracle:
    """Newest event per (field, row) of everything passed to :meth:`add`."""

    def __init__(self) -> None:
        self.snapshots: dict[str, Event] = {}
        self.costs: dict[str, Event] = {}
        self.policies: dict[str, Event] = {}
        #: ``"ExecutionRecord"."tenantId"`` of each request (the tenant of its events).
        self.request_tenants: dict[str, str] = {}
        self.events = 0
        self.by_type: dict[str, int] = {t.value: 0 for t in EventType}

    def add(self, event: Event) -> None:
        """Account for one delivered event (duplicates included)."""
        self.events += 1
        self.by_type[event.type.value] += 1
        if event.type is EventType.POLICY:
            table = self.policies
        else:
            table = self.snapshots if event.type is EventType.SNAPSHOT else self.costs
            self.request_tenants.setdefault(event.row_key, event.tenant_id)
        current = table.get(event.row_key)
        if current is None or current.version < event.version:
            table[event.row_key] = event

    def add_all(self, events: Iterable[Event]) -> None:
        """:meth:`add` each of ``events``."""
        for event in events:
            self.add(event)

    @property
    def request_count(self) -> int:
        """How many ``"ExecutionRecord"`` rows the workload creates."""
        return len(self.request_tenants)

    def execution_rows(self) -> list[tuple[Any, ...]]:
        """Expected ``"ExecutionRecord"`` rows as tuples for the ``_expected_er`` temp table."""
        rows: list[tuple[Any, ...]] = []
        for request_id, tenant in self.request_tenants.items():
            snap = self.snapshots.get(request_id)
            cost = self.costs.get(request_id)
            rows.append(
                (
                    request_id,
                    tenant,
                    snap.value.decode() if snap else None,
                    snap.occurred_at if snap else None,
                    snap.event_id if snap else None,
                    cost.value.decode() if cost else None,
                    cost.occurred_at if cost else None,
                    cost.event_id if cost else None,
                )
            )
        return rows

    def tenant_rows(self, tenants: list[str]) -> list[tuple[Any, ...]]:
        """Expected ``"Tenant"`` rows (every existing tenant, with or without a policy)."""
        rows: list[tuple[Any, ...]] = []
        for tenant in tenants:
            pol = self.policies.get(tenant)
            rows.append(
                (
                    tenant,
                    pol.value.decode() if pol else None,
                    pol.occurred_at if pol else None,
                    pol.event_id if pol else None,
                )
            )
        return rows


def payload_text(envelope: bytes) -> str:
    """The envelope's ``payload`` re-encoded as JSON text, numbers exact (Decimal)."""
    return dumps(loads(envelope)["payload"]).decode()


@dataclass
class CheckResult:
    """Outcome of comparing one database with the oracle (all zero means equal)."""

    expected_execution_records: int
    expected_tenants: int
    wrong_execution_records: int
    wrong_tenants: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row equals the expected one and no row is missing or extra."""
        return self.wrong_execution_records == 0 and self.wrong_tenants == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the results file."""
        return {
            "ok": self.ok,
            "expected_execution_records": self.expected_execution_records,
            "expected_tenants": self.expected_tenants,
            "wrong_execution_records": self.wrong_execution_records,
            "wrong_tenants": self.wrong_tenants,
            "examples": self.examples,
        }


_EXPECTED_ER = """
CREATE TEMP TABLE _expected_er (
  "requestId" text PRIMARY KEY, "tenantId" text,
  snap text, snap_at timestamptz, snap_id uuid,
  cost text, cost_at timestamptz, cost_id uuid)
"""
_EXPECTED_T = """
CREATE TEMP TABLE _expected_t (id text PRIMARY KEY, pol text, pol_at timestamptz, pol_id uuid)
"""

_WRONG_ER = """
SELECT coalesce(e."requestId", r."requestId") AS key,
       CASE WHEN r."requestId" IS NULL THEN 'missing'
            WHEN e."requestId" IS NULL THEN 'unexpected'
            WHEN r."tenantId" IS DISTINCT FROM e."tenantId" THEN 'tenantId'
            WHEN r."routingSnapshot" IS DISTINCT FROM (e.snap::jsonb -> 'payload')
                 THEN 'routingSnapshot'
            WHEN r."actualCost" IS DISTINCT FROM (e.cost::jsonb -> 'payload') THEN 'actualCost'
            WHEN r.id IS DISTINCT FROM e."requestId" THEN 'id'
            ELSE 'version columns' END AS what
FROM _expected_er e FULL JOIN "ExecutionRecord" r ON r."requestId" = e."requestId"
WHERE r."requestId" IS NULL OR e."requestId" IS NULL
   OR r."tenantId" IS DISTINCT FROM e."tenantId"
   OR r.id IS DISTINCT FROM e."requestId"
   OR r."routingSnapshot" IS DISTINCT FROM (e.snap::jsonb -> 'payload')
   OR r."actualCost" IS DISTINCT FROM (e.cost::jsonb -> 'payload')
   {versions}
"""
_ER_VERSIONS = """
   OR r."routingSnapshotOccurredAt" IS DISTINCT FROM e.snap_at
   OR r."routingSnapshotEventId" IS DISTINCT FROM e.snap_id
   OR r."actualCostOccurredAt" IS DISTINCT FROM e.cost_at
   OR r."actualCostEventId" IS DISTINCT FROM e.cost_id
"""
_WRONG_T = """
SELECT coalesce(e.id, t.id) AS key,
       CASE WHEN t.id IS NULL THEN 'missing' WHEN e.id IS NULL THEN 'unexpected'
            WHEN t."routingPolicy" IS DISTINCT FROM (e.pol::jsonb -> 'payload') THEN 'routingPolicy'
            ELSE 'version columns' END AS what
FROM _expected_t e FULL JOIN "Tenant" t ON t.id = e.id
WHERE t.id IS NULL OR e.id IS NULL
   OR t."routingPolicy" IS DISTINCT FROM (e.pol::jsonb -> 'payload')
   {versions}
"""
_T_VERSIONS = """
   OR t."routingPolicyOccurredAt" IS DISTINCT FROM e.pol_at
   OR t."routingPolicyEventId" IS DISTINCT FROM e.pol_id
"""


async def check_rows(
    database_url: str,
    oracle: Oracle,
    tenants: list[str],
    *,
    versions: bool = True,
) -> CheckResult:
    """Compare the database's two tables with the oracle's expected rows.

    ``versions`` also compares the bookkeeping columns (occurredAt and eventId of the stored
    version); a peer that does not keep them is checked on the payloads and keys only.
    """
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(_EXPECTED_ER)
        await conn.execute(_EXPECTED_T)
        er_rows = oracle.execution_rows()
        t_rows = oracle.tenant_rows(tenants)
        await conn.copy_records_to_table("_expected_er", records=er_rows)
        await conn.copy_records_to_table("_expected_t", records=t_rows)
        wrong_er = await conn.fetch(_WRONG_ER.format(versions=_ER_VERSIONS if versions else ""))
        wrong_t = await conn.fetch(_WRONG_T.format(versions=_T_VERSIONS if versions else ""))
    finally:
        await conn.close()
    examples = [f"ExecutionRecord {r['key']}: {r['what']}" for r in wrong_er[:5]]
    examples += [f"Tenant {r['key']}: {r['what']}" for r in wrong_t[:5]]
    return CheckResult(
        expected_execution_records=len(er_rows),
        expected_tenants=len(t_rows),
        wrong_execution_records=len(wrong_er),
        wrong_tenants=len(wrong_t),
        examples=examples,
    )

"""L, a limit a consumer can reach: the least CPU a correct consumer of the backlog needs.

``python -m bench.workers limit ...`` runs :func:`measure_limit` in a process of its own:

1. **read**: aiokafka reads the backlog to its end as the service does (``read_committed``,
   ``getmany(max_records=2000)``, the service's fetch sizes), no group, no decoding; each
   ``getmany`` is one batch. Timed: this process's CPU and the broker's.
2. **prepare** (not timed): per batch, the newest version of every (row, field) the batch touches,
   as a correct consumer must write it at its batch boundary (it cannot know whether a newer
   version follows in a later batch).
3. **write**: per batch one transaction with one bulk statement per table: an
   ``INSERT ... SELECT FROM unnest(...) ON CONFLICT ... DO UPDATE`` of ``"ExecutionRecord"`` and an
   ``UPDATE ... FROM unnest(...)`` of ``"Tenant"``, each with the contract's guards (the stored
   version older, the row's tenant the event's). Timed: PostgreSQL's CPU (the whole server).

L = cores / (read CPU + broker CPU + PostgreSQL CPU) per event. Decoding, validation, the
service's bookkeeping and anything else a real consumer adds are left out: the service is
reported as a fraction of L. The rows it leaves are checked against the oracle like every
system's. Method: ``bench/RESULTS.md``.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer

from bench.cpu import StackCpu
from bench.infra import partition_ends

__all__ = ["BATCH_RECORDS", "Batch", "final_versions", "measure_limit"]

#: The service's default ``batch_max_records``: one ``getmany()``, one transaction.
BATCH_RECORDS: Final = 2000
_TIMEOUT_MS: Final = 200


class _Envelope(msgspec.Struct):
    eventId: uuid.UUID  # the contract's field names
    type: str
    occurredAt: datetime
    tenantId: str
    payload: msgspec.Raw
    requestId: str | None = None


_DECODE = msgspec.json.Decoder(_Envelope).decode

_Version = tuple[datetime, uuid.UUID]


@dataclass
class Batch:
    """The rows one batch must write: per row key, the newest candidate of each field."""

    records: int = 0
    #: requestId -> [tenant, snapshot (version, payload) or None, cost (...) or None]
    execution: dict[str, list[Any]] = field(default_factory=dict)
    #: tenantId -> (version, payload)
    policies: dict[str, tuple[_Version, str]] = field(default_factory=dict)

    def er_arrays(self) -> list[list[Any]]:
        """The ``"ExecutionRecord"`` statement's eight parameter arrays."""
        cols: list[list[Any]] = [[] for _ in range(8)]
        for key, (tenant, snap, cost) in self.execution.items():
            row = [key, tenant]
            for candidate in (snap, cost):
                if candidate is None:
                    row += [None, None, None]
                else:
                    (at, eid), payload = candidate
                    row += [payload, at, eid]
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        return cols

    def tenant_arrays(self) -> list[list[Any]]:
        """The ``"Tenant"`` statement's four parameter arrays."""
        cols: list[list[Any]] = [[], [], [], []]
        for key, ((at, eid), payload) in self.policies.items():
            for col, value in zip(cols, (key, payload, at, eid), strict=True):
                col.append(value)
        return cols


def final_versions(values: list[bytes]) -> Batch:
    """The newest version per (row, field) among one batch's records (see the module doc)."""
    batch = Batch(records=len(values))
    for value in values:
        env = _DECODE(value)
        version = (env.occurredAt, env.eventId)
        payload = bytes(env.payload).decode()
        if env.type == "tenant.policy":
            current = batch.policies.get(env.tenantId)
            if current is None or current[0] < version:
                batch.policies[env.tenantId] = (version, payload)
            continue
        assert env.requestId is not None
        row = batch.execution.setdefault(env.requestId, [env.tenantId, None, None])
        slot = 1 if env.type == "routing.snapshot" else 2
        current = row[slot]
        if current is None or current[0] < version:
            row[slot] = (version, payload)
    return batch


def _newer(field: str, at: str, eid: str) -> str:
    stored_at, stored_eid = f'r."{field}OccurredAt"', f'r."{field}EventId"'
    older = f"({stored_at}, {stored_eid}) < ({at}, {eid})"
    return f"({at} IS NOT NULL AND ({stored_at} IS NULL OR {older}))"


def _take(field: str) -> str:
    guard = _newer(field, f'EXCLUDED."{field}OccurredAt"', f'EXCLUDED."{field}EventId"')
    return ", ".join(
        f'"{c}" = CASE WHEN {guard} THEN EXCLUDED."{c}" ELSE r."{c}" END'
        for c in (field, f"{field}OccurredAt", f"{field}EventId")
    )


_ER_SQL: Final = f"""
INSERT INTO "ExecutionRecord" AS r (id, "requestId", "tenantId",
    "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId",
    "actualCost", "actualCostOccurredAt", "actualCostEventId")
SELECT k, k, t, s::jsonb, so, se, c::jsonb, co, ce
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[],
            $6::text[], $7::timestamptz[], $8::uuid[]) AS u(k, t, s, so, se, c, co, ce)
ON CONFLICT ("requestId") DO UPDATE SET {_take("routingSnapshot")}, {_take("actualCost")}
WHERE r."tenantId" = EXCLUDED."tenantId"
  AND ({
    _newer(
        "routingSnapshot",
        'EXCLUDED."routingSnapshotOccurredAt"',
        'EXCLUDED."routingSnapshotEventId"',
    )
}
       OR {_newer("actualCost", 'EXCLUDED."actualCostOccurredAt"', 'EXCLUDED."actualCostEventId"')})
"""
_TENANT_SQL: Final = """
UPDATE "Tenant" AS r SET "routingPolicy" = u.p::jsonb, "routingPolicyOccurredAt" = u.o,
    "routingPolicyEventId" = u.e
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[]) AS u(k, p, o, e)
WHERE r.id = u.k
  AND (r."routingPolicyOccurredAt" IS NULL
       OR (r."routingPolicyOccurredAt", r."routingPolicyEventId") < (u.o, u.e))
"""


async def _read(
    bootstrap: str, topics: list[str], stack: StackCpu
) -> tuple[list[list[bytes]], dict[str, Any]]:
    """Read every record of ``topics`` to the end offsets taken at start, batch by batch."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=BATCH_RECORDS,
    )
    await consumer.start()
    batches: list[list[bytes]] = []
    try:
        ends = await partition_ends(consumer, topics)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning()
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        count = 0
        machine0 = stack.sample()
        started, cpu0 = time.perf_counter(), time.process_time()
        while remaining:
            got = await consumer.getmany(timeout_ms=_TIMEOUT_MS, max_records=BATCH_RECORDS)
            values: list[bytes] = []
            for tp, records in got.items():
                values += [r.value for r in records if r.value is not None]
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
            if values:
                batches.append(values)
                count += len(values)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        delta = StackCpu.between(machine0, stack.sample())
    finally:
        await consumer.stop()
    return batches, {
        "events": count,
        "batches": len(batches),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "stack_cpu": delta.as_dict(),
    }


async def _write(database_url: str, batches: list[Batch], stack: StackCpu) -> dict[str, Any]:
    """One transaction per batch, one statement per table; timed."""
    conn = await asyncpg.connect(database_url)
    try:
        params = [(b.er_arrays(), b.tenant_arrays() if b.policies else None) for b in batches]
        await conn.prepare(_ER_SQL)  # planned before the clock, as a running consumer's are
        await conn.prepare(_TENANT_SQL)
        machine0 = stack.sample()
        started, cpu0 = time.perf_counter(), time.process_time()
        for er, tenant in params:
            async with conn.transaction():
                if er[0]:
                    await conn.execute(_ER_SQL, *er)
                if tenant is not None:
                    await conn.execute(_TENANT_SQL, *tenant)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        delta = StackCpu.between(machine0, stack.sample())
    finally:
        await conn.close()
    return {
        "transactions": len(params),
        "execution_rows": sum(len(b.execution) for b in batches),
        "tenant_rows": sum(len(b.policies) for b in batches),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "stack_cpu": delta.as_dict(),
    }


async def measure_limit(
    bootstrap: str, topics: list[str], database_url: str, stack: StackCpu
) -> dict[str, Any]:
    """Read, prepare, write (see the module docstring); the figures of each phase."""
    values, read = await _read(bootstrap, topics, stack)
    started = time.perf_counter()
    batches = [final_versions(v) for v in values]
    values.clear()
    prepared_s = time.perf_counter() - started
    write = await _write(database_url, batches, stack)
    return {"read": read, "prepare_seconds": prepared_s, "write": write, "cores": os.cpu_count()}

"""Baseline consumers run as subprocesses by the benchmark (``python -m bench.workers ...``).

``limit`` measures L, the CPU a correct consumer of the backlog cannot do without
(:mod:`bench.limit`); ``naive`` is a direct translation of the B6 functions (one session,
statement and ``COMMIT`` per record, plus an upsert and the version guard so its rows compare).
Each prints one JSON line; ``naive``'s: ``events``, ``seconds``, ``cpu_seconds``,
``peak_rss_bytes`` and ``stack_cpu`` (:mod:`bench.cpu`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.cpu import CpuSample, StackCpu
from bench.infra import partition_ends
from bench.limit import measure_limit

__all__ = ["main"]


def _peak_rss() -> int:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a worker forked from the
    # benchmark (which holds the workload in memory) would report the benchmark's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _report(
    events: int, seconds: float, cpu: float, stack: StackCpu, since: CpuSample, **extra: Any
) -> None:
    machine = StackCpu.between(since, stack.sample()).as_dict()
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "events": events,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_bytes": peak,
                "stack_cpu": machine,
            }
            | extra
        ),
        flush=True,
    )


_SNAPSHOT = text("""
INSERT INTO "ExecutionRecord" AS r (id, "requestId", "tenantId", "routingSnapshot",
                               "routingSnapshotOccurredAt", "routingSnapshotEventId")
VALUES (:rid, :rid, :tid, CAST(:env AS jsonb) -> 'payload', :at, :eid)
ON CONFLICT ("requestId") DO UPDATE
SET "routingSnapshot" = EXCLUDED."routingSnapshot",
    "routingSnapshotOccurredAt" = EXCLUDED."routingSnapshotOccurredAt",
    "routingSnapshotEventId" = EXCLUDED."routingSnapshotEventId"
WHERE (r."tenantId" IS NULL OR r."tenantId" = EXCLUDED."tenantId")
  AND (r."routingSnapshotOccurredAt" IS NULL
       OR (r."routingSnapshotOccurredAt", r."routingSnapshotEventId")
          < (EXCLUDED."routingSnapshotOccurredAt", EXCLUDED."routingSnapshotEventId"))
""")
_COST = text("""
INSERT INTO "ExecutionRecord" AS r (id, "requestId", "tenantId", "actualCost",
                               "actualCostOccurredAt", "actualCostEventId")
VALUES (:rid, :rid, :tid, CAST(:env AS jsonb) -> 'payload', :at, :eid)
ON CONFLICT ("requestId") DO UPDATE
SET "actualCost" = EXCLUDED."actualCost",
    "actualCostOccurredAt" = EXCLUDED."actualCostOccurredAt",
    "actualCostEventId" = EXCLUDED."actualCostEventId"
WHERE (r."tenantId" IS NULL OR r."tenantId" = EXCLUDED."tenantId")
  AND (r."actualCostOccurredAt" IS NULL
       OR (r."actualCostOccurredAt", r."actualCostEventId")
          < (EXCLUDED."actualCostOccurredAt", EXCLUDED."actualCostEventId"))
""")
_POLICY = text("""
UPDATE "Tenant"
SET "routingPolicy" = CAST(:env AS jsonb) -> 'payload',
    "routingPolicyOccurredAt" = :at, "routingPolicyEventId" = :eid
WHERE id = :tid
  AND ("routingPolicyOccurredAt" IS NULL
       OR ("routingPolicyOccurredAt", "routingPolicyEventId") < (:at, :eid))
""")


async def naive(
    bootstrap: str, topics: list[str], group: str, database_url: str, stack: StackCpu
) -> None:
    """Apply every record with its own session, statement and commit; commit each offset."""
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        ends = await partition_ends(consumer, topics)
        total = sum(ends.values())
        count = 0
        started = cpu0 = 0.0
        machine0 = stack.sample()
        async for record in consumer:
            if count == 0:
                machine0 = stack.sample()
                started, cpu0 = time.perf_counter(), time.process_time()
            envelope = json.loads(record.value)
            params = {
                "env": record.value.decode(),
                "tid": envelope["tenantId"],
                "rid": envelope.get("requestId"),
                "at": datetime.fromisoformat(envelope["occurredAt"]),
                "eid": uuid.UUID(envelope["eventId"]),
            }
            statement = {
                "routing.snapshot": _SNAPSHOT,
                "routing.cost": _COST,
                "tenant.policy": _POLICY,
            }[envelope["type"]]
            async with sessions() as session:
                await session.execute(statement, params)
                await session.commit()
            await consumer.commit(
                {TopicPartition(record.topic, record.partition): record.offset + 1}
            )
            count += 1
            if count >= total:
                break
        _report(count, time.perf_counter() - started, time.process_time() - cpu0, stack, machine0)
    finally:
        await consumer.stop()
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.workers {limit,naive} ...``."""
    parser = argparse.ArgumentParser(prog="bench.workers")
    parser.add_argument("worker", choices=["limit", "naive"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--group", default="")
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--pg-port", type=int, default=None, help="PostgreSQL's port (to find the stack's server)"
    )
    args = parser.parse_args(argv)
    topics = args.topics.split(",")
    stack = StackCpu.for_addresses(
        args.bootstrap,
        args.pg_port,
        harness_pid=os.getppid(),
        database_url=args.database_url or None,
    )
    if args.worker == "limit":
        report = asyncio.run(measure_limit(args.bootstrap, topics, args.database_url, stack))
        print(json.dumps(report | {"peak_rss_bytes": _peak_rss()}), flush=True)
    else:
        url = args.database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        asyncio.run(naive(args.bootstrap, topics, args.group, url, stack))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Part 2 of :mod:`bench.held`: what one release cycle costs when many old fields are held.

:func:`measure_release` fills a migrated database with ``n_old`` held rows whose row never
comes (held over the last 7 days; realistic record bytes) beside ``n_old`` other
``"ExecutionRecord"`` rows, then per chunk size times the service's own steps
(:class:`consumer.pipeline.release.Releaser`): one release step (newest chunk + the sweep's next
chunk) and one expiry step back to back, as a cycle runs them, over a whole sweep; and the
counting query of the gauges. Then the worst case: a row created just behind the sweep's
position, and the cycles until its field is released.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import asyncpg

from bench.infra import Stack
from bench.workload import generate, tenant_ids
from schemas import dumps, loads

__all__ = ["measure_release"]

_FILL = """
INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId")
SELECT 'er-' || g, 'er-' || g, 't' FROM generate_series(1, $1) AS g;
"""
_FILL_HELD = """
INSERT INTO routing_persistence.held_field (request_id, field, event_id, occurred_at, tenant_id,
    held_at, record_key, record_value, record_headers, source_topic, source_partition,
    source_offset, source_timestamp)
SELECT 'old-' || lpad(g::text, 7, '0'),
       CASE WHEN g % 2 = 0 THEN 'routingSnapshot' ELSE 'actualCost' END,
       gen_random_uuid(), now() - interval '1 hour', 't',
       now() - interval '10 minutes' - (g * (interval '6 days' / $1)),
       convert_to('old-' || lpad(g::text, 7, '0'), 'UTF8'), $2, NULL,
       'bench.snapshots', g % 6, g, 0
FROM generate_series(1, $1) AS g
"""


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure_release(url: str, stack: Stack, n_old: int, chunks: list[int]) -> dict[str, Any]:
    """The figures described in the module docstring, per chunk size."""
    from consumer.db import create_engine
    from consumer.pipeline.deadletter import DeadLetterWriter, new_dead_letter_producer
    from consumer.pipeline.held import held_stats
    from consumer.pipeline.release import Releaser, ReleaseReport
    from consumer.settings import Settings

    value = next(
        e for e in generate(20, seed=1, tenants=tenant_ids(1)) if e.type.value == "routing.snapshot"
    ).value
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await conn.execute(_FILL.replace("$1", str(int(n_old))))
        await conn.execute(_FILL_HELD, n_old, value)
        await conn.execute('ANALYZE "ExecutionRecord", routing_persistence.held_field')
        fill_s = time.monotonic() - started
    finally:
        await conn.close()
    out: dict[str, Any] = {"old_held": n_old, "fill_s": round(fill_s, 1), "chunks": {}}
    base = Settings(database_url=url, kafka_bootstrap_servers=stack.bootstrap)
    producer = new_dead_letter_producer(base)
    await producer.start()
    engine = create_engine(base)
    try:
        writer = DeadLetterWriter(producer, topic="bench-held-unused", group_id="bench-held")
        gauges = []
        for _ in range(10):
            t0 = time.monotonic()
            stats = await held_stats(engine)
            gauges.append(time.monotonic() - t0)
        assert stats.total == n_old, stats
        out["gauge_query"] = _ms(gauges)
        for n, chunk in enumerate(chunks):
            settings = base.model_copy(update={"held_chunk": chunk})
            releaser = Releaser(settings, engine, writer)
            cycles: list[float] = []
            per_sweep: int | None = None  # cycles until the sweep first wrapped
            while per_sweep is None or len(cycles) < 10:
                report = ReleaseReport()
                t0 = time.monotonic()
                await releaser.release(report)
                await releaser.expire(report)
                cycles.append(time.monotonic() - t0)
                assert report.candidates == 0, report
                assert not report.released, report
                if report.swept and per_sweep is None:
                    per_sweep = len(cycles)
            # The worst case: the row appears right behind the sweep's position.
            target = f"old-{(n + 1) * n_old // (len(chunks) + 1):07d}"
            # (When every held row fits in one chunk, each cycle sweeps them all: no waiting.)
            while n_old > chunk and (not releaser._cursor or releaser._cursor < target):
                await releaser.release(ReleaseReport())
            await _create_row(url, target, value)
            waited = 0
            while True:
                waited += 1
                report = ReleaseReport()
                await releaser.release(report)
                if report.released:
                    break
            out["chunks"][str(chunk)] = {
                "cycle": _ms(cycles),
                "cycles_per_sweep": per_sweep,
                "worst_case_cycles_to_release": waited,
            }
            print(f"bench.held: release, chunk {chunk}: {out['chunks'][str(chunk)]}", flush=True)
    finally:
        await engine.dispose()
        await producer.stop()
    return out


async def _create_row(url: str, request: str, value: bytes) -> None:
    """The row of ``request``, and its held records made that request's (as holding made them)."""
    envelope = loads(value)
    envelope["requestId"] = request
    envelope["tenantId"] = envelope["payload"]["tenantId"] = "t"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE routing_persistence.held_field SET record_value = $2 WHERE request_id = $1",
            request,
            dumps(envelope),
        )
        await conn.execute(
            'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") VALUES ($1, $1, $2)',
            request,
            "t",
        )
    finally:
        await conn.close()

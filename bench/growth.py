"""Why the cost per event grows within a long run: what changes from one tenth of it to the next.

:class:`EventMix` counts, per tenth of the backlog in the order it was produced, what the events
ask of a consumer (new rows, newer versions of existing rows, stale or duplicate versions, by
type). :class:`TenthProbe` follows a timed consumer (:func:`bench.systems.watch_group`) and, each
time its committed offsets cross a tenth of the window's records, snapshots the CPU of the
service (user and system apart), PostgreSQL, the broker and the machine, the target tables'
statistics (``pg_stat_user_tables``, ``pg_statio_user_tables``, sizes), WAL and checkpoints, and
the service's own batch counters (``/metrics``); at every poll it also notes whether an
autovacuum worker runs (``pg_stat_activity``) and times a *canary*: the same fixed piece of work
(the consumer's decoder on 100 realistic records) in this process. The canary's CPU per record
does not depend on the run; if it grows along with the service's, the machine (shared caches,
the other vCPU's load) explains the service's growth, not the service's work.
With ``profile_dir`` (``bench.run --profile``), py-spy samples the (first) service process
tenth by tenth, one file per tenth: which frames grow. :meth:`TenthProbe.tenths` turns the
snapshots into per-tenth figures. Each partition is read
at about the same pace, so a tenth of the committed records is about a tenth of the produced
order.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.cpu import CpuSample, StackCpu
from bench.oracle import payload_text
from bench.profile import Profiler
from bench.workload import Event, generate, tenant_ids
from consumer.pipeline.decode import decode_event
from schemas import EventType

__all__ = [
    "TYPES",
    "EventMix",
    "TenthProbe",
    "fit_by_type",
    "prefill",
    "process_times",
    "remove_prefill",
]

#: The event types, in the order :func:`fit_by_type` reports them.
TYPES = ("routing.snapshot", "routing.cost", "tenant.policy")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


class EventMix:
    """Per tenth of ``total`` produced events: what each asks of a consumer (see module doc)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = 0
        self.newest: dict[tuple[EventType, str], tuple[Any, ...]] = {}
        self.rows: set[str] = set()
        self.ids: set[object] = set()
        self.tenths: list[dict[str, int]] = [{} for _ in range(10)]

    def add(self, event: Event) -> None:
        """Account for the next produced event."""
        tenth = self.tenths[min(9, self.seen * 10 // max(1, self.total))]
        self.seen += 1
        kind = event.type.value
        tenth[kind] = tenth.get(kind, 0) + 1
        if event.event_id in self.ids:
            what = "duplicate"
        else:
            self.ids.add(event.event_id)
            key = (event.type, event.row_key)
            current = self.newest.get(key)
            if current is not None and event.version < current:
                what = "stale"
            else:
                self.newest[key] = event.version
                if event.type is EventType.POLICY:
                    what = "newer"
                elif event.row_key not in self.rows:
                    self.rows.add(event.row_key)
                    what = "new_row"
                else:
                    what = "newer"
        tenth[what] = tenth.get(what, 0) + 1

    def as_list(self) -> list[dict[str, float]]:
        """Per tenth, each count as a share of the tenth's events."""
        out = []
        for counts in self.tenths:
            n = sum(counts.get(t.value, 0) for t in EventType) or 1
            out.append({k: round(v / n, 4) for k, v in sorted(counts.items())} | {"events": n})
        return out


_TABLE_SQL = """
SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd,
       s.autovacuum_count, s.autoanalyze_count, pg_table_size(s.relid) AS table_bytes,
       pg_indexes_size(s.relid) AS index_bytes,
       io.heap_blks_read, io.heap_blks_hit, io.idx_blks_read, io.idx_blks_hit,
       coalesce(io.toast_blks_read, 0) AS toast_blks_read,
       coalesce(io.toast_blks_hit, 0) AS toast_blks_hit
FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)
WHERE s.relname IN ('ExecutionRecord', 'Tenant')
"""
_SERVER_SQL = """
SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes,
       b.checkpoints_timed + b.checkpoints_req AS checkpoints, b.buffers_backend,
       b.buffers_clean, b.buffers_checkpoint
FROM pg_stat_wal w, pg_stat_bgwriter b
"""
_AUTOVACUUM_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
_METRICS = (
    "routing_consumer_batch_size_count",
    "routing_consumer_batch_size_sum",
    "routing_consumer_events_total",
)


def _consumed(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the service itself handled between two scrapes, from its ``events_total`` counters:
    the share of each event type and of stale events (the order the topics are read in decides
    this, not the order they were produced in)."""
    by_type: dict[str, float] = {}
    stale = 0.0
    for key, value in after.items():
        if not key.startswith("routing_consumer_events_total{"):
            continue
        n = value - before.get(key, 0.0)
        kind = key.split('type="', 1)[1].split('"', 1)[0] if 'type="' in key else "?"
        by_type[kind] = by_type.get(kind, 0.0) + n
        if 'outcome="stale"' in key:
            stale += n
    total = sum(by_type.values())
    if not total:
        return {}
    return {
        "consumed_shares": {k: round(v / total, 3) for k, v in sorted(by_type.items())},
        "consumed_stale_share": round(stale / total, 3),
    }


def _samples(raw: Path) -> tuple[int, Counter[str]]:
    """py-spy's raw samples: their total and the count per frame on top of the stack."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            total += int(n)
            own[stack.rsplit(";", 1)[-1]] += int(n)
    return total, own


_CANARY_RECORDS = [
    e.value for e in generate(100, seed=1, tenants=tenant_ids(10), workload="realistic")
]


def _canary() -> float:
    """CPU seconds (this thread) of decoding the canary's 100 records once."""
    started = time.thread_time()
    for value in _CANARY_RECORDS:
        decode_event(value)
    return time.thread_time() - started


@dataclass
class _Snapshot:
    at: float
    done: int
    user: float
    system: float
    cpu: CpuSample
    tables: dict[str, dict[str, int]]
    server: dict[str, int]
    metrics: dict[str, float]
    autovacuum_polls: int
    polls: int
    canary_s: float


def _scrape(ports: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(_METRICS):
                metric, _, value = line.rpartition(" ")
                out[metric] = out.get(metric, 0.0) + float(value)
    return out


@dataclass
class TenthProbe:
    """Snapshots of a consumer's window at each tenth of its records (see the module doc)."""

    database_url: str
    pids: list[int]
    metrics_ports: list[int]
    stack: StackCpu
    snapshots: list[_Snapshot] = field(default_factory=list)
    _conn: asyncpg.Connection | None = None
    _base: int | None = None
    _span: int = 0
    _autovacuum_polls: int = 0
    _polls: int = 0
    _canary_s: float = 0.0
    profile_dir: Path | None = None
    _profiler: Profiler | None = None

    async def start(self) -> None:
        """Connect (before the window opens: the connection is not part of it)."""
        self._conn = await asyncpg.connect(self.database_url)

    async def close(self) -> None:
        """Disconnect (and stop the profiler)."""
        if self._profiler is not None:
            await asyncio.to_thread(self._profiler.stop)
            self._profiler = None
        if self._conn is not None:
            await self._conn.close()

    async def poll(self, done: int, first_done: int, total: int) -> None:
        """One poll of the window (``done`` records committed, ``first_done`` at its start)."""
        assert self._conn is not None
        self._polls += 1
        self._autovacuum_polls += bool(await self._conn.fetchval(_AUTOVACUUM_SQL))
        self._canary_s += _canary()
        if self._base is None:
            self._base, self._span = first_done, total - first_done
            await self._snap(done)
            return
        due = self._base + len(self.snapshots) * self._span / 10
        if done >= due or done >= total:
            await self._snap(done)

    async def _snap(self, done: int) -> None:
        assert self._conn is not None
        user = system = 0.0
        for pid in self.pids:
            u, s = process_times(pid)
            user, system = user + u, system + s
        cpu = self.stack.sample()
        tables = {r["relname"]: dict(r) for r in await self._conn.fetch(_TABLE_SQL)}
        server = dict(await self._conn.fetchrow(_SERVER_SQL) or {})
        self.snapshots.append(
            _Snapshot(
                time.perf_counter(),
                done,
                user,
                system,
                cpu,
                tables,
                server,
                _scrape(self.metrics_ports),
                self._autovacuum_polls,
                self._polls,
                self._canary_s,
            )
        )
        if self.profile_dir is not None:
            if self._profiler is not None:
                await asyncio.to_thread(self._profiler.stop)
            n = len(self.snapshots)
            self._profiler = Profiler(self.pids[0], self.profile_dir / f"tenth{n}.txt")

    def tenths(self) -> list[dict[str, Any]]:
        """Per interval between consecutive snapshots: per-event costs and what changed."""
        out = []
        for n, (a, b) in enumerate(zip(self.snapshots, self.snapshots[1:], strict=False)):
            events = b.done - a.done
            if events <= 0:
                continue
            delta = StackCpu.between(a.cpu, b.cpu)

            def us(seconds: float | None, n: int = events) -> float | None:
                return None if seconds is None else round(seconds * 1e6 / n, 2)

            er_a, er_b = a.tables.get("ExecutionRecord", {}), b.tables.get("ExecutionRecord", {})

            def er(name: str, er_a: dict[str, int] = er_a, er_b: dict[str, int] = er_b) -> int:
                return int(er_b.get(name, 0)) - int(er_a.get(name, 0))

            batches = b.metrics.get("routing_consumer_batch_size_count", 0) - a.metrics.get(
                "routing_consumer_batch_size_count", 0
            )
            batch_records = b.metrics.get("routing_consumer_batch_size_sum", 0) - a.metrics.get(
                "routing_consumer_batch_size_sum", 0
            )
            polls = b.polls - a.polls
            out.append(
                {
                    "events": events,
                    "seconds": round(b.at - a.at, 3),
                    "events_per_s": round(events / (b.at - a.at)) if b.at > a.at else None,
                    "service_user_us": us(b.user - a.user),
                    "service_system_us": us(b.system - a.system),
                    "service_us": us(b.user - a.user + b.system - a.system),
                    "postgres_us": us(delta.postgres_s),
                    "broker_us": us(delta.broker_s),
                    "machine_us": us(delta.machine_busy_s),
                    "canary_us_per_record": round(
                        (b.canary_s - a.canary_s) * 1e6 / (polls * len(_CANARY_RECORDS)), 2
                    )
                    if polls
                    else None,
                    "other_work_cores": round(
                        (
                            delta.machine_busy_s
                            - (b.user - a.user + b.system - a.system)
                            - (delta.postgres_s or 0.0)
                            - (delta.broker_s or 0.0)
                            - (delta.harness_s or 0.0)
                        )
                        / (b.at - a.at),
                        2,
                    )
                    if b.at > a.at
                    else None,
                    "machine_busy_cores": round(delta.machine_busy_s / (b.at - a.at), 2)
                    if b.at > a.at
                    else None,
                    "mean_batch": round(batch_records / batches) if batches else None,
                    "er_inserts_per_event": round(er("n_tup_ins") / events, 3),
                    "er_updates_per_event": round(er("n_tup_upd") / events, 3),
                    "er_hot_share": round(er("n_tup_hot_upd") / er("n_tup_upd"), 3)
                    if er("n_tup_upd") > 0
                    else None,
                    "er_live_rows_end": er_b.get("n_live_tup"),
                    "er_dead_rows_end": er_b.get("n_dead_tup"),
                    "er_table_mib_end": round(er_b.get("table_bytes", 0) / 2**20, 1),
                    "er_index_mib_end": round(er_b.get("index_bytes", 0) / 2**20, 1),
                    "er_autovacuums": er("autovacuum_count"),
                    "er_autoanalyzes": er("autoanalyze_count"),
                    "autovacuum_running_share": round(
                        (b.autovacuum_polls - a.autovacuum_polls) / polls, 2
                    )
                    if polls
                    else None,
                    "er_blocks_read_per_event": round(
                        (er("heap_blks_read") + er("idx_blks_read") + er("toast_blks_read"))
                        / events,
                        3,
                    ),
                    "er_blocks_hit_per_event": round(
                        (er("heap_blks_hit") + er("idx_blks_hit") + er("toast_blks_hit")) / events,
                        2,
                    ),
                    "wal_bytes_per_event": round(
                        (b.server.get("wal_bytes", 0) - a.server.get("wal_bytes", 0)) / events
                    ),
                    "wal_fpi_per_1000": round(
                        (b.server.get("wal_fpi", 0) - a.server.get("wal_fpi", 0)) * 1000 / events,
                        2,
                    ),
                    "checkpoints": b.server.get("checkpoints", 0) - a.server.get("checkpoints", 0),
                    "buffers_written_by_backends": b.server.get("buffers_backend", 0)
                    - a.server.get("buffers_backend", 0),
                }
                | _consumed(a.metrics, b.metrics)
                | self._profile_of(n + 1, events)
            )
        return out

    def _profile_of(self, tenth: int, events: int) -> dict[str, Any]:
        """The tenth's py-spy samples per 1,000 events (total and the top frames)."""
        if self.profile_dir is None or not (self.profile_dir / f"tenth{tenth}.txt").exists():
            return {}
        total, own = _samples(self.profile_dir / f"tenth{tenth}.txt")
        per = 1000 / events
        return {
            "profile_samples_per_1000": round(total * per, 2),
            "profile_self_per_1000": [
                [frame, round(count * per, 3)] for frame, count in own.most_common(12)
            ],
        }


_PREFIX = "pre-"
_PREFILL = """
INSERT INTO "ExecutionRecord" (id, "requestId", "tenantId",
    "routingSnapshot", "routingSnapshotOccurredAt", "routingSnapshotEventId")
SELECT $1 || g, $1 || g, $2, ($3::text[])[1 + g % cardinality($3)]::jsonb,
    now() - interval '1 day', gen_random_uuid()
FROM generate_series(1, $4) AS g
"""
_PREFILL_COST = """
UPDATE "ExecutionRecord" SET "actualCost" = ($1::text[])[1 + (random() * 999)::int]::jsonb,
    "actualCostOccurredAt" = now() - interval '1 day', "actualCostEventId" = gen_random_uuid()
WHERE "requestId" LIKE $2
"""


async def prefill(database_url: str, rows: int, tenant: str) -> None:
    """Grow ``"ExecutionRecord"`` by ``rows`` rows of realistic payloads, as a run leaves them.

    Each row is inserted with a snapshot, then updated with a cost (one dead version each, as
    the run's rows have), then ``VACUUM ANALYZE``: a table of the size a long run ends with,
    without its pending dead rows. Keys start with ``pre-``: no event of the workload touches
    them, and :func:`remove_prefill` takes them out before the rows are checked.
    """
    samples: dict[str, list[str]] = {"routing.snapshot": [], "routing.cost": []}
    for event in generate(3_000, seed=3, tenants=[tenant], workload="realistic"):
        if event.type.value in samples:
            samples[event.type.value].append(payload_text(event.value))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(_PREFILL, _PREFIX, tenant, samples["routing.snapshot"], rows)
        await conn.execute(_PREFILL_COST, samples["routing.cost"], _PREFIX + "%")
        await conn.execute('VACUUM ANALYZE "ExecutionRecord"')
    finally:
        await conn.close()


async def remove_prefill(database_url: str) -> None:
    """Delete the rows :func:`prefill` added."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute('DELETE FROM "ExecutionRecord" WHERE "requestId" LIKE $1', _PREFIX + "%")
    finally:
        await conn.close()


def fit_by_type(tenths: list[dict[str, Any]], figure: str) -> dict[str, float] | None:
    """``figure`` (e.g. ``service_us``) per event of each type: least squares over the tenths.

    Each tenth's figure is modelled as the mix of types it read (``consumed_shares``) times a
    cost per type, weighted by the tenth's events; no constant term. With ``max_residual``: the
    largest gap between a tenth's figure and the model's. ``None`` without three tenths with
    a mix.
    """
    rows = [
        ([t["consumed_shares"].get(k, 0.0) for k in TYPES], float(t[figure]), float(t["events"]))
        for t in tenths
        if t.get("consumed_shares") and t.get(figure) is not None
    ]
    if len(rows) < 3:
        return None
    n = len(TYPES)
    # Normal equations A c = b, solved by Gauss-Jordan elimination with partial pivoting.
    m = [[0.0] * (n + 1) for _ in range(n)]
    for x, y, w in rows:
        for i in range(n):
            m[i][n] += w * x[i] * y
            for j in range(n):
                m[i][j] += w * x[i] * x[j]
    for i in range(n):
        pivot = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[pivot] = m[pivot], m[i]
        if abs(m[i][i]) < 1e-12:
            return None  # a type never read: its cost is not determined
        for r in range(n):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [a - f * b for a, b in zip(m[r], m[i], strict=True)]
    cost = [m[i][n] / m[i][i] for i in range(n)]
    residual = max(abs(y - sum(c * v for c, v in zip(cost, x, strict=True))) for x, y, _ in rows)
    return {k: round(c, 2) for k, c in zip(TYPES, cost, strict=True)} | {
        "max_residual": round(residual, 2)
    }

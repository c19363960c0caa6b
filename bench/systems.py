"""Running each measured system on a backlog: this service (any checkout), the naive port, L.

Each system gets a fresh database (a copy of the run's migrated template) and a fresh group and
reads a backlog produced before it starts. The service runs as the real ``routing-persistence
run`` subprocess, timed by its group's committed offsets (committed only after the rows are,
``docs/contract.md`` §3); how every figure is taken: ``bench/RESULTS.md``, "Method".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import CpuDelta, StackCpu, breakdown
from bench.growth import TenthProbe
from bench.infra import (
    ROOT,
    GroupProgress,
    Stack,
    TopicSet,
    cpu_seconds,
    free_port,
    peak_rss_bytes,
)
from bench.limit import BATCH_RECORDS
from bench.oracle import CheckResult
from bench.profile import Profiler, top_frames

__all__ = [
    "POLL_INTERVAL_S",
    "Measured",
    "run_limit",
    "run_naive",
    "run_service_backlog",
    "service_command",
    "service_env",
    "start_service",
    "stop_service",
    "watch_group",
]


@dataclass
class Measured:
    """What one system did with one backlog."""

    name: str
    events: int
    seconds: float
    cpu_seconds: float | None
    peak_rss_bytes: int | None
    check: CheckResult | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Throughput over the timed window."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_1000(self) -> float | None:
        """CPU seconds of the process per 1,000 events."""
        if self.cpu_seconds is None or self.events == 0:
            return None
        return self.cpu_seconds * 1000 / self.events

    @property
    def counts(self) -> bool:
        """Whether the figures count: the rows were checked and all equal the expected ones."""
        return self.check is None or self.check.ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the results file."""
        return {
            "name": self.name,
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "cpu_s_per_1000_events": None
            if self.cpu_per_1000 is None
            else round(self.cpu_per_1000, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "rows": None if self.check is None else self.check.as_dict(),
            "counts": self.counts,
            "notes": self.notes,
            **self.extra,
        }


#: How often a window's committed offsets are polled: the window's ends are known to this.
POLL_INTERVAL_S = 0.1


def service_command(checkout: Path | None = None) -> list[str]:
    """The console script of the service under test (``routing-persistence``).

    ``checkout``'s venv (another checkout with its own ``.venv``: ``bench.run --baseline``), else
    the one of ``$BENCH_SERVICE_CHECKOUT``, else this checkout's: the same harness then measures
    another version of the service, for A/B comparisons in one run of interleaved invocations.
    """
    other = str(checkout) if checkout is not None else os.environ.get("BENCH_SERVICE_CHECKOUT")
    bin_dir = Path(other) / ".venv" / "bin" if other else Path(sys.executable).parent
    script = bin_dir / "routing-persistence"
    if script.exists():
        return [str(script)]
    if other:
        raise FileNotFoundError(f"no routing-persistence in {bin_dir} (BENCH_SERVICE_CHECKOUT)")
    return [sys.executable, "-c", "from consumer.cli import main; main()"]


def service_env(
    stack: Stack,
    topics: TopicSet,
    database_url: str,
    group: str,
    metrics_port: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a service subprocess: its own topics, database, group and port.

    ``ROUTING_MISSING_ROW_POLICY=create``: the workload's events create their rows, as every
    system here does and as the service did up to 0.1.0 (``bench/held.py`` measures ``park``,
    the default, with the rows made by "Project A"). ``extra`` overrides.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTING_")}
    env |= {
        "ROUTING_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "ROUTING_DATABASE_URL": database_url,
        "ROUTING_GROUP_ID": group,
        "ROUTING_TOPIC_SNAPSHOTS": topics.snapshots,
        "ROUTING_TOPIC_COSTS": topics.costs,
        "ROUTING_TOPIC_POLICIES": topics.policies,
        "ROUTING_TOPIC_DLQ": topics.dlq,
        "ROUTING_METRICS_PORT": str(metrics_port),
        "ROUTING_LOG_LEVEL": "WARNING",
        "ROUTING_LOG_FORMAT": "json",
        "ROUTING_MISSING_ROW_POLICY": "create",
    }
    return env | (extra or {})


def start_service(
    env: dict[str, str], log_path: Path, checkout: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``routing-persistence run`` (of ``checkout``, see :func:`service_command`) with
    ``env``, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*service_command(checkout), "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 40.0) -> int:
    """SIGTERM the service and wait for it (SIGKILL after ``timeout``); return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Window:
    """The timed window of a consumer that commits offsets: see the module docstring."""

    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    includes_startup: bool
    #: (seconds, committed records, CPU seconds) at every poll from the first commit on.
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    #: PostgreSQL's, the broker's and the machine's CPU over the same window (:mod:`bench.cpu`).
    cpu_delta: CpuDelta | None = None

    def cpu_breakdown(self) -> dict[str, Any] | None:
        """Per-event CPU of the system, PostgreSQL, the broker and the machine in the window."""
        if self.cpu_delta is None:
            return None
        return breakdown(
            self.cpu_delta, own_s=self.cpu_seconds, events=self.events, seconds=self.seconds
        )

    def cpu_per_1000_in(self, start: float, end: float) -> float | None:
        """CPU seconds per 1,000 records between two fractions (0..1) of the window's records.

        Comparing the first and the last tenth of one long run shows whether the cost per event
        grows as the tables grow, without the run-to-run noise of comparing two runs.
        """
        if len(self.samples) < 3:
            return None
        base = self.samples[0][1]
        span = self.samples[-1][1] - base

        def at(fraction: float) -> tuple[int, float]:
            target = base + fraction * span
            for _, done, cpu in self.samples:
                if done >= target:
                    return done, cpu
            return self.samples[-1][1], self.samples[-1][2]

        (d0, c0), (d1, c1) = at(start), at(end)
        return (c1 - c0) * 1000 / (d1 - d0) if d1 > d0 else None


async def watch_group(
    stack: Stack,
    procs: list[subprocess.Popen[bytes]],
    groups: list[str],
    topics: list[str],
    total: int,
    *,
    stall_timeout: float = 180.0,
    poll_interval: float = POLL_INTERVAL_S,
    on_first: Callable[[], None] | None = None,
    database_url: str | None = None,
    ready: Callable[[], Awaitable[bool]] | None = None,
    probe: TenthProbe | None = None,
) -> Window:
    """Poll ``groups``' committed offsets until they reach ``total``; time that window.

    CPU is summed over ``procs``; peak RSS is the largest one's (each process's own peak).
    PostgreSQL's, the broker's and the machine's CPU (:class:`bench.cpu.StackCpu`) are sampled
    at the same two moments as the processes' CPU. Raises ``RuntimeError`` if a process exits
    first or no progress is made for ``stall_timeout`` seconds (the logs tell why).

    With ``ready``, the window opens at the first commit seen once ``ready()`` is true (several
    processes: once every one of them holds partitions, so the group's start-up rebalances are
    not timed). With ``probe``, each poll of the window is also handed to it
    (:class:`bench.growth.TenthProbe`: what changes along the run).
    """
    spawned = time.perf_counter()
    first: tuple[float, int, float] | None = None
    samples: list[tuple[float, int, float]] = []
    stack_cpu = StackCpu.for_addresses(
        stack.bootstrap, stack.pg_host_port[1], harness_pid=os.getpid(), database_url=database_url
    )
    machine0 = stack_cpu.sample()
    last_change = time.perf_counter()
    last = 0
    async with GroupProgress(stack.bootstrap, groups, topics) as progress:
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"process {proc.pid} exited with {proc.returncode} before the end"
                    )
            done = await progress.committed()
            now = time.perf_counter()
            cpu = sum(cpu_seconds(proc.pid) for proc in procs)
            if done != last:
                last, last_change = done, now
            if first is None and done > 0 and (ready is None or await ready()):
                first = (now, done, cpu)
                if done < total:  # else the window is timed from spawn, as machine0 is
                    machine0 = stack_cpu.sample()
                if on_first is not None:
                    on_first()
            if first is not None:
                samples.append((now - first[0], done, cpu))
                if probe is not None:
                    await probe.poll(done, first[1], total)
            if done >= total:
                delta = StackCpu.between(machine0, stack_cpu.sample())
                peak = max(peak_rss_bytes(proc.pid) for proc in procs)
                # Everything landed in the first commit we saw (or before ready()): from spawn.
                if first is None or first[1] >= total:
                    return Window(
                        total, now - spawned, cpu, peak, includes_startup=True, cpu_delta=delta
                    )
                return Window(
                    total - first[1], now - first[0], cpu - first[2], peak, False, samples, delta
                )
            if now - last_change > stall_timeout:
                ends = await stack.end_offsets(topics)
                committed = await progress.per_partition()
                behind = {
                    f"{tp.topic}:{tp.partition}": (
                        committed.get(f"{tp.topic}:{tp.partition}", 0),
                        end,
                    )
                    for tp, end in ends.items()
                    if committed.get(f"{tp.topic}:{tp.partition}", 0) < end
                }
                raise RuntimeError(
                    f"no progress for {stall_timeout:.0f} s at {done}/{total}; "
                    f"(committed, end) of the partitions behind: {behind}"
                )
            await asyncio.sleep(poll_interval)


async def run_service_backlog(
    stack: Stack,
    topics: TopicSet,
    database_url: str,
    group: str,
    total: int,
    log_path: Path,
    *,
    name: str = "this service",
    profile_path: Path | None = None,
    instances: int = 1,
    env: dict[str, str] | None = None,
    checkout: Path | None = None,
    diagnose: bool = False,
) -> Measured:
    """``routing-persistence run`` catching up on a backlog of ``total`` records (see above).

    ``instances`` > 1 runs that many processes in the one group (how the service scales: by
    partitions); their CPU is summed, the peak RSS is per process. ``checkout``: the service of
    another checkout (:func:`service_command`). With ``profile_path``, py-spy samples the
    (first) process during the catch-up (:mod:`bench.profile`) and the top frames land in
    ``extra["profile"]``. With ``diagnose``, :class:`bench.growth.TenthProbe` follows the window
    and its per-tenth figures land in ``extra["tenths"]``. ``env`` adds to
    :func:`service_env`.
    """
    procs = []
    ports = []
    for n in range(instances):
        ports.append(free_port())
        environment = service_env(stack, topics, database_url, group, ports[-1], env)
        path = log_path if n == 0 else log_path.with_suffix(f".{n}.log")
        procs.append(start_service(environment, path, checkout))
    profilers: list[Profiler] = []

    def profile() -> None:  # from the first commit on: startup (imports) is not the hot path
        if profile_path is not None and not diagnose:  # (the probe profiles tenth by tenth)
            profilers.append(Profiler(procs[0].pid, profile_path))

    async def all_hold_partitions() -> bool:
        # Each process's own gauge: the window opens once the group's start-up rebalances are
        # over, so several processes are timed doing the work, not waiting for the coordinator.
        held = [await asyncio.to_thread(_assigned_partitions, port) for port in ports]
        return all(held)

    probe = None
    if diagnose:
        probe = TenthProbe(
            database_url,
            [p.pid for p in procs],
            ports,
            StackCpu.for_addresses(
                stack.bootstrap,
                stack.pg_host_port[1],
                harness_pid=os.getpid(),
                database_url=database_url,
            ),
            profile_dir=profile_path.parent / f"{profile_path.stem}.tenths"
            if profile_path is not None
            else None,
        )
        await probe.start()
    try:
        window = await watch_group(
            stack,
            procs,
            [group],
            list(topics.sources),
            total,
            on_first=profile,
            database_url=database_url,
            ready=all_hold_partitions if instances > 1 else None,
            probe=probe,
        )
    finally:
        if probe is not None:
            await probe.close()
        for profiler in profilers:
            await asyncio.to_thread(profiler.stop)
        for n, port in enumerate(ports):  # the service's own view, kept beside its log
            await asyncio.to_thread(_save_metrics, port, log_path.with_suffix(f".{n}.metrics.txt"))
        codes = [await asyncio.to_thread(stop_service, proc) for proc in procs]
    notes = []
    if instances > 1:
        notes.append(
            f"{instances} processes in one group, timed from the first commit after every one "
            "holds partitions (the start-up rebalances are outside the window); CPU summed, "
            "peak RSS per process"
        )
    if window.includes_startup:
        notes.append("the whole backlog landed in the first commit seen: timed from spawn")
    code = next((c for c in codes if c != 0), 0)
    if code != 0:
        notes.append(f"exited {code} after SIGTERM (expected 0); see {log_path.name}")
    return Measured(
        name,
        window.events,
        window.seconds,
        window.cpu_seconds,
        window.peak_rss_bytes,
        notes=notes,
        extra={
            "exit_code": code,
            "backlog": total,
            "instances": instances,
            # 10-20 % and 70-80 % of the records: past the warm-up (records fetched before the
            # first commit) and before the tail (partitions finish unevenly, batches shrink).
            "cpu_s_per_1000_early": _round(window.cpu_per_1000_in(0.1, 0.2)),
            "cpu_s_per_1000_late": _round(window.cpu_per_1000_in(0.7, 0.8)),
            "cpu_s_per_1000_by_tenth": [
                _round(window.cpu_per_1000_in(i / 10, (i + 1) / 10)) for i in range(10)
            ],
            "cpu": window.cpu_breakdown(),
            "mean_batch": _mean_batch(log_path, instances),
        }
        | ({"profile": top_frames(profile_path)} if profile_path else {})
        | ({"tenths": probe.tenths()} if probe is not None else {}),
    )


def _mean_batch(log_path: Path, instances: int) -> float | None:
    """Mean records per batch of the service's processes (from the metrics saved at the end)."""
    count = total = 0.0
    for n in range(instances):
        path = log_path.with_suffix(f".{n}.metrics.txt")
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.startswith("routing_consumer_batch_size_count "):
                count += float(line.split()[1])
            elif line.startswith("routing_consumer_batch_size_sum "):
                total += float(line.split()[1])
    return round(total / count, 1) if count else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _assigned_partitions(port: int) -> int:
    """``routing_consumer_assigned_partitions`` of the service on ``port`` (0 if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("routing_consumer_assigned_partitions "):
            return int(float(line.split()[1]))
    return 0


def _save_metrics(port: int, path: Path) -> None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            path.write_bytes(resp.read())
    except OSError as exc:
        path.write_text(f"metrics unavailable: {exc}\n")


async def run_worker(args: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``python -m bench.workers *args``; return its JSON report."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.workers",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.workers {args[0]} exited {proc.returncode}; see {log_path}")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


def _worker_cpu(report: dict[str, Any]) -> dict[str, Any] | None:
    """The per-event CPU breakdown of a worker's window (it samples the stack itself)."""
    if not report.get("stack_cpu"):
        return None
    return breakdown(
        CpuDelta.from_dict(report["stack_cpu"]),
        own_s=report["cpu_seconds"],
        events=report["events"],
        seconds=report["seconds"],
    )


def _worker_args(stack: Stack, topics: TopicSet) -> list[str]:
    """The arguments every ``bench.workers`` command takes: where the stack and the topics are."""
    return [
        "--bootstrap",
        stack.bootstrap,
        "--pg-port",
        str(stack.pg_host_port[1]),
        "--topics",
        ",".join(topics.sources),
    ]


async def run_naive(
    stack: Stack, topics: TopicSet, database_url: str, group: str, log_dir: Path
) -> Measured:
    """The naive port (``bench.workers naive``) on ``topics``."""
    report = await run_worker(
        [
            "naive",
            *_worker_args(stack, topics),
            "--group",
            group,
            "--database-url",
            database_url,
        ],
        log_dir / "naive.log",
    )
    return Measured(
        "naive port",
        report["events"],
        report["seconds"],
        report["cpu_seconds"],
        report["peak_rss_bytes"],
        notes=[
            "one session + statement + COMMIT per event, then its offset committed; "
            "upsert + version guard added to B6's update so the rows come out right"
        ],
        extra={"cpu": _worker_cpu(report)},
    )


async def run_limit(
    stack: Stack, topics: TopicSet, database_url: str, log_dir: Path
) -> tuple[Measured, Measured]:
    """L (``bench.workers limit``, :mod:`bench.limit`) on ``topics``: (L, its read phase).

    L's events/s is cores / (read CPU + broker CPU while reading + PostgreSQL CPU while
    writing) per event; its ``extra["cpu"]`` holds the write phase's breakdown, ``extra["read"]``
    and ``extra["write"]`` the raw figures of each phase. The read phase is also returned as a
    system of its own (aiokafka alone, with the service's fetch settings).
    """
    report = await run_worker(
        ["limit", *_worker_args(stack, topics), "--database-url", database_url],
        log_dir / "limit.log",
    )
    read, write = report["read"], report["write"]
    events = read["events"]
    read_cpu = _worker_cpu(read) or {}
    write_delta = CpuDelta.from_dict(write["stack_cpu"])
    write_cpu = breakdown(
        write_delta, own_s=write["cpu_seconds"], events=events, seconds=write["seconds"]
    )
    parts = {
        "read_us_per_event": read_cpu.get("own_us_per_event"),
        "broker_us_per_event": read_cpu.get("broker_us_per_event"),
        "postgres_us_per_event": write_cpu.get("postgres_us_per_event"),
    }
    known = [v for v in parts.values() if v is not None]
    cores = report.get("cores") or os.cpu_count() or 1
    limit_eps = cores * 1e6 / sum(known) if len(known) == 3 and sum(known) > 0 else 0.0
    limit = Measured(
        "L: a limit a consumer can reach",
        events,
        events / limit_eps if limit_eps else 0.0,
        None,
        report.get("peak_rss_bytes"),
        notes=[
            f"{cores} cores / (aiokafka's read CPU + the broker's while reading + PostgreSQL's "
            f"writing, per batch of up to {BATCH_RECORDS} records, the newest version of "
            "each row and field the batch touches, one guarded bulk statement per table, one "
            f"transaction per batch): {read['batches']} batches, "
            f"{write['execution_rows']:,} + {write['tenant_rows']:,} row writes"
        ],
        extra={
            "limit_events_per_s": round(limit_eps),
            "us_per_event": parts | {"total": round(sum(known), 2) if known else None},
            "read": read | {"cpu": read_cpu},
            "write": write | {"cpu": write_cpu},
            "prepare_seconds": report.get("prepare_seconds"),
        },
    )
    reader = Measured(
        "aiokafka alone (L's read phase)",
        events,
        read["seconds"],
        read["cpu_seconds"],
        report.get("peak_rss_bytes"),
        notes=["getmany(max_records=2000), read_committed, no group, no decoding, no database"],
        extra={"cpu": read_cpu},
    )
    return limit, reader

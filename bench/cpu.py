"""Where the machine's CPU goes over a measured window: the system, PostgreSQL, the broker.

:meth:`StackCpu.sample` reads ``/proc`` (Linux only) for the local stack's PostgreSQL server
(postmaster, live and reaped children; and the backends of one database alone), the broker JVM,
the benchmark's own process and the machine's busy time; :meth:`StackCpu.between` turns two
samples into a :class:`CpuDelta` and :func:`breakdown` into per-event figures. Figures of a
server that is not the local stack's are ``None``. How each figure is counted, and what it
misses: ``bench/RESULTS.md``, "Method".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.infra import ROOT

__all__ = ["CpuDelta", "CpuSample", "StackCpu", "breakdown"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def _own(fields: list[str]) -> float:
    # Fields 14/15 (utime/stime) of proc(5) are at index 11/12 after the ")".
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _reaped(fields: list[str]) -> float:
    # Fields 16/17 (cutime/cstime): waited-for children's lifetime CPU.
    return (int(fields[13]) + int(fields[14])) / _CLK_TCK


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (the kernel's children list, else a scan of /proc)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _machine() -> tuple[float, float, float]:
    """Busy, interrupt and steal CPU seconds of all CPUs since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        first = stat.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    busy = user + nice + system + irq + softirq
    return busy / _CLK_TCK, (irq + softirq) / _CLK_TCK, steal / _CLK_TCK


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU counters (seconds) at one moment; only differences mean anything."""

    machine_busy: float
    machine_irq: float
    machine_steal: float
    #: The postmaster's own CPU + its reaped children's; ``None`` without a local PostgreSQL.
    postgres_base: float | None = None
    #: utime + stime of each live child of the postmaster, by (pid, start time).
    postgres_children: dict[tuple[int, int], float] = field(default_factory=dict)
    #: Those of ``postgres_children`` whose process title names the watched database.
    postgres_database: frozenset[tuple[int, int]] = frozenset()
    broker: float | None = None
    harness: float | None = None


@dataclass(frozen=True)
class CpuDelta:
    """CPU seconds used inside one window by PostgreSQL, the broker and the whole machine."""

    postgres_s: float | None
    #: Only the backends of the system's own database (a lower bound, see the module docstring).
    postgres_database_s: float | None
    broker_s: float | None
    harness_s: float | None
    machine_busy_s: float
    machine_irq_s: float
    machine_steal_s: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready (rounded to the clock tick's precision)."""

        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "postgres_s": r(self.postgres_s),
            "postgres_database_s": r(self.postgres_database_s),
            "broker_s": r(self.broker_s),
            "harness_s": r(self.harness_s),
            "machine_busy_s": r(self.machine_busy_s),
            "machine_irq_s": r(self.machine_irq_s),
            "machine_steal_s": r(self.machine_steal_s),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuDelta:
        """The inverse of :meth:`as_dict` (a worker subprocess reports its window this way)."""
        return cls(
            data.get("postgres_s"),
            data.get("postgres_database_s"),
            data.get("broker_s"),
            data.get("harness_s"),
            float(data["machine_busy_s"]),
            float(data.get("machine_irq_s", 0.0)),
            float(data.get("machine_steal_s", 0.0)),
        )


def _port_of(address: str | None) -> int | None:
    if not address:
        return None
    try:
        return int(address.rsplit(":", 1)[1].split("/", 1)[0])
    except (IndexError, ValueError):
        return None


class StackCpu:
    """Samples the CPU counters of the local stack's PostgreSQL and broker and of the machine.

    ``pg_port`` / ``kafka_port``, when given, must match the stack's (the postmaster.pid file's
    port line, the broker's ``listeners``): a benchmark pointed at another server gets ``None``
    rather than figures of the wrong processes. The pids are read once, at construction.
    ``harness_pid`` is the benchmark's process (``None`` when it is the measured system itself);
    ``database`` the name of the system's database (its backends are also counted apart).
    """

    def __init__(
        self,
        *,
        stack_dir: Path | None = None,
        pg_port: int | None = None,
        kafka_port: int | None = None,
        harness_pid: int | None = None,
        database: str | None = None,
    ) -> None:
        self.harness_pid = harness_pid
        self.database = database.encode() if database else None
        state = stack_dir or Path(os.environ.get("ROUTING_STACK_DIR") or ROOT / ".local" / "stack")
        self.postmaster = self._postmaster(state / "postgres" / "data" / "postmaster.pid", pg_port)
        self.broker = self._broker(state / "kafka", kafka_port)

    @classmethod
    def for_addresses(
        cls,
        bootstrap: str,
        pg_port: int | None,
        *,
        harness_pid: int | None = None,
        database_url: str | None = None,
    ) -> StackCpu:
        """The local stack's processes, if ``bootstrap`` / the PostgreSQL port are theirs."""
        return cls(
            pg_port=pg_port,
            kafka_port=_port_of(bootstrap.split(",", maxsplit=1)[0]),
            harness_pid=harness_pid,
            database=urlsplit(database_url).path.lstrip("/") if database_url else None,
        )

    @staticmethod
    def _postmaster(pidfile: Path, port: int | None) -> int | None:
        try:
            lines = pidfile.read_text().splitlines()
            pid = int(lines[0])
            if port is not None and int(lines[3]) != port:
                return None
        except (OSError, IndexError, ValueError):
            return None
        return pid if _stat(pid) is not None else None

    @staticmethod
    def _broker(kafka_dir: Path, port: int | None) -> int | None:
        try:
            pid = int((kafka_dir / "pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            props = (kafka_dir / "server.properties").read_text()
        except (OSError, IndexError, ValueError):
            return None
        if b"kafka.Kafka" not in cmdline:
            return None
        if port is not None:
            listeners = next(
                (ln for ln in props.splitlines() if ln.startswith("listeners=")), "listeners="
            )
            if f":{port}" not in listeners:
                return None
        return pid

    def sample(self) -> CpuSample:
        """Read every counter now (a few dozen small ``/proc`` reads: about a millisecond)."""
        base: float | None = None
        children: dict[tuple[int, int], float] = {}
        ours: set[tuple[int, int]] = set()
        if self.postmaster is not None:
            fields = _stat(self.postmaster)
            if fields is not None:
                base = _own(fields) + _reaped(fields)
                for child in _children(self.postmaster):
                    cf = _stat(child)
                    if cf is None:
                        continue
                    key = (child, int(cf[19]))  # field 22: start time
                    children[key] = _own(cf)
                    if self.database is not None and self._serves(child):
                        ours.add(key)
        broker: float | None = None
        if self.broker is not None:
            bf = _stat(self.broker)
            broker = None if bf is None else _own(bf)
        harness: float | None = None
        if self.harness_pid is not None:
            hf = _stat(self.harness_pid)
            harness = None if hf is None else _own(hf)
        busy, irq, steal = _machine()
        return CpuSample(busy, irq, steal, base, children, frozenset(ours), broker, harness)

    def _serves(self, pid: int) -> bool:
        """Whether the backend ``pid``'s process title names the watched database."""
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # "postgres: <user> <database> <client> <state>" / "postgres: autovacuum worker <db>"
        return self.database in title.replace(b"\0", b" ").split()

    @staticmethod
    def between(start: CpuSample, end: CpuSample) -> CpuDelta:
        """CPU used between two samples (see the module docstring for the children)."""
        postgres: float | None = None
        database: float | None = None
        if start.postgres_base is not None and end.postgres_base is not None:
            database = sum(
                end.postgres_children[key] - start.postgres_children.get(key, 0.0)
                for key in end.postgres_database
            )
            postgres = (
                end.postgres_base
                - start.postgres_base
                + sum(end.postgres_children.values())
                - sum(start.postgres_children.values())
            )
        broker: float | None = None
        if start.broker is not None and end.broker is not None:
            broker = end.broker - start.broker
        harness: float | None = None
        if start.harness is not None and end.harness is not None:
            harness = end.harness - start.harness
        return CpuDelta(
            postgres,
            database if end.postgres_database or start.postgres_database else None,
            broker,
            harness,
            end.machine_busy - start.machine_busy,
            end.machine_irq - start.machine_irq,
            end.machine_steal - start.machine_steal,
        )


def breakdown(
    delta: CpuDelta, *, own_s: float | None, events: int, seconds: float
) -> dict[str, Any]:
    """Per-event CPU of one window, and the throughput the machine's cores would bound it to.

    ``own_s`` is the system's own processes' CPU over the same window. All ``*_us_per_event``
    figures are CPU microseconds per event (= CPU milliseconds per 1,000 events); ``rest`` is the
    machine's busy time minus own, PostgreSQL, broker and benchmark (``harness``); ``irq`` (the
    kernel's interrupt work, inside the machine's figure and in no process's) is part of it.
    ``cpu_bound_events_per_s`` is cores / (machine busy CPU per event): the rate at which the
    machine's CPUs would all be busy if nothing else ran; ``..._stack`` the same for the system +
    PostgreSQL + broker only (what the system needs, without the benchmark and other work).
    """
    cores = os.cpu_count() or 1
    if events <= 0 or seconds <= 0:
        return {"cores": cores, "window_s": round(seconds, 3)} | delta.as_dict()

    def per_event(value: float | None) -> float | None:
        return None if value is None else round(value * 1e6 / events, 2)

    parts = [own_s, delta.postgres_s, delta.broker_s]
    stack = None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    rest = None if stack is None else delta.machine_busy_s - stack - (delta.harness_s or 0.0)
    return {
        "cores": cores,
        "window_s": round(seconds, 3),
        "events": events,
        "own_s": None if own_s is None else round(own_s, 3),
        **delta.as_dict(),
        "rest_s": None if rest is None else round(rest, 3),
        "own_us_per_event": per_event(own_s),
        "postgres_us_per_event": per_event(delta.postgres_s),
        "postgres_database_us_per_event": per_event(delta.postgres_database_s),
        "broker_us_per_event": per_event(delta.broker_s),
        "stack_us_per_event": per_event(stack),
        "harness_us_per_event": per_event(delta.harness_s),
        "irq_us_per_event": per_event(delta.machine_irq_s),
        "rest_us_per_event": per_event(rest),
        "machine_us_per_event": per_event(delta.machine_busy_s),
        "machine_busy_cores": round(delta.machine_busy_s / seconds, 2),
        "cpu_bound_events_per_s": round(cores * events / delta.machine_busy_s)
        if delta.machine_busy_s > 0
        else None,
        "cpu_bound_events_per_s_stack": round(cores * events / stack) if stack else None,
    }

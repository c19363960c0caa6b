"""Where the machine's CPU goes while a system works: its own process(es), PostgreSQL, the broker.

The benchmark machine runs everything on the same cores: Kafka, PostgreSQL, the system under test
and the benchmark itself. A system's own CPU per event says little about what the machine can
give when the database and the broker also need CPU for every event, so each measured window
also records, from ``/proc`` (Linux only):

- **PostgreSQL**: the whole server of the local stack (``deploy/local/stack``): the postmaster
  and all its children (backends, WAL writer, checkpointer, autovacuum...). Backends come and go
  (one per connection), so a sample holds the postmaster's own ``utime + stime``, its
  ``cutime + cstime`` (the CPU of children that have exited *and been reaped*: the kernel adds a
  child's whole lifetime to its parent's ``cutime``/``cstime`` when the parent waits for it, which
  the postmaster does as soon as it gets ``SIGCHLD``) and ``utime + stime`` of every live child,
  keyed by (pid, start time) so that a reused pid is not mistaken for the old process. Over a
  window: the change of the postmaster's own and reaped-children figures, plus each child's
  figure at the end, minus each child's figure at the start. A child alive at the start and gone
  at the end is therefore counted as (lifetime via ``cutime``) - (start figure) = its CPU inside
  the window; one born and gone inside the window entirely via ``cutime``; one born inside and
  alive at the end via its end figure. (A child that exits in the microseconds between the two
  reads of one sample may be off by its CPU; a zombie not yet reaped still shows its times.)
- **the Kafka broker**: ``utime + stime`` of the broker JVM (all its threads), pid from the
  stack's ``kafka/pid`` file.
- **the machine**: busy time of all CPUs from ``/proc/stat`` (``user + nice + system + irq +
  softirq``; ``steal``, the time the hypervisor gave to other guests, is kept apart).

The rest (machine busy - own - PostgreSQL - broker) is the benchmark's own process (it polls
offsets every 0.2 s), the kernel's work not charged to a process, and whatever else runs on the
shared machine at the time. The stack's PostgreSQL and broker are shared too: other work on them
inside the window is counted as this system's. Both are why these figures are compared back to
back in one run, never across runs.

When the benchmark does not run against the local stack (no pid files, or they name a server on
another port), the PostgreSQL and broker figures are ``None``; the machine figure is always there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _machine() -> tuple[float, float]:
    """Busy and steal CPU seconds of all CPUs since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        first = stat.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq) / _CLK_TCK, steal / _CLK_TCK


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU counters (seconds) at one moment; only differences mean anything."""

    machine_busy: float
    machine_steal: float
    #: The postmaster's own CPU + its reaped children's; ``None`` without a local PostgreSQL.
    postgres_base: float | None = None
    #: utime + stime of each live child of the postmaster, by (pid, start time).
    postgres_children: dict[tuple[int, int], float] = field(default_factory=dict)
    broker: float | None = None


@dataclass(frozen=True)
class CpuDelta:
    """CPU seconds used inside one window by PostgreSQL, the broker and the whole machine."""

    postgres_s: float | None
    broker_s: float | None
    machine_busy_s: float
    machine_steal_s: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready (rounded to the clock tick's precision)."""
        return {
            "postgres_s": None if self.postgres_s is None else round(self.postgres_s, 3),
            "broker_s": None if self.broker_s is None else round(self.broker_s, 3),
            "machine_busy_s": round(self.machine_busy_s, 3),
            "machine_steal_s": round(self.machine_steal_s, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuDelta:
        """The inverse of :meth:`as_dict` (a worker subprocess reports its window this way)."""
        return cls(
            data.get("postgres_s"),
            data.get("broker_s"),
            float(data["machine_busy_s"]),
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
    """

    def __init__(
        self,
        *,
        stack_dir: Path | None = None,
        pg_port: int | None = None,
        kafka_port: int | None = None,
    ) -> None:
        state = stack_dir or Path(os.environ.get("ROUTING_STACK_DIR") or ROOT / ".local" / "stack")
        self.postmaster = self._postmaster(state / "postgres" / "data" / "postmaster.pid", pg_port)
        self.broker = self._broker(state / "kafka", kafka_port)

    @classmethod
    def for_addresses(cls, bootstrap: str, pg_port: int | None) -> StackCpu:
        """The local stack's processes, if ``bootstrap`` / the PostgreSQL port are theirs."""
        return cls(pg_port=pg_port, kafka_port=_port_of(bootstrap.split(",", maxsplit=1)[0]))

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
        if self.postmaster is not None:
            fields = _stat(self.postmaster)
            if fields is not None:
                base = _own(fields) + _reaped(fields)
                for child in _children(self.postmaster):
                    cf = _stat(child)
                    if cf is not None:
                        children[(child, int(cf[19]))] = _own(cf)  # field 22: start time
        broker: float | None = None
        if self.broker is not None:
            bf = _stat(self.broker)
            broker = None if bf is None else _own(bf)
        busy, steal = _machine()
        return CpuSample(busy, steal, base, children, broker)

    @staticmethod
    def between(start: CpuSample, end: CpuSample) -> CpuDelta:
        """CPU used between two samples (see the module docstring for the children)."""
        postgres: float | None = None
        if start.postgres_base is not None and end.postgres_base is not None:
            postgres = (
                end.postgres_base
                - start.postgres_base
                + sum(end.postgres_children.values())
                - sum(start.postgres_children.values())
            )
        broker: float | None = None
        if start.broker is not None and end.broker is not None:
            broker = end.broker - start.broker
        return CpuDelta(
            postgres,
            broker,
            end.machine_busy - start.machine_busy,
            end.machine_steal - start.machine_steal,
        )


def breakdown(
    delta: CpuDelta, *, own_s: float | None, events: int, seconds: float
) -> dict[str, Any]:
    """Per-event CPU of one window, and the throughput the machine's cores would bound it to.

    ``own_s`` is the system's own processes' CPU over the same window. All ``*_us_per_event``
    figures are CPU microseconds per event (= CPU milliseconds per 1,000 events).
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
    rest = None if stack is None else delta.machine_busy_s - stack
    return {
        "cores": cores,
        "window_s": round(seconds, 3),
        "events": events,
        "own_s": None if own_s is None else round(own_s, 3),
        **delta.as_dict(),
        "rest_s": None if rest is None else round(rest, 3),
        "own_us_per_event": per_event(own_s),
        "postgres_us_per_event": per_event(delta.postgres_s),
        "broker_us_per_event": per_event(delta.broker_s),
        "stack_us_per_event": per_event(stack),
        "rest_us_per_event": per_event(rest),
        "machine_us_per_event": per_event(delta.machine_busy_s),
        "machine_busy_cores": round(delta.machine_busy_s / seconds, 2),
        "cpu_bound_events_per_s": round(cores * events / delta.machine_busy_s)
        if delta.machine_busy_s > 0
        else None,
        "cpu_bound_events_per_s_stack": round(cores * events / stack) if stack else None,
    }

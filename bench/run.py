"""The benchmark's entry point: ``python -m bench.run [--workload W] [--repeat N] [--quick] ...``.

One run on the local stack: a seeded workload (``realistic`` by default) produced once, then
``--repeat`` rounds in which every system reads it once, the systems interleaved (their order
rotates from round to round), each with its rows checked against the oracle: this service with
one and two processes, the service of another checkout (``--baseline``: A/B in one run), the
Debezium JDBC sink with as many tasks as the service has processes, and L (a limit a consumer
can reach, :mod:`bench.limit`); then live latency of the service and the peer at the same
absolute rates, the scale runs (100k and 1M, with per-tenth diagnostics), and the results
(``bench/results/<timestamp>.json`` with every run, ``bench/RESULTS.md``, ``bench/charts/``).
Headline figures are medians over the rounds with their min-max. ``--quick`` (what ``make test``
runs) is a few thousand events without peer or scale runs. Exit 1 when a system wrote wrong rows
or the run broke, never because of speed. The run removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench import growth
from bench.growth import EventMix
from bench.infra import ROOT, Stack, TopicSet, produce
from bench.oracle import Oracle, check_rows
from bench.profile import top_frames
from bench.summary import spread, summarise
from bench.systems import Measured, run_limit, run_naive, run_service_backlog
from bench.workload import WORKLOADS, Event, Workload, generate, tenant_ids

__all__ = ["main"]

PARTITIONS = 6
TENANTS = 1_000
#: The systems of a round, in the order of round 1 (later rounds rotate it).
ROUND_SYSTEMS = ("service", "baseline", "service2", "debezium1", "debezium2", "limit")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    _add_fairness_options(parser)
    parser.add_argument("--events", type=int, default=200_000, help="backlog size (default 200000)")
    parser.add_argument("--quick", action="store_true", help="a few thousand events, no peer/scale")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-peer", action="store_true", help="skip the Debezium JDBC sink")
    parser.add_argument("--no-scale", action="store_true", help="skip the 100k / 1M runs")
    parser.add_argument(
        "--scale-events", default="100000,1000000", help="backlogs of the scale runs"
    )
    parser.add_argument(
        "--naive-events",
        type=int,
        default=10_000,
        help="the naive port reads the first N events of the workload (it is slow)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-rates",
        default="",
        help="fixed produce rates (events/s, comma-separated) instead of --latency-shares",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of service,baseline,service2,peer,limit,naive,latency,scale",
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    parser.add_argument("--keep", action="store_true", help="keep topics and databases")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the service with py-spy (if installed) during the backlog and latency runs",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="do not rewrite bench/RESULTS.md and charts"
    )
    args = parser.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    if args.quick:
        args.events = min(args.events, 3_000)
        args.no_peer = True
        args.no_scale = True
        args.latency_seconds = min(args.latency_seconds, 3.0)
        args.naive_events = min(args.naive_events, 1_000)
        args.repeat = 1
        args.latency_shares = args.latency_shares[:1]
    return args


def _add_fairness_options(parser: argparse.ArgumentParser) -> None:
    """The options of issue 16's fair measurement (kept apart so other options merge cleanly)."""
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="realistic",
        help="the records' shape (default realistic; benchmark: the compact ASCII one)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds: every system runs once per round, interleaved; figures are medians",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (with its own .venv) whose service runs beside this one (A/B)",
    )
    parser.add_argument(
        "--latency-shares",
        type=lambda text: [float(x) for x in text.split(",") if x],
        default=[0.5, 0.8],
        help="live rates as shares of the one-process median events/s (default 0.5,0.8); "
        "the peer runs at the same absolute rates",
    )
    parser.add_argument(
        "--scale-prefill",
        default="",
        help="per scale run (comma-separated, aligned with --scale-events), ExecutionRecord "
        "rows to grow the table by before it starts: tells table size from run progress",
    )


def _checkout_commit(path: Path) -> str | None:
    """The commit of a checkout: its ``.bench-commit`` file (an exported tree), else git's."""
    marker = path / ".bench-commit"
    if marker.exists():
        return marker.read_text().strip()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != path.resolve():
            return None  # a directory inside some other checkout
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


class Run:
    """One benchmark run: its names, what it created (for cleanup) and its results."""

    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.stamp = stamp
        self.id = f"{'q' if args.quick else 'f'}{stamp[2:8]}{secrets.token_hex(3)}"
        self.topics_made: list[str] = []
        self.databases_made: list[str] = []
        self.template = f"bench_{self.id}_tmpl"
        self.log_dir = ROOT / ".local" / "bench" / self.id
        self.tenants = tenant_ids(TENANTS)
        self.results: dict[str, Any] = {
            "systems": {},
            "runs": {},
            "latency": {},
            "scale": {},
            "errors": [],
        }
        #: Per system, one entry per round (``None``: the run broke).
        self.runs: dict[str, list[dict[str, Any] | None]] = {}
        self.failed: list[str] = []

    # --- resources ------------------------------------------------------------------------------

    async def topics(self, name: str) -> TopicSet:
        made = TopicSet.named(f"bench-{self.id}.{name}")
        self.topics_made += made.all
        await self.stack.create_topics(made.all, PARTITIONS)
        return made

    async def database(self, name: str) -> str:
        db = f"bench_{self.id}_{name}"
        self.databases_made.append(db)
        return await self.stack.create_database(db, template=self.template)

    async def release(self, url: str) -> None:
        """Drop a system's database once its rows are checked (a 200k run leaves ~0.3 GB)."""
        if self.args.keep:
            return
        db = url.rsplit("/", 1)[1]
        await self.stack.drop_database(db)
        if db in self.databases_made:
            self.databases_made.remove(db)

    def group(self, name: str) -> str:
        return f"bench-{self.id}-{name}"

    async def make_template(self) -> None:
        """A migrated database with the tenants in it; every system's database copies it."""
        from consumer.ops.migrate import upgrade
        from consumer.settings import Settings

        self.databases_made.append(self.template)
        url = await self.stack.create_database(self.template)
        await asyncio.to_thread(upgrade, Settings(database_url=url), sql=False)
        conn = await asyncpg.connect(url)
        try:
            await conn.copy_records_to_table(
                "Tenant",
                records=[(t, f"Tenant {t}") for t in self.tenants],
                columns=["id", "name"],
            )
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        if self.args.keep:
            print(f"bench: kept topics bench-{self.id}.* and databases bench_{self.id}_*")
            return
        if self.topics_made:
            await self.stack.delete_topics(self.topics_made)
        for db in reversed(self.databases_made):
            try:
                await self.stack.drop_database(db)
            except Exception as exc:
                print(f"bench: could not drop {db}: {exc}")

    # --- steps ----------------------------------------------------------------------------------

    def record(self, key: str, measured: Measured) -> dict[str, Any]:
        """Print one run's figures, note wrong rows as a failure; its JSON form."""
        if not measured.counts and measured.check is not None:
            c = measured.check
            self.failed.append(
                f"{measured.name}: wrong rows: {c.wrong_execution_records:,} of "
                f"{c.expected_execution_records:,} ExecutionRecord, {c.wrong_tenants:,} of "
                f"{c.expected_tenants:,} Tenant (e.g. {'; '.join(c.examples[:3])})"
            )
        as_dict = measured.as_dict()
        eps = as_dict.get("limit_events_per_s", measured.events_per_s)
        rate = f"{eps:,.0f} events/s"
        cpu = measured.cpu_per_1000
        cpu_s = "" if cpu is None else f", {cpu:.3f} CPU s/1000"
        rss = measured.peak_rss_bytes
        rss_s = "" if rss is None else f", peak RSS {rss / 2**20:.0f} MiB"
        rows = (
            "" if measured.check is None else (" rows OK" if measured.check.ok else " ROWS WRONG")
        )
        line = f"bench: {measured.name}: {rate}{cpu_s}{rss_s};{rows}"
        print(line + _cpu_line(measured.extra), flush=True)
        return as_dict

    async def produce_backlog(
        self, name: str, count: int, *, keep_events: bool, prefix: str = "req"
    ) -> tuple[TopicSet, Oracle, list[Event], EventMix]:
        topics = await self.topics(name)
        oracle = Oracle()
        mix = EventMix(count)
        kept: list[Event] = []

        def seen(event: Event) -> None:
            oracle.add(event)
            mix.add(event)
            if keep_events:
                kept.append(event)

        workload: Workload = self.args.workload
        sent, seconds = await produce(
            self.stack.bootstrap,
            generate(
                count,
                seed=self.args.seed,
                tenants=self.tenants,
                request_prefix=prefix,
                workload=workload,
            ),
            lambda e: topics.for_type(e.type),
            on_event=seen,
        )
        print(f"bench: produced {sent:,} events to {name} in {seconds:.1f} s", flush=True)
        return topics, oracle, kept, mix

    async def dlq_count(self, topics: TopicSet) -> int:
        ends = await self.stack.end_offsets([topics.dlq])
        return sum(ends.values())

    async def service_on(
        self,
        key: str,
        name: str,
        topics: TopicSet,
        oracle: Oracle,
        *,
        instances: int = 1,
        checkout: Path | None = None,
        diagnose: bool = False,
        prefill: int = 0,
    ) -> Measured:
        url = await self.database(key)
        if prefill:
            await growth.prefill(url, prefill, self.tenants[0])
        measured = await run_service_backlog(
            self.stack,
            topics,
            url,
            self.group(key),
            oracle.events,
            self.log_dir / f"{key}.log",
            name=name,
            profile_path=self.log_dir / f"{key}.pyspy.txt"
            if self.args.profile and instances == 1
            else None,
            instances=instances,
            checkout=checkout,
            diagnose=diagnose,
        )
        if prefill:
            await growth.remove_prefill(url)
            measured.notes.append(
                f'"ExecutionRecord" grown by {prefill:,} rows (then vacuumed) before the start'
            )
        measured.check = await check_rows(url, oracle, self.tenants)
        await self.release(url)
        dead = await self.dlq_count(topics)
        measured.extra["dead_lettered"] = dead
        if dead:
            measured.notes.append(f"{dead} records dead-lettered (the workload has none)")
            self.failed.append(f"{name}: {dead} records dead-lettered")
        if measured.extra.get("exit_code") != 0:
            self.failed.append(f"{name}: exit code {measured.extra.get('exit_code')}")
        return measured

    def wants(self, step: str) -> bool:
        """Whether ``--only`` (empty: everything) includes ``step``."""
        return not self.args.only or step in self.args.only

    def round_systems(self) -> list[str]:
        """The systems every round runs (see :data:`ROUND_SYSTEMS`)."""
        args = self.args
        peer = not args.no_peer and self.wants("peer")
        chosen = {
            "service": self.wants("service"),
            "baseline": args.baseline is not None and self.wants("baseline"),
            "service2": self.wants("service2") and not args.quick,
            "debezium1": peer and self.wants("service"),
            "debezium2": peer and self.wants("service2"),
            "limit": self.wants("limit"),
        }
        return [key for key in ROUND_SYSTEMS if chosen[key]]

    async def main(self) -> None:
        args = self.args
        await self.make_template()
        systems = self.round_systems()
        if systems or self.wants("naive"):
            await self.rounds(systems)
        if self.wants("latency"):
            await self.latency()
        if not args.no_scale and self.wants("scale"):
            await self.scale()

    async def rounds(self, systems: list[str]) -> None:
        """The main backlog, then ``--repeat`` rounds of ``systems`` (and the naive port once)."""
        args = self.args
        peer = any(k.startswith("debezium") for k in systems)
        topics, oracle, events, mix = await self.produce_backlog(
            "main", args.events, keep_events=peer
        )
        self.results["workload"] = {
            "name": args.workload,
            "events": oracle.events,
            "by_type": oracle.by_type,
            "execution_records": oracle.request_count,
            "tenants": len(self.tenants),
            "tenants_with_policy": len(oracle.policies),
            "partitions_per_topic": PARTITIONS,
            "seed": args.seed,
            "mix_by_tenth": mix.as_list(),
        }
        peer_topics, peer_sent = None, 0
        if peer:
            from bench.peer import produce_flattened

            peer_topics = await self.topics("peer")
            peer_sent = await produce_flattened(self.stack, peer_topics, events)
            events.clear()

        for r in range(args.repeat if systems else 0):
            shift = r % len(systems)
            order = systems[shift:] + systems[:shift]
            print(f"bench: round {r + 1}/{args.repeat}: {', '.join(order)}", flush=True)
            for key in order:
                measured: dict[str, dict[str, Any] | None]
                try:
                    measured = await self.measure(key, r, topics, oracle, peer_topics, peer_sent)
                except Exception as exc:
                    message = f"{key} (round {r + 1}) failed: {type(exc).__name__}: {exc}"
                    self.results["errors"].append(message)
                    self.failed.append(message)
                    print(f"bench: {message}", flush=True)
                    # A broken run keeps its place: ratios pair runs of the same round.
                    measured = dict.fromkeys(("limit", "reader") if key == "limit" else (key,))
                for name, run in measured.items():
                    self.runs.setdefault(name, []).append(run)
        self.results["runs"] = self.runs
        self.results["systems"] = {
            key: summary for key, runs in self.runs.items() if (summary := summarise(runs))
        }
        if self.wants("naive"):
            await self.naive(topics, oracle)

    async def measure(
        self,
        key: str,
        r: int,
        topics: TopicSet,
        oracle: Oracle,
        peer_topics: TopicSet | None,
        peer_sent: int,
    ) -> dict[str, dict[str, Any] | None]:
        """One run of system ``key`` in round ``r``: its JSON form (two for ``limit``)."""
        name = f"{key}_r{r + 1}"
        if key in ("service", "baseline", "service2"):
            label = {
                "service": "this service",
                "baseline": "baseline service",
                "service2": "this service, 2 processes",
            }[key]
            measured = await self.service_on(
                name,
                label,
                topics,
                oracle,
                instances=2 if key == "service2" else 1,
                checkout=self.args.baseline if key == "baseline" else None,
            )
            return {key: self.record(key, measured)}
        if key.startswith("debezium"):
            from bench.peer import run_debezium

            assert peer_topics is not None
            url = await self.database(name)
            measured = await run_debezium(
                self.stack,
                peer_topics,
                peer_sent,
                oracle,
                url,
                tenants=self.tenants,
                log_dir=self.log_dir,
                name=f"bench-{self.id}-{name}",
                tasks=int(key.removeprefix("debezium")),
            )
            await self.release(url)
            return {key: self.record(key, measured)}
        url = await self.database(name)
        limit, reader = await run_limit(self.stack, topics, url, self.log_dir / name)
        limit.check = await check_rows(url, oracle, self.tenants)
        await self.release(url)
        return {"limit": self.record("limit", limit), "reader": self.record("reader", reader)}

    async def naive(self, topics: TopicSet, oracle: Oracle) -> None:
        args = self.args
        if args.naive_events >= args.events:
            naive_topics, naive_oracle = topics, oracle
            note = "same backlog as the others"
        else:
            naive_topics, naive_oracle, _, _ = await self.produce_backlog(
                "naive", args.naive_events, keep_events=False
            )
            note = (
                f"the first {args.naive_events:,} events of the same workload (at its speed "
                f"the whole backlog would take too long); rows checked against their own oracle"
            )
        url = await self.database("naive")
        measured = await run_naive(self.stack, naive_topics, url, self.group("naive"), self.log_dir)
        measured.check = await check_rows(url, naive_oracle, self.tenants)
        await self.release(url)
        measured.notes.append(note)
        self.results["systems"]["naive"] = summarise([self.record("naive", measured)])
        self.results["runs"]["naive"] = [measured.as_dict()]

    def latency_plan(self) -> list[tuple[str, float]]:
        """(label, events/s) of each live run: shares of the one-process median, or fixed."""
        if self.args.latency_rates:
            return [(f"{float(x):,.0f}/s", float(x)) for x in self.args.latency_rates.split(",")]
        service = self.results["systems"].get("service")
        if not service or not service["counts"] or not service["events_per_s"]["median"]:
            return []
        base = float(service["events_per_s"]["median"])
        plan = [(f"{share:.0%}", base * share) for share in self.args.latency_shares]
        if self.args.quick:
            plan = [(label, min(rate, 1_000.0)) for label, rate in plan]
        return plan

    async def latency(self) -> None:
        from bench.latency import measure_latency

        plan = self.latency_plan()
        if not plan:
            self.results["errors"].append("latency skipped: no valid service throughput")
            return
        systems = ["service"]
        if self.args.baseline is not None and self.wants("baseline"):
            systems.append("baseline")  # live p99 kept intact? the same rates, A/B
        if not self.args.no_peer and self.wants("peer") and not self.args.quick:
            systems.append("debezium1")
        runs: dict[str, dict[str, list[dict[str, Any] | None]]] = {
            label: {key: [] for key in systems} for label, _ in plan
        }
        for r in range(self.args.repeat):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for n, (label, rate) in enumerate(plan):
                for key in order:
                    name = f"lat{n}_{key}_r{r + 1}"
                    topics = await self.topics(name)
                    url = await self.database(name)
                    try:
                        result = await measure_latency(
                            self.stack,
                            topics,
                            url,
                            self.group(name),
                            rate=rate,
                            seconds=self.args.latency_seconds,
                            tenants=self.tenants,
                            seed=self.args.seed + 100 * n + r,
                            log_path=self.log_dir / f"{name}.log",
                            profile_path=self.log_dir / f"{name}.pyspy.txt"
                            if self.args.profile and key == "service"
                            else None,
                            workload=self.args.workload,
                            checkout=self.args.baseline if key == "baseline" else None,
                            peer_tasks=1 if key == "debezium1" else None,
                        )
                    except Exception as exc:
                        message = f"latency {key} at {label} (round {r + 1}) failed: {exc}"
                        self.results["errors"].append(message)
                        self.failed.append(message)
                        print(f"bench: {message}", flush=True)
                        runs[label][key].append(None)
                        continue
                    finally:
                        await self.release(url)
                        await self.stack.delete_topics(topics.all)
                    summary = result.as_dict() | {"system": key}
                    if self.args.profile and key == "service":
                        summary["profile"] = top_frames(self.log_dir / f"{name}.pyspy.txt")
                    if result.exit_code != 0:
                        self.failed.append(f"latency run {name}: exit code {result.exit_code}")
                    runs[label][key].append(summary)
                    print(
                        f"bench: latency of {key} at {label} ({summary['achieved_rate']:,.0f} "
                        f"events/s): p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
                        f"max {summary['max_ms']} ms, unresolved {summary['unresolved']}; "
                        f"generator {summary['producer']['cpu_s_per_1000_events'] * 1000:.2f} "
                        f"ms CPU per 1,000 events, poller {summary['poller']['cores']} cores "
                        f"(lookups p50 {summary['poller']['lookup_p50_ms']} ms); "
                        f"service batch mean {_mean_batch(summary['service_histogram'])}"
                        f"{_cpu_line(summary)}",
                        flush=True,
                    )
        for label, rate in plan:
            self.results["latency"][label] = {
                "rate": round(rate, 1),
                "systems": {key: _latency_summary(runs[label][key]) for key in systems},
            }

    async def scale(self) -> None:
        counts = [int(x) for x in self.args.scale_events.split(",") if x]
        prefills = [int(x) for x in self.args.scale_prefill.split(",") if x]
        prefills += [0] * (len(counts) - len(prefills))
        backlogs: dict[int, tuple[TopicSet, Oracle, EventMix]] = {}
        for i, (count, rows) in enumerate(zip(counts, prefills, strict=False)):
            label = f"{count}" + (f"+{rows}" if rows else "")
            if label in self.results["scale"]:  # a repeat: the first keeps the plain label
                label += f"#{i + 1}"
            key = f"scale{i}_{count}"
            if count not in backlogs:  # another variant reads the same backlog again
                topics, oracle, _, mix = await self.produce_backlog(key, count, keep_events=False)
                backlogs[count] = (topics, oracle, mix)
            topics, oracle, mix = backlogs[count]
            name = f"this service ({count:,})"
            if rows:
                name = f"this service ({count:,}, the table grown by {rows:,} rows first)"
            measured = await self.service_on(key, name, topics, oracle, diagnose=True, prefill=rows)
            measured.extra["mix_by_tenth"] = mix.as_list()
            self.results["scale"][label] = self.record(key, measured)
        for topics, _, _ in backlogs.values():
            await self.stack.delete_topics(topics.all)


def _latency_summary(runs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Medians and min-max of one system's live runs at one rate (every run kept)."""
    done = [r for r in runs if r is not None]
    return {
        "runs": runs,
        "achieved_rate": spread([r["achieved_rate"] for r in done], 0),
        "p50_ms": spread([r["p50_ms"] for r in done], 1),
        "p99_ms": spread([r["p99_ms"] for r in done], 1),
        "max_ms": spread([r["max_ms"] for r in done], 1),
        "unresolved": spread([r["unresolved"] for r in done], 0),
        "own_us_per_event": spread([(r.get("cpu") or {}).get("own_us_per_event") for r in done]),
        "stack_us_per_event": spread(
            [(r.get("cpu") or {}).get("stack_us_per_event") for r in done]
        ),
        "machine_busy_cores": spread(
            [(r.get("cpu") or {}).get("machine_busy_cores") for r in done]
        ),
    }


def _cpu_line(extra: dict[str, Any]) -> str:
    """``extra["cpu"]`` (:func:`bench.cpu.breakdown`) as one short line, or nothing."""
    c = extra.get("cpu")
    if not c or not c.get("events"):
        return ""

    def us(key: str) -> str:
        value = c.get(key)
        return "-" if value is None else f"{value:.1f}"

    return (
        f"\n       CPU us/event: own {us('own_us_per_event')}, PostgreSQL "
        f"{us('postgres_us_per_event')} (its database {us('postgres_database_us_per_event')}), "
        f"broker {us('broker_us_per_event')}, bench "
        f"{us('harness_us_per_event')}, rest {us('rest_us_per_event')} (irq "
        f"{us('irq_us_per_event')}), machine "
        f"{us('machine_us_per_event')} ({c.get('machine_busy_cores')} cores busy); CPU-bound "
        f"{c.get('cpu_bound_events_per_s')} events/s (own+PG+broker only: "
        f"{c.get('cpu_bound_events_per_s_stack')})"
    )


def _mean_batch(histogram: dict[str, float]) -> str:
    count = histogram.get("batch_size_count")
    total = histogram.get("batch_size_sum")
    return f"{total / count:.0f} records" if count and total else "?"


def machine(stack_pg_version: str) -> dict[str, Any]:
    """The machine's description for the results file."""
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": stack_pg_version,
        "kafka": "4.1.1 (KRaft, single broker, deploy/local/stack)",
        "packages": {
            d: version(d)
            for d in ("routing-persistence", "aiokafka", "asyncpg", "sqlalchemy", "pydantic")
        },
        "load_average_at_start": list(os.getloadavg()),
        "cores_busy_before": _busy_cores(),
        "note": "shared 2-core machine: other work may run at the same time; compare ratios",
    }


def _busy_cores(seconds: float = 1.0) -> float:
    """The machine's busy cores over ``seconds`` (``/proc/stat``): the load before the run."""

    def busy() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
        return sum(fields[:3]) + fields[5] + fields[6], sum(fields)

    b0, t0 = busy()
    time.sleep(seconds)
    b1, t1 = busy()
    return round((b1 - b0) / (t1 - t0) * (os.cpu_count() or 1), 2) if t1 > t0 else 0.0


async def _amain(args: argparse.Namespace) -> int:
    stack = Stack.from_env()
    run = Run(args, stack)
    started = time.perf_counter()
    run.results |= {
        "run_id": run.id,
        "started_at": run.stamp,
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "repeat": args.repeat,
        "machine": machine(await stack.server_version()),
        "checkout": {"path": str(ROOT), "commit": _checkout_commit(ROOT)},
        "baseline": None
        if args.baseline is None
        else {"path": str(args.baseline), "commit": _checkout_commit(args.baseline)},
    }
    print(
        f"bench: run {run.id} ({args.events:,} {args.workload} events, seed {args.seed}, "
        f"{args.repeat} round{'s' if args.repeat > 1 else ''})",
        flush=True,
    )
    try:
        await run.main()
    except Exception as exc:
        run.failed.append(f"run aborted: {type(exc).__name__}: {exc}")
        run.results["errors"].append(f"run aborted: {type(exc).__name__}: {exc}")
        print(f"bench: run aborted: {type(exc).__name__}: {exc}", flush=True)
    finally:
        await run.cleanup()
    run.results["duration_s"] = round(time.perf_counter() - started, 1)
    run.results["machine"]["load_average_at_end"] = list(os.getloadavg())
    run.results["failures"] = run.failed

    from bench.report import ratios, write_results

    run.results["ratios"] = ratios(run.results)
    out = args.out
    if out is None:
        out = (
            ROOT / ".local" / "bench" / "quick.json"
            if args.quick
            else ROOT / "bench" / "results" / f"{run.stamp}.json"
        )
    write_results(run.results, out, report=not (args.quick or args.no_report))
    print(f"bench: results in {out}", flush=True)
    for failure in run.failed:
        print(f"bench: FAILED: {failure}", flush=True)
    return 1 if run.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a system wrote wrong rows or the run broke."""
    args = _parse(argv)
    # aiokafka logs retried produce errors (a new topic's leader moving in) as ERROR: noise here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())

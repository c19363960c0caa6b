"""The benchmark's entry point: ``python -m bench.run [--events N] [--quick] [--only ...]``.

One run on the local stack: a seeded workload produced once, each system on it with its rows
checked against the oracle, the service's latency, the scale runs, then the results
(``bench/results/<timestamp>.json``, ``bench/RESULTS.md``, ``bench/charts/``). ``--quick`` (what
``make test`` runs) is a few thousand events without peer or scale runs. Exit 1 when a system
wrote wrong rows or the run broke, never because of speed. The run removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import secrets
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench.cpu import StackCpu
from bench.infra import ROOT, Stack, TopicSet, produce
from bench.oracle import Oracle, check_rows
from bench.profile import top_frames
from bench.systems import (
    Measured,
    pg_ceiling,
    run_kafka_ceiling,
    run_naive,
    run_service_backlog,
)
from bench.workload import Event, generate, tenant_ids

__all__ = ["main"]

PARTITIONS = 6
TENANTS = 1_000


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
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
        help="fixed produce rates (events/s, comma-separated) instead of 50 %%/90 %% of the max",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of service,service2,kafka,pg,naive,latency,peer,scale",
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
    return args


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
        self.results: dict[str, Any] = {"systems": {}, "latency": {}, "scale": {}, "errors": []}
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

    def record(self, key: str, measured: Measured) -> None:
        self.results["systems"][key] = measured.as_dict()
        if not measured.counts and measured.check is not None:
            c = measured.check
            self.failed.append(
                f"{measured.name}: wrong rows: {c.wrong_execution_records:,} of "
                f"{c.expected_execution_records:,} ExecutionRecord, {c.wrong_tenants:,} of "
                f"{c.expected_tenants:,} Tenant (e.g. {'; '.join(c.examples[:3])})"
            )
        rate = f"{measured.events_per_s:,.0f} events/s"
        cpu = measured.cpu_per_1000
        cpu_s = "" if cpu is None else f", {cpu:.3f} CPU s/1000"
        rss = measured.peak_rss_bytes
        rss_s = "" if rss is None else f", peak RSS {rss / 2**20:.0f} MiB"
        rows = (
            "" if measured.check is None else (" rows OK" if measured.check.ok else " ROWS WRONG")
        )
        line = f"bench: {measured.name}: {rate}{cpu_s}{rss_s};{rows}"
        print(line + _cpu_line(measured.extra), flush=True)

    async def produce_backlog(
        self, name: str, count: int, *, keep_events: bool, prefix: str = "req"
    ) -> tuple[TopicSet, Oracle, list[Event]]:
        topics = await self.topics(name)
        oracle = Oracle()
        kept: list[Event] = []

        def seen(event: Event) -> None:
            oracle.add(event)
            if keep_events:
                kept.append(event)

        sent, seconds = await produce(
            self.stack.bootstrap,
            generate(count, seed=self.args.seed, tenants=self.tenants, request_prefix=prefix),
            lambda e: topics.for_type(e.type),
            on_event=seen,
        )
        print(f"bench: produced {sent:,} events to {name} in {seconds:.1f} s", flush=True)
        return topics, oracle, kept

    async def dlq_count(self, topics: TopicSet) -> int:
        ends = await self.stack.end_offsets([topics.dlq])
        return sum(ends.values())

    async def service_on(
        self, key: str, name: str, topics: TopicSet, oracle: Oracle, *, instances: int = 1
    ) -> Measured:
        url = await self.database(key)
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
        )
        measured.check = await check_rows(url, oracle, self.tenants)
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

    async def main(self) -> None:
        args = self.args
        await self.make_template()
        topics, oracle, events = await self.produce_backlog(
            "main", args.events, keep_events=not args.no_peer
        )
        self.results["workload"] = {
            "events": oracle.events,
            "by_type": oracle.by_type,
            "execution_records": oracle.request_count,
            "tenants": len(self.tenants),
            "tenants_with_policy": len(oracle.policies),
            "partitions_per_topic": PARTITIONS,
            "seed": args.seed,
        }

        service = None
        if self.wants("service"):
            service = await self.service_on("service", "this service", topics, oracle)
            self.record("service", service)
        if self.wants("service2") and not args.quick:
            # One process per core, as the service is deployed (it scales by partitions); the
            # Debezium peer also runs two tasks on two threads.
            pair = await self.service_on(
                "service2", "this service, 2 processes", topics, oracle, instances=2
            )
            self.record("service2", pair)
        if self.wants("kafka"):
            self.record("kafka_ceiling", await run_kafka_ceiling(self.stack, topics, self.log_dir))
        if self.wants("pg"):
            pg_url = await self.database("pg_ceiling")
            pg = await pg_ceiling(
                pg_url,
                oracle,
                self.tenants,
                StackCpu.for_addresses(
                    self.stack.bootstrap, self.stack.pg_host_port[1], database_url=pg_url
                ),
            )
            pg.check = await check_rows(pg_url, oracle, self.tenants)
            self.record("pg_ceiling", pg)
        if self.wants("naive"):
            await self.naive(topics, oracle)
        if service is not None and self.wants("latency"):
            await self.latency(service)
        if not args.no_peer and self.wants("peer"):
            await self.peer(events, oracle)
        if not args.no_scale and self.wants("scale"):
            await self.scale()

    async def naive(self, topics: TopicSet, oracle: Oracle) -> None:
        args = self.args
        if args.naive_events >= args.events:
            naive_topics, naive_oracle = topics, oracle
            note = "same backlog as the others"
        else:
            naive_topics, naive_oracle, _ = await self.produce_backlog(
                "naive", args.naive_events, keep_events=False
            )
            note = (
                f"the first {args.naive_events:,} events of the same workload (at its speed "
                f"the whole backlog would take too long); rows checked against their own oracle"
            )
        url = await self.database("naive")
        measured = await run_naive(self.stack, naive_topics, url, self.group("naive"), self.log_dir)
        measured.check = await check_rows(url, naive_oracle, self.tenants)
        measured.notes.append(note)
        self.record("naive", measured)

    async def latency(self, service: Measured) -> None:
        from bench.latency import measure_latency

        if not service.counts or service.events_per_s <= 0:
            self.results["errors"].append("latency skipped: no valid service throughput")
            return
        # 50 % and 90 % are the points; 10 % shows the floor (the pipeline's own delay).
        shares = (0.5,) if self.args.quick else (0.1, 0.5, 0.9)
        plan = [(share, service.events_per_s * share) for share in shares]
        if self.args.latency_rates:
            plan = [
                (float(r) / service.events_per_s, float(r))
                for r in self.args.latency_rates.split(",")
            ]
        for share, planned in plan:
            rate = min(planned, 1_000.0) if self.args.quick else planned
            key = f"lat{int(rate)}"
            topics = await self.topics(key)
            url = await self.database(key)
            result = await measure_latency(
                self.stack,
                topics,
                url,
                self.group(key),
                rate=rate,
                seconds=self.args.latency_seconds,
                tenants=self.tenants,
                seed=self.args.seed + int(share * 100),
                log_path=self.log_dir / f"{key}.log",
                profile_path=self.log_dir / f"{key}.pyspy.txt" if self.args.profile else None,
            )
            summary = result.as_dict() | {"share_of_max": share}
            if self.args.profile:
                summary["profile"] = top_frames(self.log_dir / f"{key}.pyspy.txt")
            self.results["latency"][f"{share:.0%}"] = summary
            if result.exit_code != 0:
                self.failed.append(f"latency run {key}: service exit code {result.exit_code}")
            print(
                f"bench: latency at {share:.0%} ({summary['achieved_rate']:,.0f} events/s): "
                f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
                f"max {summary['max_ms']} ms, unresolved {summary['unresolved']}; "
                f"generator {summary['producer']['cpu_s_per_1000_events'] * 1000:.2f} ms CPU "
                f"per 1,000 events ({summary['producer']['cores']} cores), poller "
                f"{summary['poller']['cores']} cores; "
                f"service batch mean {_mean_batch(summary['service_histogram'])}"
                f"{_cpu_line(summary)}",
                flush=True,
            )

    async def peer(self, events: list[Event], oracle: Oracle) -> None:
        from bench.peer import run_debezium

        url = await self.database("debezium")
        try:
            measured = await run_debezium(
                self.stack,
                await self.topics("peer"),
                events,
                oracle,
                url,
                tenants=self.tenants,
                log_dir=self.log_dir,
                name_prefix=f"bench-{self.id}",
            )
        except Exception as exc:
            self.results["errors"].append(f"debezium peer failed: {exc}")
            print(f"bench: debezium peer failed: {exc}", flush=True)
            return
        self.record("debezium", measured)

    async def scale(self) -> None:
        counts = [int(x) for x in self.args.scale_events.split(",") if x]
        for i, count in enumerate(counts):
            key = f"scale{count}" if counts.count(count) == 1 else f"scale{count}_{i}"
            topics, oracle, _ = await self.produce_backlog(key, count, keep_events=False)
            measured = await self.service_on(key, f"this service ({count:,})", topics, oracle)
            self.results["scale"][str(count)] = measured.as_dict()
            self.record(key, measured)
            self.results["systems"].pop(key, None)
            await self.stack.delete_topics(topics.all)


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
    import os

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
        "note": "shared 2-core machine: other work may run at the same time; compare ratios",
    }


async def _amain(args: argparse.Namespace) -> int:
    stack = Stack.from_env()
    run = Run(args, stack)
    started = time.perf_counter()
    run.results |= {
        "run_id": run.id,
        "started_at": run.stamp,
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "machine": machine(await stack.server_version()),
    }
    print(f"bench: run {run.id} ({args.events:,} events, seed {args.seed})", flush=True)
    try:
        await run.main()
    except Exception as exc:
        run.failed.append(f"run aborted: {type(exc).__name__}: {exc}")
        run.results["errors"].append(f"run aborted: {type(exc).__name__}: {exc}")
        print(f"bench: run aborted: {type(exc).__name__}: {exc}", flush=True)
    finally:
        await run.cleanup()
    run.results["duration_s"] = round(time.perf_counter() - started, 1)
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

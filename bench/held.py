"""The cost of holding (issue 14): ``python -m bench.held [--events N] [--late 0.2] [--runs 3]``.

1. **Throughput, 0 % vs 20 % late rows, in the same run.** One seeded backlog (the benchmark's
   workload, :mod:`bench.workload`) is consumed by the real ``routing-persistence run`` under
   ``park`` (the default) on fresh copies of one template: with every ``"ExecutionRecord"`` row
   created before (0 % late) and with ``--late`` of them missing (their snapshots and costs are
   held). Timed like ``bench.run`` (first commit to the backlog's end, from the group's committed
   offsets). The two cases alternate, ``--runs`` times each; medians reported. In the late case
   the missing rows are then created and the time until nothing is held is measured (a second
   ``run`` of the same group: nothing left to consume, only the release), and every row is
   checked against the oracle.
2. **The release with many old held rows.** ``--old-held`` held rows that never get a row
   (held over the last 7 days, beside as many other ``"ExecutionRecord"`` rows): the wall time of
   one release step (the newest chunk, the sweep's next chunk) and of one expiry step, per chunk
   size; then the worst case, a row that appears just behind the sweep: the cycles until its
   fields are released (x ``held_release_interval_s`` = the delay in production).

Prints the figures and writes them to ``.local/bench/held-<stamp>.json``; ``bench/RESULTS.md``
("Holding") quotes them with this command. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.infra import ROOT, Stack, TopicSet, produce
from bench.oracle import Oracle, check_rows
from bench.systems import run_service_backlog, service_env, start_service, stop_service
from bench.workload import generate, tenant_ids

__all__ = ["main"]

PARTITIONS = 6
TENANTS = 1_000
PARK = {"ROUTING_MISSING_ROW_POLICY": "park"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.held", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--late", type=float, default=0.2, help="share of rows created late")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--old-held", type=int, default=100_000)
    parser.add_argument("--chunks", default="2000,10000", help="held_chunk values to time")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-release", action="store_true")
    return parser.parse_args(argv)


class HeldBench:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.id = f"h{datetime.now(UTC):%y%m%d%H%M}{secrets.token_hex(2)}"
        self.template = f"bench_{self.id}_tmpl"
        self.databases: list[str] = []
        self.topics: list[str] = []
        self.tenants = tenant_ids(TENANTS)
        self.log_dir = ROOT / ".local" / "bench" / self.id
        self.results: dict[str, Any] = {"run_id": self.id, "args": vars(args)}

    async def database(self, name: str, template: str | None = None) -> str:
        db = f"bench_{self.id}_{name}"
        self.databases.append(db)
        return await self.stack.create_database(db, template=template or self.template)

    async def make_template(self) -> None:
        from consumer.ops.migrate import upgrade
        from consumer.settings import Settings

        self.databases.append(self.template)
        url = await self.stack.create_database(self.template)
        await asyncio.to_thread(upgrade, Settings(database_url=url), sql=False)
        conn = await asyncpg.connect(url)
        try:
            await conn.copy_records_to_table(
                "Tenant", records=[(t, f"Tenant {t}") for t in self.tenants], columns=["id", "name"]
            )
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        if self.topics:
            await self.stack.delete_topics(self.topics)
        for db in reversed(self.databases):
            try:
                await self.stack.drop_database(db)
            except Exception as exc:
                print(f"bench.held: could not drop {db}: {exc}")

    # --- 1. throughput --------------------------------------------------------------------------

    async def throughput(self) -> None:
        args = self.args
        topics = TopicSet.named(f"bench-{self.id}.main")
        self.topics += topics.all
        await self.stack.create_topics(topics.all, PARTITIONS)
        oracle = Oracle()
        sent, seconds = await produce(
            self.stack.bootstrap,
            generate(args.events, seed=args.seed, tenants=self.tenants),
            lambda e: topics.for_type(e.type),
            on_event=oracle.add,
        )
        print(f"bench.held: produced {sent:,} events in {seconds:.1f} s", flush=True)
        requests = sorted(oracle.request_tenants.items())
        random.Random(args.seed).shuffle(requests)
        n_late = round(len(requests) * args.late)
        runs: dict[str, list[dict[str, Any]]] = {"0": [], str(args.late): []}
        for run in range(args.runs):
            order = [0.0, args.late] if run % 2 == 0 else [args.late, 0.0]
            for share in order:
                late = requests[:n_late] if share else []
                before = requests[n_late:] if share else requests
                key = f"r{run}l{int(share * 100)}"
                url = await self.database(key)
                await _create_rows(url, before)
                measured = await run_service_backlog(
                    self.stack,
                    topics,
                    url,
                    f"bench-{self.id}-{key}",
                    oracle.events,
                    self.log_dir / f"{key}.log",
                    name=f"park, {share:.0%} late",
                    env=PARK,
                )
                entry: dict[str, Any] = {
                    "events_per_s": round(measured.events_per_s, 1),
                    "cpu_s_per_1000": measured.cpu_per_1000,
                    "exit_code": measured.extra.get("exit_code"),
                    "held": await _held_count(url),
                }
                if late:
                    entry["release_s"] = await self.release_all(url, topics, key, late)
                entry["rows_ok"] = (await check_rows(url, oracle, self.tenants)).ok
                runs["0" if not share else str(args.late)].append(entry)
                print(f"bench.held: {key}: {json.dumps(entry)}", flush=True)
        summary = {
            share: {
                "median_events_per_s": statistics.median(e["events_per_s"] for e in entries),
                "runs": entries,
            }
            for share, entries in runs.items()
        }
        zero, late_summary = summary["0"], summary[str(args.late)]
        ratio = late_summary["median_events_per_s"] / zero["median_events_per_s"]
        summary["ratio_late_to_zero"] = round(ratio, 3)
        self.results["throughput"] = summary
        print(
            f"bench.held: median events/s: 0 % late {zero['median_events_per_s']:,.0f}, "
            f"{args.late:.0%} late {late_summary['median_events_per_s']:,.0f} "
            f"(x{ratio:.3f}); rows OK: "
            f"{all(e['rows_ok'] for es in runs.values() for e in es)}",
            flush=True,
        )

    async def release_all(
        self, url: str, topics: TopicSet, key: str, late: list[tuple[str, str]]
    ) -> float:
        """Create the late rows, run the service again (nothing left to consume) and time
        until nothing is held."""
        from bench.infra import free_port

        port = free_port()
        env = service_env(self.stack, topics, url, f"bench-{self.id}-{key}", port, PARK)
        proc = start_service(env, self.log_dir / f"{key}.release.log")
        try:
            await _wait_ready(port)
            await _create_rows(url, late)
            started = time.monotonic()
            while await _held_count(url):
                if time.monotonic() - started > 600:
                    raise RuntimeError("held fields not released within 600 s")
                await asyncio.sleep(0.2)
            return round(time.monotonic() - started, 2)
        finally:
            await asyncio.to_thread(stop_service, proc)

    # --- 2. the release with many old held rows --------------------------------------------------

    async def release_cost(self) -> None:
        from bench.held_release import measure_release

        url = await self.database("oldheld")
        self.results["release"] = await measure_release(
            url, self.stack, self.args.old_held, [int(c) for c in self.args.chunks.split(",")]
        )


async def _create_rows(url: str, rows: list[tuple[str, str]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "ExecutionRecord",
            records=[(r, r, t) for r, t in rows],
            columns=["id", "requestId", "tenantId"],
        )
    finally:
        await conn.close()


def _is_ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(_is_ready, port):
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not become ready")
        await asyncio.sleep(0.2)


async def _held_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM routing_persistence.held_field"))
    finally:
        await conn.close()


async def _amain(args: argparse.Namespace) -> int:
    bench = HeldBench(args, Stack.from_env())
    bench.results["command"] = "python -m bench.held " + " ".join(sys.argv[1:])
    try:
        await bench.make_template()
        if not args.skip_throughput:
            await bench.throughput()
        if not args.skip_release:
            await bench.release_cost()
    finally:
        await bench.cleanup()
    out = ROOT / ".local" / "bench" / f"held-{bench.id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
    print(f"bench.held: results in {out}")
    throughput = bench.results.get("throughput", {})
    bad = [e for k, v in throughput.items() if isinstance(v, dict) for e in v["runs"]]
    return 1 if any(not e["rows_ok"] or e["exit_code"] != 0 for e in bad) else 0


def main(argv: list[str] | None = None) -> int:
    """Run it; exit 1 when rows were wrong or a service did not exit cleanly."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_amain(_parse(argv)))


if __name__ == "__main__":
    sys.exit(main())

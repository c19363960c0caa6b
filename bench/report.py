"""Turning one run's figures into the results file, ``bench/RESULTS.md`` and the charts.

Ratios against systems measured in the same run are the headline, each the median over the
rounds of the ratio taken *within* a round (:func:`bench.summary.paired_ratio`), with its
min-max: the machine is shared and noisy, so absolute figures move between runs while ratios
move much less. A system whose rows were wrong has no ratio (``null``): its speed does not count.

``bench/RESULTS.md`` is rewritten only between the ``<!-- bench:begin:<workload> -->`` and
``<!-- bench:end:<workload> -->`` markers of the run's workload (one block per workload, so a
run of each keeps the other's); what others write outside them is kept. Charts need matplotlib
(the ``dev`` extra); ``--quick`` never draws them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.growth import fit_by_type
from bench.infra import ROOT
from bench.summary import events_per_s, events_per_stack_cpu_s, paired_ratio

__all__ = ["ratios", "render_markdown", "write_results"]

RESULTS_MD = ROOT / "bench" / "RESULTS.md"
CHARTS = ROOT / "bench" / "charts"


def _markers(workload: str) -> tuple[str, str]:
    return f"<!-- bench:begin:{workload} -->", f"<!-- bench:end:{workload} -->"


#: key: (numerator, denominator, figure, target op, target, meaning) of the paired ratios.
_PAIRED: dict[str, tuple[str, str, Any, str | None, float | None, str]] = {
    "service_vs_baseline": (
        "service",
        "baseline",
        events_per_s,
        ">=",
        1.6,
        "one process vs the baseline checkout (today's main), events/s",
    ),
    "service_vs_baseline_per_cpu": (
        "service",
        "baseline",
        events_per_stack_cpu_s,
        None,
        None,
        "the same A/B in events per CPU-second of service + PostgreSQL + broker",
    ),
    "service_fraction_of_limit": (
        "service",
        "limit",
        events_per_s,
        ">=",
        0.5,
        "one process as a fraction of L (a limit a consumer can reach)",
    ),
    "service2_fraction_of_limit": (
        "service2",
        "limit",
        events_per_s,
        None,
        None,
        "two processes as a fraction of L",
    ),
    "service_vs_debezium1_per_cpu": (
        "service",
        "debezium1",
        events_per_stack_cpu_s,
        ">=",
        2.0,
        "vs Debezium at equal machine CPU: events per CPU-second of system + PostgreSQL "
        "+ broker, 1 process vs 1 task",
    ),
    "service2_vs_debezium2_per_cpu": (
        "service2",
        "debezium2",
        events_per_stack_cpu_s,
        ">=",
        2.0,
        "the same, 2 processes vs 2 tasks",
    ),
    "service_vs_debezium1": (
        "service",
        "debezium1",
        events_per_s,
        ">=",
        2.0,
        "vs Debezium at equal parallelism, events/s: 1 process vs 1 task",
    ),
    "service2_vs_debezium2": (
        "service2",
        "debezium2",
        events_per_s,
        ">=",
        2.0,
        "the same, 2 processes vs 2 tasks",
    ),
}

_SINGLE: dict[str, tuple[str | None, float | None, str]] = {
    "p99_ms_at_50pct": ("<", 100.0, "live p99 (ms) at 50 % of the one-process maximum"),
    "p99_ms_at_80pct": ("<", 500.0, "live p99 (ms) at 80 % of the one-process maximum"),
    "baseline_p99_ms_at_50pct": (
        None,
        None,
        "baseline checkout live p99 (ms) at the same 50 % rate (this one's maximum)",
    ),
    "baseline_p99_ms_at_80pct": (
        None,
        None,
        "baseline checkout live p99 (ms) at the same 80 % rate",
    ),
    "peer_p99_ms_at_50pct": (None, None, "Debezium (1 task) live p99 (ms) at the same 50 % rate"),
    "peer_p99_ms_at_80pct": (None, None, "Debezium (1 task) live p99 (ms) at the same 80 % rate"),
    "peak_rss_mib_at_1m": ("<", 250.0, "peak RSS on the 1,000,000-event backlog (MiB)"),
    "cost_growth_1m_vs_100k": ("<=", 0.15, "CPU/event at 1M vs 100k, relative change"),
    "cost_growth_within_1m": (
        None,
        None,
        "CPU/event within the 1M run, 70-80 % vs 10-20 % of its records, relative change (the "
        "mix of topics read differs between them: see the per-tenth table)",
    ),
}


def _met(op: str | None, target: float | None, value: float | None) -> bool | None:
    if op is None or target is None or value is None:
        return None
    return {">=": value >= target, "<": value < target, "<=": value <= target}[op]


def _p99(results: dict[str, Any], label: str, system: str) -> float | None:
    live = results.get("latency", {}).get(label, {}).get("systems", {}).get(system)
    if not live:
        return None
    value = live["p99_ms"]["median"]
    return None if value is None else float(value)


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's targets are stated in, each with its target and verdict."""
    runs = results.get("runs", {})
    out: dict[str, Any] = {}
    for key, (a, b, figure, op, target, meaning) in _PAIRED.items():
        if a not in runs or b not in runs:
            continue
        paired = paired_ratio(runs[a], runs[b], figure)
        out[key] = paired | {
            "value": paired["median"],
            "target": None if op is None else f"{op} {target:g}",
            "met": _met(op, target, paired["median"]),
            "meaning": meaning,
        }
    values: dict[str, float | None] = {
        "p99_ms_at_50pct": _p99(results, "50%", "service"),
        "p99_ms_at_80pct": _p99(results, "80%", "service"),
        "baseline_p99_ms_at_50pct": _p99(results, "50%", "baseline"),
        "baseline_p99_ms_at_80pct": _p99(results, "80%", "baseline"),
        "peer_p99_ms_at_50pct": _p99(results, "50%", "debezium1"),
        "peer_p99_ms_at_80pct": _p99(results, "80%", "debezium1"),
        "peak_rss_mib_at_1m": None,
        "cost_growth_1m_vs_100k": None,
        "cost_growth_within_1m": None,
    }
    scale = results.get("scale", {})
    big, small = scale.get("1000000"), scale.get("100000")
    if big and big.get("counts") and big.get("peak_rss_bytes"):
        values["peak_rss_mib_at_1m"] = big["peak_rss_bytes"] / 2**20
    if big and small and big.get("counts") and small.get("counts"):
        c_big, c_small = big.get("cpu_s_per_1000_events"), small.get("cpu_s_per_1000_events")
        if c_big and c_small:
            values["cost_growth_1m_vs_100k"] = c_big / c_small - 1
    if big and big.get("counts"):
        first, last = big.get("cpu_s_per_1000_early"), big.get("cpu_s_per_1000_late")
        if first and last:
            values["cost_growth_within_1m"] = last / first - 1
    for key, value in values.items():
        if value is None:
            continue
        op, target, meaning = _SINGLE[key]
        out[key] = {
            "value": round(value, 3),
            "target": None if op is None else f"{op} {target:g}",
            "met": _met(op, target, value),
            "meaning": meaning,
        }
    return out


def _mib(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def _num(value: Any, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _range(spread: dict[str, Any] | None, fmt: str = ",.0f") -> str:
    """``median (min-max)`` of a spread, or its one value."""
    if not spread or spread.get("median") is None:
        return "-"
    median = format(spread["median"], fmt)
    if spread.get("n", 1) <= 1 or spread["min"] == spread["max"]:
        return median
    return f"{median} ({format(spread['min'], fmt)}-{format(spread['max'], fmt)})"


_NAMES = {
    "service": "this service, 1 process",
    "baseline": "baseline checkout, 1 process",
    "service2": "this service, 2 processes (one group)",
    "debezium1": "Debezium JDBC sink, 1 task",
    "debezium2": "Debezium JDBC sink, 2 tasks",
    "limit": "L: a limit a consumer can reach",
    "reader": "aiokafka alone (L's read phase)",
    "naive": "naive port (B6 translated), 1 run",
}


def _headline(results: dict[str, Any]) -> list[str]:
    lines = [
        "| figure | median (min-max over the rounds) | target | met |",
        "|---|---|---|---|",
    ]
    for key, r in results["ratios"].items():
        if r.get("value") is None:
            shown = "not measured"
        elif key in _PAIRED:  # a ratio; the baseline's and the peer's p99 are milliseconds
            shown = _range(r, ".2f") + "x" if "min" in r else f"{r['value']:.2f}x"
        elif key.startswith("cost_growth"):
            shown = f"{r['value']:+.1%}"
        elif "min" in r:
            shown = _range(r, ",.0f")
        else:
            shown = f"{r['value']:,.0f}"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['meaning']} | {shown} | {r['target'] or '-'} | {met} |")
    return lines


def _throughput(results: dict[str, Any]) -> list[str]:
    lines = [
        "| system | events/s | events per CPU-second of system + PostgreSQL + broker "
        "| own CPU s / 1,000 events | peak RSS (MiB) | rows equal the oracle |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in _NAMES.items():
        s = results["systems"].get(key)
        if not s:
            continue
        ok = (
            f"yes ({s['counted_runs']}/{s['runs']} runs)"
            if s["rows_ok"]
            else f"**NO ({s['runs'] - s['counted_runs']} of {s['runs']} runs wrong)**"
        )
        if key == "reader":
            ok = "not checked"
        eps = s.get("limit_events_per_s") or s["events_per_s"]
        lines.append(
            f"| {name} | {_range(eps)} | {_range(s['events_per_stack_cpu_s'])} | "
            f"{_range(s['cpu_s_per_1000_events'], '.4f')} | {_mib(s['peak_rss_bytes'])} | {ok} |"
        )
    return lines


def _cpu_table(results: dict[str, Any]) -> list[str]:
    """Where the machine's CPU went per event, per system on the backlog (``bench/cpu.py``)."""
    rows = [(name, results["systems"].get(key)) for key, name in _NAMES.items()]
    rows = [(n, s) for n, s in rows if s and s["cpu"]["machine_us_per_event"]["median"]]
    if not rows:
        return []
    lines = [
        "| system | own | PostgreSQL (its database) | broker | bench | rest (of which irq) "
        "| machine | machine busy (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        c = {k: v["median"] for k, v in s["cpu"].items()}
        lines.append(
            f"| {name} | {_range(s['cpu']['own_us_per_event'], ',.1f')} | "
            f"{_range(s['cpu']['postgres_us_per_event'], ',.1f')} "
            f"({_num(c['postgres_database_us_per_event'], ',.1f')}) | "
            f"{_num(c['broker_us_per_event'], ',.1f')} | {_num(c['harness_us_per_event'], ',.1f')} "
            f"| {_num(c['rest_us_per_event'], ',.1f')} ({_num(c['irq_us_per_event'], ',.1f')}) | "
            f"{_range(s['cpu']['machine_us_per_event'], ',.1f')} | "
            f"{_num(c['machine_busy_cores'], '.2f')} |"
        )
    return lines


def _limit_table(results: dict[str, Any]) -> list[str]:
    s = results["systems"].get("limit")
    if not s or "us_per_event" not in s:
        return []
    parts = s["us_per_event"]
    cores = results["machine"]["nproc"]
    return [
        "| aiokafka read | broker while reading | PostgreSQL writing the batches' final versions "
        f"| total | L = {cores} cores / total (events/s) |",
        "|---|---|---|---|---|",
        f"| {_range(parts['read_us_per_event'], '.2f')} | "
        f"{_range(parts['broker_us_per_event'], '.2f')} | "
        f"{_range(parts['postgres_us_per_event'], '.2f')} | {_range(parts['total'], '.2f')} | "
        f"{_range(s['limit_events_per_s'])} |",
        "",
        f"({'; '.join(s['notes'])}.)",
    ]


def _latency_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| load | system | events/s | p50 ms | p99 ms | max ms | unresolved "
        "| own CPU us/event | system + PG + broker us/event | machine busy (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, live in results["latency"].items():
        for key, s in live["systems"].items():
            lines.append(
                f"| {label} | {_NAMES.get(key, key)} | {_range(s['achieved_rate'])} | "
                f"{_range(s['p50_ms'], ',.1f')} | {_range(s['p99_ms'], ',.1f')} | "
                f"{_range(s['max_ms'], ',.1f')} | {_range(s['unresolved'])} | "
                f"{_range(s['own_us_per_event'], ',.1f')} | "
                f"{_range(s['stack_us_per_event'], ',.1f')} | "
                f"{_range(s['machine_busy_cores'], '.2f')} |"
            )
    return lines


def _tenths_table(scale: dict[str, Any]) -> list[str]:
    """What changes along a long run, per tenth of it (:mod:`bench.growth`)."""
    tenths = scale.get("tenths") or []
    if not tenths:
        return []
    lines = [
        "| tenth | events/s | service us/event (user + system) | PostgreSQL us/event "
        "| broker us/event | canary us/record | other work on the machine (cores) "
        "| mean batch | read: snapshots / costs / policies, stale (% of the tenth's events) "
        "| ER inserts + updates per event, HOT share | ER table + indexes at end (MiB) "
        "| ER dead rows at end | autovacuum running (share of polls) "
        "| blocks read from the OS per event | WAL bytes per event |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, t in enumerate(tenths):
        read = t.get("consumed_shares") or {}

        def pct(key: str, read: dict[str, Any] = read) -> str:
            return f"{read.get(key, 0) * 100:.0f}"

        stale = t.get("consumed_stale_share")
        hot = t.get("er_hot_share")
        lines.append(
            f"| {n + 1} | {_num(t['events_per_s'])} | {_num(t['service_us'], '.1f')} "
            f"({_num(t['service_user_us'], '.1f')} + {_num(t['service_system_us'], '.1f')}) | "
            f"{_num(t['postgres_us'], '.1f')} | {_num(t['broker_us'], '.1f')} | "
            f"{_num(t.get('canary_us_per_record'), '.2f')} | "
            f"{_num(t.get('other_work_cores'), '.2f')} | {_num(t['mean_batch'])} | "
            f"{pct('routing.snapshot')} / {pct('routing.cost')} / {pct('tenant.policy')}, "
            f"{'-' if stale is None else f'{stale * 100:.0f}'} | "
            f"{t['er_inserts_per_event']:.2f} + {t['er_updates_per_event']:.2f}, "
            f"{'-' if hot is None else f'{hot:.2f}'} | "
            f"{t['er_table_mib_end']:.0f} + {t['er_index_mib_end']:.0f} | "
            f"{_num(t['er_dead_rows_end'])} | {_num(t['autovacuum_running_share'], '.2f')} | "
            f"{t['er_blocks_read_per_event']:.3f} | {_num(t['wal_bytes_per_event'])} |"
        )
    return lines


def _fit_lines(tenths: list[dict[str, Any]]) -> list[str]:
    """Cost per event of each type, fitted over the tenths (:func:`bench.growth.fit_by_type`)."""
    out = []
    for figure, name in (("service_us", "the service's CPU"), ("postgres_us", "PostgreSQL's CPU")):
        fit = fit_by_type(tenths, figure)
        if fit is None:
            continue
        out.append(
            f"{name}, us per event of each type read (least squares over the tenths): "
            f"snapshot {fit['routing.snapshot']:.1f}, cost {fit['routing.cost']:.1f}, "
            f"policy {fit['tenant.policy']:.1f}; the largest gap between a tenth and this "
            f"model: {fit['max_residual']:.1f}."
        )
    return ["", *(f"- {line}" for line in out)] if out else []


def render_markdown(results: dict[str, Any], results_path: str) -> str:
    """The generated part of ``bench/RESULTS.md`` for one run."""
    m = results["machine"]
    w = results.get("workload", {})
    base = results.get("baseline") or {}
    repeat = results.get("repeat", 1)
    begin, end = _markers(str(w.get("name")))
    lines = [
        begin,
        "<!-- Generated by `python -m bench.run` (bench/report.py); edit outside the markers. -->",
        "",
        f"#### Headline: medians of {repeat} interleaved rounds, ratios taken within each round",
        "",
        f"Run `{results['run_id']}` at {results['started_at']}, workload `{w.get('name')}`, "
        f"{w.get('events', 0):,} events, seed {w.get('seed')}: `{results['command']}` "
        f"(every run's figures: [`{results_path}`]({results_path.removeprefix('bench/')})). "
        f"This checkout: `{(results.get('checkout') or {}).get('commit')}`"
        + (f"; baseline: `{base.get('commit')}` ({base.get('path')})." if base else "."),
        "",
        *_headline(results),
        "",
        "#### Throughput on the same backlog (medians, min-max)",
        "",
        *_throughput(results),
    ]
    cpu = _cpu_table(results)
    if cpu:
        lines += [
            "",
            "#### Where the machine's CPU goes, us per event (medians)",
            "",
            "Own process(es), the PostgreSQL server (in brackets: the backends of the system's "
            "own database), the broker, the benchmark's own process, the rest of the machine "
            "(other work on the shared machine; interrupts in brackets) and the machine's total.",
            "",
            *cpu,
        ]
    limit = _limit_table(results)
    if limit:
        lines += ["", "#### L, measured in the same run (us per event, medians)", "", *limit]
    if results["latency"]:
        lines += [
            "",
            "#### Live latency (occurredAt -> row visible in PostgreSQL), the same absolute rates",
            "",
            *_latency_table(results),
        ]
    if results.get("scale"):
        lines += [
            "",
            "#### Scale: this service on larger backlogs (one run each)",
            "",
            "| backlog | events/s | CPU s / 1,000 events | peak RSS (MiB) | rows equal |",
            "|---|---|---|---|---|",
        ]
        for count, s in results["scale"].items():
            rows = s.get("rows") or {}
            lines.append(
                f"| {int(count):,} | {_num(s['events_per_s'])} | "
                f"{_num(s['cpu_s_per_1000_events'], '.4f')} | {_mib(s['peak_rss_bytes'])} | "
                f"{'yes' if rows.get('ok') else '**no**'} |"
            )
        for label, s in results["scale"].items():
            table = _tenths_table(s)
            if table:
                lines += ["", f"Along the run `{label}`, per tenth of it:", "", *table]
                lines += _fit_lines(s.get("tenths") or [])
    load_end = m.get("load_average_at_end") or []
    lines += ["", "#### Machine", ""]
    lines.append(
        f"{m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, PostgreSQL {m['postgresql']}, Kafka {m['kafka']}; "
        f"{m.get('cores_busy_before', '-')} cores busy in the second before the run; load "
        f"average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}"
        + (f", at end {', '.join(f'{x:.2f}' for x in load_end)}" if load_end else "")
        + f"; the run took {results.get('duration_s', 0) / 60:.0f} min."
    )
    if results.get("failures") or results.get("errors"):
        lines += ["", "#### Failures and errors of this run", ""]
        lines += [f"- {f}" for f in dict.fromkeys(results.get("failures", []) + results["errors"])]
    notes = [
        f"- **{_NAMES.get(k, k)}**: {'; '.join(s['notes'])}"
        for k, s in results["systems"].items()
        if s.get("notes")
    ]
    if notes:
        lines += ["", "#### Notes per system (from the run)", "", *notes]
    name = w.get("name")
    if (CHARTS / f"throughput_{name}.png").exists():
        lines += ["", f"![throughput](charts/throughput_{name}.png)"]
    if (CHARTS / f"latency_cdf_{name}.png").exists():
        lines += ["", f"![latency CDF](charts/latency_cdf_{name}.png)"]
    lines.append(end)
    return "\n".join(lines)


def _merge_markdown(generated: str, workload: str) -> None:
    begin, end = _markers(workload)
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if begin in text and end in text:
            head, _, rest = text.partition(begin)
            _, _, tail = rest.partition(end)
            RESULTS_MD.write_text(head + generated + tail)
            return
        RESULTS_MD.write_text(text.rstrip() + "\n\n" + generated + "\n")
        return
    RESULTS_MD.write_text("# Benchmark results\n\n" + generated + "\n")


def _median_run(runs: list[dict[str, Any] | None], key: str) -> dict[str, Any] | None:
    done = sorted(
        (r for r in runs if r is not None and r.get(key) is not None), key=lambda r: r[key]
    )
    return done[len(done) // 2] if done else None


def draw_charts(results: dict[str, Any]) -> list[Path]:
    """Throughput bars (medians, min-max) and the latency CDFs as PNGs in ``bench/charts/``
    (``throughput_<workload>.png``, ``latency_cdf_<workload>.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    CHARTS.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    names, values, lows, highs, colors = [], [], [], [], []
    for key, name in _NAMES.items():
        s = results["systems"].get(key)
        if not s or key == "naive":
            continue
        eps = s.get("limit_events_per_s") or s["events_per_s"]
        if eps["median"] is None:
            continue
        names.append(name.replace(" (", "\n("))
        values.append(eps["median"])
        lows.append(eps["median"] - eps["min"])
        highs.append(eps["max"] - eps["median"])
        colors.append(
            "#2b6cb0"
            if key.startswith("service")
            else "#a0aec0"
            if key in ("limit", "reader", "baseline")
            else "#dd6b20"
        )
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(names, values, color=colors, xerr=[lows, highs], capsize=3)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=8)
    ax.set_xscale("log")
    ax.set_xlabel("events/s, log scale: median and min-max of the rounds (higher is better)")
    if values:
        ax.set_xlim(left=max(1.0, min(values) / 3))
    w = results.get("workload", {})
    ax.set_title(f"Throughput, {w.get('events', 0):,}-event backlog, workload {w.get('name')}")
    ax.invert_yaxis()
    fig.tight_layout()
    path = CHARTS / f"throughput_{w.get('name')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)

    if not results["latency"]:
        return made
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, live in results["latency"].items():
        for key, s in live["systems"].items():
            run = _median_run(s["runs"], "p99_ms")
            cdf = (run or {}).get("cdf_s") or []
            if cdf:
                ax.plot(
                    [p[0] * 1000 for p in cdf],
                    [p[1] for p in cdf],
                    label=f"{_NAMES.get(key, key)}, {label} ({live['rate']:,.0f} ev/s)",
                    linestyle="-" if key == "service" else "--",
                )
    ax.set_xscale("log")
    ticks = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 60_000]
    ax.set_xticks(ticks, labels=[f"{t:,}" for t in ticks])
    ax.set_xlabel("end-to-end latency, ms, log scale (occurredAt -> row visible in PostgreSQL)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Latency CDF at the same produce rates (the median run by p99)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = CHARTS / f"latency_cdf_{w.get('name')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    return made


def write_results(results: dict[str, Any], out: Path, *, report: bool) -> None:
    """Write the JSON; with ``report``, also the charts and ``bench/RESULTS.md``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not report:
        return
    draw_charts(results)
    try:
        shown = str(out.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(out)
    _merge_markdown(render_markdown(results, shown), str(results.get("workload", {}).get("name")))

"""Turning one run's figures into the results file, ``bench/RESULTS.md`` and the charts.

Ratios against baselines measured in the same run are the headline: the machines are shared and
noisy, so absolute figures move between runs while ratios move much less. A system whose rows were
wrong has no ratio (``null``): its speed does not count.

``bench/RESULTS.md`` is rewritten only between the ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` markers; sections others add outside them (``## Decoding``...) are kept.
Charts need matplotlib (the ``dev`` extra); ``--quick`` never draws them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.infra import ROOT

__all__ = ["ratios", "render_markdown", "write_results"]

RESULTS_MD = ROOT / "bench" / "RESULTS.md"
CHARTS = ROOT / "bench" / "charts"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

_TARGETS = {
    "service_vs_naive": (">=", 20.0, "events/s vs the naive port"),
    "service_vs_debezium": (">=", 2.0, "events/s vs the Debezium JDBC sink (2 tasks)"),
    "service2_vs_debezium": (
        ">=",
        2.0,
        "events/s, 2 processes (one per core) vs the Debezium JDBC sink (2 tasks)",
    ),
    "service_vs_lower_ceiling": (">=", 0.5, "events/s vs the lower of the two ceilings"),
    "service2_vs_lower_ceiling": (
        ">=",
        0.5,
        "events/s, 2 processes (one per core) vs the lower of the two ceilings",
    ),
    "p99_ms_at_50pct": ("<", 250.0, "p99 end-to-end latency at 50 % of max (ms)"),
    "peak_rss_mib_at_1m": ("<", 250.0, "peak RSS on the 1,000,000-event backlog (MiB)"),
    "cost_growth_1m_vs_100k": ("<=", 0.15, "CPU/event at 1M vs 100k, relative change"),
    "cost_growth_within_1m": (
        "<=",
        0.15,
        "CPU/event within the 1M run, 70-80 % vs 10-20 % of its records, relative change",
    ),
}


def _eps(results: dict[str, Any], key: str) -> float | None:
    system = results["systems"].get(key)
    if not system or not system.get("counts") or not system.get("events_per_s"):
        return None
    return float(system["events_per_s"])


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's targets are stated in, each with its target and verdict."""
    service = _eps(results, "service")
    service2 = _eps(results, "service2")
    naive = _eps(results, "naive")
    debezium = _eps(results, "debezium")
    ceilings = [c for c in (_eps(results, "kafka_ceiling"), _eps(results, "pg_ceiling")) if c]
    values: dict[str, float | None] = {
        "service_vs_naive": service / naive if service and naive else None,
        "service_vs_debezium": service / debezium if service and debezium else None,
        "service2_vs_debezium": service2 / debezium if service2 and debezium else None,
        "service_vs_lower_ceiling": service / min(ceilings)
        if service and len(ceilings) == 2
        else None,
        "service2_vs_lower_ceiling": service2 / min(ceilings)
        if service2 and len(ceilings) == 2
        else None,
        "p99_ms_at_50pct": results["latency"].get("50%", {}).get("p99_ms"),
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
    out: dict[str, Any] = {}
    for key, value in values.items():
        op, target, meaning = _TARGETS[key]
        met = None
        if value is not None:
            met = {
                ">=": value >= target,
                "<": value < target,
                "<=": value <= target,
            }[op]
        out[key] = {
            "value": None if value is None else round(value, 3),
            "target": f"{op} {target:g}",
            "met": met,
            "meaning": meaning,
        }
    return out


def _mib(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def _num(value: Any, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


_NAMES = {
    "service": "this service",
    "service2": "this service, 2 processes (one group)",
    "naive": "naive port (B6 translated)",
    "debezium": "Debezium JDBC sink (Kafka Connect)",
    "kafka_ceiling": "ceiling: aiokafka alone",
    "pg_ceiling": "ceiling: PostgreSQL bulk upsert",
}


def _us(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _cpu_table(results: dict[str, Any]) -> list[str]:
    """Where the machine's CPU went per event, per system on the backlog (``bench/cpu.py``)."""
    rows = [(name, results["systems"].get(key)) for key, name in _NAMES.items()]
    rows = [(name, s) for name, s in rows if s and s.get("cpu") and s["cpu"].get("events")]
    if not rows:
        return []
    cores = rows[0][1]["cpu"]["cores"]
    lines = [
        "",
        "## Where the machine's CPU goes, per event (same window as the throughput)",
        "",
        "CPU microseconds per event (= CPU ms per 1,000 events) of the system's own process(es), "
        "the PostgreSQL server (all its processes; in brackets only the backends of the system's "
        "own database: the server is shared), the Kafka broker (JVM) and the whole machine "
        "(`/proc/stat`); *bench* = the benchmark's own process (it polls offsets); *rest* = "
        "machine - all of those (the kernel's interrupt work, e.g. loopback networking, in the "
        "*irq* column, and other work on the shared machine). *CPU-bound* = the events/s at "
        f"which the machine's {cores} cores would all be busy at that cost per event: from the "
        "machine's total, and from the system + PostgreSQL + broker alone.",
        "",
        "| system | events/s | own | PostgreSQL (its database) | broker | bench "
        "| rest (of which irq) | machine | machine busy (cores) | CPU-bound events/s (machine) "
        "| CPU-bound events/s (own + PG + broker) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        c = s["cpu"]
        lines.append(
            f"| {name} | {_num(s['events_per_s'])} | {_us(c.get('own_us_per_event'))} | "
            f"{_us(c.get('postgres_us_per_event'))} "
            f"({_us(c.get('postgres_database_us_per_event'))}) | "
            f"{_us(c.get('broker_us_per_event'))} | "
            f"{_us(c.get('harness_us_per_event'))} | {_us(c.get('rest_us_per_event'))} "
            f"({_us(c.get('irq_us_per_event'))}) | {_us(c.get('machine_us_per_event'))} | "
            f"{_num(c.get('machine_busy_cores'), '.2f')} | "
            f"{_num(c.get('cpu_bound_events_per_s'))} | "
            f"{_num(c.get('cpu_bound_events_per_s_stack'))} |"
        )
    return lines


def _latency_cpu_table(results: dict[str, Any]) -> list[str]:
    """The machine's CPU while the latency load ran: service, stack, load generator, poller."""
    runs = [(label, lat) for label, lat in results["latency"].items() if lat.get("cpu")]
    if not runs:
        return []
    lines = [
        "",
        "CPU while producing at each rate, microseconds per event produced (the load generator "
        "and the poller run in the benchmark's process, on the same cores):",
        "",
        "| load | service | PostgreSQL (its database) | broker | load generator "
        "| poller: cores, its PostgreSQL backend | rest (of which irq) | machine "
        "| machine busy (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, lat in runs:
        c, producer, poller = lat["cpu"], lat.get("producer") or {}, lat.get("poller") or {}
        per_1000 = producer.get("cpu_s_per_1000_events")
        lines.append(
            f"| {label} of max | {_us(c.get('own_us_per_event'))} | "
            f"{_us(c.get('postgres_us_per_event'))} "
            f"({_us(c.get('postgres_database_us_per_event'))}) | "
            f"{_us(c.get('broker_us_per_event'))} | "
            f"{_us(None if per_1000 is None else per_1000 * 1000)} | "
            f"{_num(poller.get('cores'), '.3f')}, {_us(c.get('poller_postgres_us_per_event'))} | "
            f"{_us(c.get('rest_us_per_event'))} "
            f"({_us(c.get('irq_us_per_event'))}) | {_us(c.get('machine_us_per_event'))} | "
            f"{_num(c.get('machine_busy_cores'), '.2f')} |"
        )
    return lines


def render_markdown(results: dict[str, Any], results_path: str) -> str:
    """The generated part of ``bench/RESULTS.md`` for one run."""
    m = results["machine"]
    w = results.get("workload", {})
    lines = [
        BEGIN,
        "<!-- Generated by `python -m bench.run` (bench/report.py); edit outside the markers. -->",
        "",
        "## Headline: ratios measured in one run",
        "",
        f"Run `{results['run_id']}` at {results['started_at']}, "
        f"{w.get('events', 0):,} events, seed {w.get('seed')}: `{results['command']}` "
        f"(all figures: [`{results_path}`]({results_path.removeprefix('bench/')})).",
        "",
        "| target | measured | target | met |",
        "|---|---|---|---|",
    ]
    for key, r in results["ratios"].items():
        value = r["value"]
        if value is None:
            shown = "not measured"
        elif key.startswith("service"):
            shown = f"{value:,.2f}x"
        elif key.startswith("cost_growth"):
            shown = f"{value:+.1%}"
        else:
            shown = f"{value:,.0f}"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['meaning']} | {shown} | {r['target']} | {met} |")
    lines += [
        "",
        "## Throughput on the same backlog",
        "",
        "| system | events/s | CPU s / 1,000 events | peak RSS (MiB) | rows equal the oracle |",
        "|---|---|---|---|---|",
    ]
    for key, name in _NAMES.items():
        s = results["systems"].get(key)
        if not s:
            continue
        rows = s.get("rows")
        ok = "not checked" if rows is None else ("yes" if rows["ok"] else "**NO: does not count**")
        lines.append(
            f"| {name} | {_num(s['events_per_s'])} ({s['events']:,} events) | "
            f"{_num(s['cpu_s_per_1000_events'], '.3f')} | {_mib(s['peak_rss_bytes'])} | {ok} |"
        )
    lines += _cpu_table(results)
    if results["latency"]:
        lines += [
            "",
            "## End-to-end latency of this service (occurredAt -> row visible in PostgreSQL)",
            "",
            "| load | events/s | events measured | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for label, lat in results["latency"].items():
            lines.append(
                f"| {label} of max | {_num(lat['achieved_rate'])} | {lat['measured']:,} | "
                f"{lat['p50_ms']} | {lat['p99_ms']} | {lat['max_ms']} |"
            )
        lines += _latency_cpu_table(results)
    if results.get("scale"):
        lines += [
            "",
            "## Scale: this service on larger backlogs",
            "",
            "| backlog | events/s | CPU s / 1,000 events | peak RSS (MiB) | rows equal |",
            "|---|---|---|---|---|",
        ]
        for count, s in results["scale"].items():
            rows = s.get("rows") or {}
            lines.append(
                f"| {int(count):,} | {_num(s['events_per_s'])} | "
                f"{_num(s['cpu_s_per_1000_events'], '.3f')} | {_mib(s['peak_rss_bytes'])} | "
                f"{'yes' if rows.get('ok') else '**no**'} |"
            )
    lines += ["", "## Machine", ""]
    lines.append(
        f"{m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, PostgreSQL {m['postgresql']}, Kafka {m['kafka']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}."
    )
    if results.get("failures") or results.get("errors"):
        lines += ["", "## Failures and errors of this run", ""]
        lines += [f"- {f}" for f in results.get("failures", []) + results.get("errors", [])]
    notes = [
        f"- **{_NAMES.get(k, k)}**: {'; '.join(s['notes'])}"
        for k, s in results["systems"].items()
        if s.get("notes")
    ]
    if notes:
        lines += ["", "## Notes per system (from the run)", "", *notes]
    if (CHARTS / "throughput.png").exists():
        lines += [
            "",
            "![throughput](charts/throughput.png)",
            "",
            "![latency CDF](charts/latency_cdf.png)",
        ]
    lines.append(END)
    return "\n".join(lines)


def _merge_markdown(generated: str) -> None:
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            RESULTS_MD.write_text(head + generated + tail)
            return
        RESULTS_MD.write_text(text.rstrip() + "\n\n" + generated + "\n")
        return
    RESULTS_MD.write_text("# Benchmark results\n\n" + generated + "\n")


def draw_charts(results: dict[str, Any]) -> list[Path]:
    """Throughput bars and the latency CDF as PNGs in ``bench/charts/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    CHARTS.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    names, values, colors = [], [], []
    for key, name in _NAMES.items():
        s = results["systems"].get(key)
        if not s:
            continue
        names.append(name.replace(" (", "\n("))
        values.append(s["events_per_s"] if s.get("counts") else 0.0)
        colors.append(
            "#2b6cb0" if key.startswith("service") else "#a0aec0" if "ceiling" in key else "#dd6b20"
        )
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(names, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3)
    ax.set_xscale("log")  # the ceilings are 10-100x the consumers: a linear axis hides the rest
    ax.set_xlabel("events/s, log scale (same backlog; higher is better)")
    ax.set_xlim(left=max(1.0, min(v for v in values if v > 0) / 3) if any(values) else 1.0)
    ax.set_title(f"Throughput, {results.get('workload', {}).get('events', 0):,}-event backlog")
    ax.invert_yaxis()
    fig.tight_layout()
    path = CHARTS / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, lat in results["latency"].items():
        cdf = lat.get("cdf_s") or []
        if cdf:
            ax.plot(
                [p[0] * 1000 for p in cdf],
                [p[1] for p in cdf],
                label=f"{label} of max ({lat['achieved_rate']:,.0f} ev/s)",
            )
    ax.axvline(250, color="red", linestyle="--", linewidth=1, label="p99 target 250 ms")
    ax.set_xscale("log")
    ticks = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 60_000]
    ax.set_xticks(ticks, labels=[f"{t:,}" for t in ticks])
    ax.set_xlabel("end-to-end latency, ms, log scale (occurredAt -> row visible in PostgreSQL)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Latency CDF of this service at fixed produce rates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = CHARTS / "latency_cdf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    return made


def write_results(results: dict[str, Any], out: Path, *, report: bool) -> None:
    """Write the JSON; with ``report``, also the charts and ``bench/RESULTS.md``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not report:
        return
    draw_charts(results)
    try:
        shown = str(out.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(out)
    _merge_markdown(render_markdown(results, shown))

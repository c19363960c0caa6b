"""Medians and spreads of repeated runs, and ratios taken within each round.

A run of ``bench.run --repeat N`` measures every system N times, the systems interleaved (round
1: A, B, C; round 2: B, C, A; ...), so a slow spell of the shared machine falls on all of them.
:func:`summarise` gives each figure of a system as its median over the runs with the min-max;
:func:`paired_ratio` divides two systems' figures *within each round* and gives the median and
min-max of those ratios (a ratio of two runs taken minutes apart on the same machine varies less
than either run). A run whose rows were wrong does not count, here or anywhere.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

__all__ = ["CPU_FIGURES", "Spread", "paired_ratio", "spread", "summarise"]

#: Per-event CPU figures of :func:`bench.cpu.breakdown` summarised for every system.
CPU_FIGURES = (
    "own_us_per_event",
    "postgres_us_per_event",
    "postgres_database_us_per_event",
    "broker_us_per_event",
    "stack_us_per_event",
    "harness_us_per_event",
    "irq_us_per_event",
    "rest_us_per_event",
    "machine_us_per_event",
    "machine_busy_cores",
)

Spread = dict[str, float | int | None]


def spread(values: list[float | None], digits: int = 3) -> Spread:
    """``{"median", "min", "max", "n"}`` of the values that are not ``None``."""
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(known), digits),
        "min": round(min(known), digits),
        "max": round(max(known), digits),
        "n": len(known),
    }


def _stack_events_per_cpu_s(run: dict[str, Any]) -> float | None:
    """Events per CPU-second of the system + PostgreSQL + broker (equal machine CPU)."""
    stack_us = (run.get("cpu") or {}).get("stack_us_per_event")
    return 1e6 / stack_us if stack_us else None


def summarise(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One system's runs (``Measured.as_dict()``, ``None`` for a run that broke) in one dict.

    Only runs whose rows were right count; ``counts`` is false if any run's rows were wrong.
    """
    done = [r for r in runs if r is not None]
    if not done:
        return None
    good = [r for r in done if r.get("counts")]
    cpus = [r.get("cpu") or {} for r in good]
    rss = [r["peak_rss_bytes"] for r in good if r.get("peak_rss_bytes")]
    out: dict[str, Any] = {
        "name": done[0]["name"],
        "runs": len(done),
        "counted_runs": len(good),
        "counts": len(good) == len(done),
        "rows_ok": all((r.get("rows") or {}).get("ok", True) for r in done),
        "events": spread([r["events"] for r in good], 0)["median"],
        "events_per_s": spread([r["events_per_s"] for r in good], 1),
        "cpu_s_per_1000_events": spread([r.get("cpu_s_per_1000_events") for r in good], 4),
        "events_per_stack_cpu_s": spread([_stack_events_per_cpu_s(r) for r in good], 0),
        "peak_rss_bytes": max(rss) if rss else None,
        "cpu": {k: spread([c.get(k) for c in cpus], 2) for k in CPU_FIGURES},
        "notes": done[0].get("notes", []),
    }
    if any("limit_events_per_s" in r for r in good):
        out["limit_events_per_s"] = spread([r.get("limit_events_per_s") for r in good], 0)
        parts = [r.get("us_per_event") or {} for r in good]
        out["us_per_event"] = {
            k: spread([p.get(k) for p in parts], 2)
            for k in ("read_us_per_event", "broker_us_per_event", "postgres_us_per_event", "total")
        }
    if any(r.get("mean_batch") for r in good):
        out["mean_batch"] = spread([r.get("mean_batch") for r in good], 0)
    return out


def paired_ratio(
    numerators: list[dict[str, Any] | None],
    denominators: list[dict[str, Any] | None],
    figure: Callable[[dict[str, Any]], float | None],
) -> dict[str, Any]:
    """``figure(a) / figure(b)`` for each round where both ran and counted; their spread."""
    ratios: list[float | None] = []
    for a, b in zip(numerators, denominators, strict=False):
        if a is None or b is None or not a.get("counts") or not b.get("counts"):
            continue
        x, y = figure(a), figure(b)
        ratios.append(x / y if x and y else None)
    return spread(ratios, 3) | {"rounds": [None if r is None else round(r, 3) for r in ratios]}


def events_per_s(run: dict[str, Any]) -> float | None:
    """A run's events/s (L's is its limit)."""
    value = run.get("limit_events_per_s", run.get("events_per_s"))
    return None if value is None else float(value)


def events_per_stack_cpu_s(run: dict[str, Any]) -> float | None:
    """A run's events per CPU-second of system + PostgreSQL + broker."""
    return _stack_events_per_cpu_s(run)

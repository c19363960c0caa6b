"""Decoding cost per record: the consumer's decoder against the parse floor and the reference.

``python -m bench.decode_bench [--records N] [--repeat R] [--workload NAME ...] [--json]``
``python -m bench.decode_bench --against DIR [--rounds N]``: A/B of the consumer's decoder of
this tree against the one of ``DIR`` (another checkout, e.g. ``git worktree add DIR main``) on
the same valid records, each tree in its own process, the processes interleaved ``--rounds``
times; medians over the rounds.

For each workload of :mod:`bench.workload` (``benchmark`` and ``realistic``) and each event type,
its distinct valid records, and as many invalid ones (a fifth each: truncated JSON, a bad
``eventId``, a bad payload field, a broken cross-field rule, an unknown type; timed for the
consumer's decoder and the reference only). Decoders:

* ``consumer``: :func:`consumer.pipeline.decode.decode_event`, what the consumer runs;
* ``msgspec untyped``: ``msgspec.json.decode(value)``, a parse into dicts and lists with no
  validation: the floor the issue measures the consumer's decoder against;
* ``json.loads``: the standard library's parse (floats, no validation);
* ``reference``: :func:`schemas.decode_event` (stdlib parse, exact decimals, pydantic models).

Before timing, the consumer's result is checked equal to the reference's on every record
(:func:`tests.checks.result_differences`): a fast wrong decoder would not count. Each set is
decoded ``repeat`` times by every decoder in turn (interleaved, so a slow moment of a shared
machine hits them alike); a figure is the median over the repeats of the process CPU time
(``time.process_time``) per record. Speed is reported here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from bench.workload import WORKLOADS, Workload, generate, tenant_ids
from consumer.pipeline.decode import decode_event as consumer_decode_event
from schemas import EventType, Rejection, decode_event, dumps, loads
from tests.checks import result_differences

Decoder = Callable[[bytes], object]

DECODERS: dict[str, Decoder] = {
    "consumer": consumer_decode_event,
    "msgspec untyped": msgspec.json.decode,
    "json.loads": json.loads,
    "reference": decode_event,
}
REJECTING: dict[str, Decoder] = {"consumer": consumer_decode_event, "reference": decode_event}


def workload_records(
    workload: Workload, per_type: int, seed: int = 16
) -> dict[EventType, list[bytes]]:
    """Up to ``per_type`` distinct valid records of each event type of ``workload``."""
    out: dict[EventType, list[bytes]] = {t: [] for t in EventType}
    seen: set[bytes] = set()
    for event in generate(per_type * 12, seed=seed, tenants=tenant_ids(1_000), workload=workload):
        records = out[event.type]
        if len(records) < per_type and event.value not in seen:
            seen.add(event.value)
            records.append(event.value)
        if all(len(r) >= per_type for r in out.values()):
            break
    return out


def _break(event_type: EventType, doc: dict[str, Any], n: int) -> bytes:
    """One invalid variant of a valid document, cycling through the usual faults."""
    payload = doc["payload"]
    kind = n % 5
    if kind == 0:  # invalid_json: truncated
        value = dumps(doc)
        return value[: len(value) // 2]
    if kind == 1:  # schema_violation at the envelope
        doc["eventId"] = "not-a-uuid"
    elif kind == 2:  # schema_violation deep in the payload
        if event_type is EventType.SNAPSHOT:
            payload["primary"]["model"] = ""
        elif event_type is EventType.COST:
            payload["outputTokens"] = "300"
        else:
            payload["deniedProviders"] = ["x", "x"]
    elif kind == 3:  # rule_violation
        if event_type is EventType.SNAPSHOT:
            payload["candidateCount"] = 0 if not payload["fallbacks"] else 1
            payload["fallbacks"].append(payload["primary"])
        elif event_type is EventType.COST:
            payload["totalCostUsd"] = Decimal("1000")
        else:
            payload["deniedProviders"] = ["x"]
            payload["preferredProvider"] = "x"
    else:  # unsupported_event_type
        doc["type"] = "routing.unknown"
    return dumps(doc)


def invalid_records(event_type: EventType, valid: list[bytes]) -> list[bytes]:
    """One invalid record per valid one: a fifth each of the faults in :func:`_break`."""
    out = [_break(event_type, copy.deepcopy(loads(v)), n) for n, v in enumerate(valid)]
    assert all(isinstance(decode_event(v), Rejection) for v in out)
    return out


def _seconds(func: Decoder, records: list[bytes]) -> float:
    gc.collect()
    start = time.process_time()
    for record in records:
        func(record)
    return time.process_time() - start


def measure(
    records: int, repeat: int, workloads: tuple[Workload, ...] = WORKLOADS
) -> dict[str, Any]:
    """Median µs per record of each decoder on each (workload, type, set); see the docstring."""
    results: dict[str, Any] = {
        "records": records,
        "repeat": repeat,
        "python": platform.python_version(),
        "msgspec": msgspec.__version__,
        "machine": platform.machine(),
        "rows": [],
    }
    for workload in workloads:
        for event_type, valid in workload_records(workload, records).items():
            for kind, values in (("valid", valid), ("invalid", invalid_records(event_type, valid))):
                for value in values:
                    differences = result_differences(
                        consumer_decode_event(value), decode_event(value), value
                    )
                    assert not differences, (differences, value[:200])
                # The parsers raise on invalid records: they time the valid sets only.
                decoders = DECODERS if kind == "valid" else REJECTING
                samples: dict[str, list[float]] = {name: [] for name in decoders}
                for _ in range(repeat):
                    for name, func in decoders.items():
                        samples[name].append(_seconds(func, values) / len(values) * 1e6)
                floor = statistics.median(samples.get("msgspec untyped", [float("nan")]))
                for name, times in samples.items():
                    us = statistics.median(times)
                    results["rows"].append(
                        {
                            "workload": workload,
                            "type": event_type.value,
                            "set": kind,
                            "decoder": name,
                            "us_per_record": round(us, 3),
                            "spread_us": [round(min(times), 3), round(max(times), 3)],
                            "vs_msgspec_untyped": round(us / floor, 2),
                            "mean_bytes": round(sum(map(len, values)) / len(values)),
                        }
                    )
    return results


# Run by each tree of an A/B: its own consumer decoder and msgspec on the pickled records.
_TIMER = """
import gc, json, pickle, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import msgspec
from consumer.pipeline.decode import decode_event
records, repeat = pickle.load(open(sys.argv[2], "rb")), int(sys.argv[3])
out = {}
for key, values in records.items():
    times = {"consumer": [], "msgspec": []}
    for _ in range(repeat):
        for name, func in (("consumer", decode_event), ("msgspec", msgspec.json.decode)):
            gc.collect()
            start = time.process_time()
            for value in values:
                func(value)
            times[name].append((time.process_time() - start) / len(values) * 1e6)
    out[key] = {name: statistics.median(t) for name, t in times.items()}
print(json.dumps(out))
"""


def compare(against: Path, records: int, repeat: int, rounds: int) -> dict[str, Any]:
    """Median µs per valid record of this tree's and ``against``'s consumer decoder."""
    sets = {
        f"{workload} {event_type.value}": values
        for workload in WORKLOADS
        for event_type, values in workload_records(workload, records).items()
    }
    trees = {"this": Path(__file__).resolve().parent.parent, "against": against.resolve()}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    with tempfile.NamedTemporaryFile(suffix=".pickle") as file:
        pickle.dump(sets, file)
        file.flush()
        for _ in range(rounds):
            for name, tree in trees.items():
                command = [sys.executable, "-c", _TIMER, str(tree), file.name, str(repeat)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(done.stdout))
    out: dict[str, Any] = {}
    for key in sets:
        row = {}
        for name, results in runs.items():
            row[name] = statistics.median(r[key]["consumer"] for r in results)
            row[f"{name} / msgspec"] = statistics.median(
                r[key]["consumer"] / r[key]["msgspec"] for r in results
            )
        row["this / against"] = row["this"] / row["against"]
        out[key] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5_000, help="records per type and set")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per decoder and set")
    parser.add_argument("--workload", choices=WORKLOADS, action="append", help="default: both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--against", type=Path, help="A/B with the decoder of this checkout")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of an A/B")
    args = parser.parse_args()
    if args.against is not None:
        table = compare(args.against, args.records, args.repeat, args.rounds)
        print(f"A/B against {args.against}: µs per valid record, medians of {args.rounds} rounds")
        print("| set | this | ÷ msgspec | against | ÷ msgspec | this / against |")
        print("|---|---|---|---|---|---|")
        for key, row in table.items():
            print(
                f"| {key} | {row['this']:.2f} | {row['this / msgspec']:.2f} | "
                f"{row['against']:.2f} | {row['against / msgspec']:.2f} | "
                f"{row['this / against']:.2f} |"
            )
        return
    workloads = tuple(args.workload or WORKLOADS)
    results = measure(args.records, args.repeat, workloads)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.records} records per set, median of {args.repeat} interleaved runs, process CPU "
        f"time; Python {results['python']}, msgspec {results['msgspec']}"
    )
    print("| workload | type | records | decoder | µs per record | spread | ÷ msgspec | bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        low, high = row["spread_us"]
        print(
            f"| {row['workload']} | {row['type']} | {row['set']} | {row['decoder']} | "
            f"{row['us_per_record']:.2f} | {low:.2f}-{high:.2f} | "
            f"{row['vs_msgspec_untyped']:.2f} | {row['mean_bytes']} |".replace("| nan |", "| |")
        )


if __name__ == "__main__":
    main()

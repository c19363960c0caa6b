"""Decoding speed: records/s of :func:`schemas.decode_event` and of the consumer's decoder.

``python -m bench.decode_bench [--records N] [--repeat R] [--json]``

Per event type, valid and invalid records. One process, one core, no I/O: the records are built
in memory first (typical sizes: the sample payloads of the tests plus a few unknown fields), then
each set is decoded ``repeat`` times and the best run counts. Rates are per CPU second of this
process (``time.process_time``), so other processes on a shared machine disturb them less than
wall-clock rates; the ratio column compares each decoder with ``decode_event`` on the same set
in the same run, the figure to quote on a shared machine. Decoders:

* ``decode_event``: the reference (schemas/);
* ``consumer.pipeline.decode``: what the consumer runs, msgspec in C with the reference as its
  fallback (its results on every benchmarked record are checked equal to the reference's first);

* ``json.loads`` only (floats, no validation): a floor no validating decoder goes under;
* ``jsoncodec.loads`` only (exact Decimals, no validation);
* the pydantic ``Envelope`` model (parse with jsoncodec, then ``Envelope.model_validate``): the
  slow reference the fast path is checked against in the tests.

Never asserted anywhere: speed is reported, not tested.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from consumer.pipeline.decode import decode_event as fast_decode_event
from schemas import Envelope, EventType, Rejection, build_event, decode_event, dumps, loads
from tests.checks import result_differences


def _snapshot(n: int, tenant: str) -> dict[str, Any]:
    return {
        "snapshotId": f"snap-{n}",
        "strategy": "cost",
        "resolvedAlias": "fast-chat",
        "candidateCount": 3,
        "timestamp": "2026-01-31T12:00:00.250Z",
        "costEstimate": {"totalCostUsd": Decimal("0.0012"), "currency": "USD"},
        "tenantId": tenant,
        "primary": {"provider": "openai", "model": "gpt-4o"},
        "fallbacks": [
            {"provider": "anthropic", "model": "claude-sonnet"},
            {"provider": "mistral", "model": "mistral-large"},
        ],
        "latencyBudgetMs": 1500,
    }


def _cost(n: int) -> dict[str, Any]:
    return {
        "inputTokens": 1200 + n % 97,
        "outputTokens": 300,
        "inputCostUsd": Decimal("0.0030"),
        "outputCostUsd": Decimal("0.0045"),
        "totalCostUsd": Decimal("0.0075"),
        "provider": "openai",
        "cachedTokens": 17,
    }


def _policy(tenant: str) -> dict[str, Any]:
    return {
        "tenantId": tenant,
        "allowedProviders": ["openai", "anthropic", "mistral"],
        "deniedProviders": ["experimental"],
        "preferredProvider": "openai",
        "maxCostPerRequestUsd": Decimal("0.50"),
        "defaultStrategy": "cost",
    }


def valid_records(event_type: EventType, count: int) -> list[bytes]:
    """``count`` distinct valid records of ``event_type`` (as build_event writes them)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for n in range(count):
        tenant = f"tenant-{n % 50}"
        when = base + timedelta(milliseconds=n)
        if event_type is EventType.SNAPSHOT:
            event = build_event(
                event_type,
                _snapshot(n, tenant),
                tenant_id=tenant,
                request_id=f"req-{n}",
                occurred_at=when,
            )
        elif event_type is EventType.COST:
            event = build_event(
                event_type, _cost(n), tenant_id=tenant, request_id=f"req-{n}", occurred_at=when
            )
        else:
            event = build_event(event_type, _policy(tenant), tenant_id=tenant, occurred_at=when)
        out.append(event.value)
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
            payload["fallbacks"][1]["model"] = ""
        elif event_type is EventType.COST:
            payload["outputTokens"] = "300"
        else:
            payload["deniedProviders"] = ["x", "x"]
    elif kind == 3:  # rule_violation
        if event_type is EventType.SNAPSHOT:
            payload["candidateCount"] = 1
        elif event_type is EventType.COST:
            payload["totalCostUsd"] = Decimal("1")
        else:
            payload["preferredProvider"] = "experimental"
    else:  # unsupported_event_type
        doc["type"] = "routing.unknown"
    return dumps(doc)


def invalid_records(event_type: EventType, count: int) -> list[bytes]:
    """``count`` invalid records of ``event_type``: a fifth each of the faults in :func:`_break`."""
    valid = valid_records(event_type, count)
    out = [_break(event_type, copy.deepcopy(loads(v)), n) for n, v in enumerate(valid)]
    assert all(isinstance(decode_event(v), Rejection) for v in out)
    return out


def _rate(func: Callable[[bytes], object], records: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        for record in records:
            func(record)
        best = min(best, time.process_time() - start)
    return len(records) / best


def _envelope_model(value: bytes) -> object:
    try:
        return Envelope.model_validate(loads(value))
    except ValueError as exc:
        return exc


def measure(records: int, repeat: int) -> dict[str, Any]:
    """records/s per (type, set, decoder); see the module docstring."""
    results: dict[str, Any] = {
        "records": records,
        "repeat": repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": [],
    }
    for event_type in EventType:
        valid = valid_records(event_type, records)
        invalid = invalid_records(event_type, records)
        size = sum(map(len, valid)) / len(valid)
        for value in (*valid, *invalid):  # a fast wrong decoder would not count
            differences = result_differences(fast_decode_event(value), decode_event(value))
            assert not differences, (differences, value[:200])
        rows = [
            ("valid", "decode_event", _rate(decode_event, valid, repeat)),
            ("valid", "consumer.pipeline.decode", _rate(fast_decode_event, valid, repeat)),
            ("invalid", "decode_event", _rate(decode_event, invalid, repeat)),
            ("invalid", "consumer.pipeline.decode", _rate(fast_decode_event, invalid, repeat)),
            ("valid", "json.loads only", _rate(json.loads, valid, repeat)),
            ("valid", "jsoncodec.loads only", _rate(loads, valid, repeat)),
            ("valid", "Envelope model", _rate(_envelope_model, valid, repeat)),
        ]
        reference = {kind: rate for kind, decoder, rate in rows if decoder == "decode_event"}
        for kind, decoder, rate in rows:
            results["rows"].append(
                {
                    "type": event_type.value,
                    "set": kind,
                    "decoder": decoder,
                    "records_per_s": round(rate),
                    "us_per_record": round(1e6 / rate, 2),
                    "vs_decode_event": round(rate / reference[kind], 2),
                    "mean_bytes": round(size),
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per set")
    parser.add_argument("--repeat", type=int, default=5, help="runs per set; the best counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    results = measure(args.records, args.repeat)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.records} records per set, best of {args.repeat}, Python {results['python']}")
    print(
        "| type | records | decoder | records per CPU second | µs per record "
        "| ratio to decode_event | mean bytes |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        print(
            f"| {row['type']} | {row['set']} | {row['decoder']} | "
            f"{row['records_per_s']:,} | {row['us_per_record']} | "
            f"{row['vs_decode_event']} | {row['mean_bytes']} |"
        )


if __name__ == "__main__":
    main()

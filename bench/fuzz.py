"""Fuzz the decode path: hostile record values against :func:`schemas.decode_event`.

    python -m bench.fuzz --inputs 1000000 [--seed 1] [--json out.json] [--no-differential]

Each input is one of: random bytes; byte-level mutations (flips, inserts, deletes, truncation,
splices) of valid envelopes built by :func:`schemas.build_event`; structure-aware mutations of those
envelopes (a field dropped, retyped, set to a hostile value, a rule broken on purpose, unknown
fields added) re-encoded as JSON; and fixed hostile shapes (deep nesting, huge numbers, huge
strings, invalid UTF-8, lone surrogates, NaN, over-size records).

For every input it checks:

* **no crash**: ``decode_event`` returns (it must never raise: an exception is a bug, and it
  propagates so that the consumer stops loudly rather than dead-letter everything);
* **no contract breach**: every accepted event satisfies every rule of ``docs/contract.md`` §1, as
  re-checked by :func:`tests.checks.contract_problems`, an independent checker written from the
  contract (it shares no code with ``schemas``), and the decoded fields are the document's; every
  rejection has a known reason code and a bounded message;
* **bounded memory**: the process's peak RSS is reported (the test suite also bounds the memory
  of single hostile inputs with ``tracemalloc``);
* **the consumer's decoder is the reference** (unless ``--no-differential``):
  :func:`consumer.pipeline.decode.decode_event`, the fast path the consumer runs, returns for every
  input exactly what ``decode_event`` returns (:func:`tests.checks.result_differences`: same
  reason and message, or the same event field by field, payload values type for type and
  Decimals digit for digit). A difference counts as a ``mismatch``.

The generators (:mod:`tests.generators`), the checks (:mod:`tests.checks`) and the loop
(:mod:`tests.fuzzing`) live with the tests, which run a short version of the same run.

Exit status 1 when a crash, a breach or a mismatch was seen; the first few are printed (as
``repr`` of the input, truncated) so they can be replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from tests.fuzzing import FuzzReport, run_fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=argparse.FileType("w"), help="write the report as JSON")
    parser.add_argument(
        "--no-differential",
        dest="differential",
        action="store_false",
        help="skip checking consumer.pipeline.decode against schemas.decode_event on every input",
    )
    args = parser.parse_args(argv)

    def show(r: FuzzReport) -> None:
        print(
            f"  {r.inputs:>9,} inputs  {r.inputs_per_s:>8,.0f}/s  crashes={r.crashes} "
            f"breaches={r.breaches} mismatches={r.mismatches}",
            file=sys.stderr,
        )

    report = run_fuzz(args.inputs, args.seed, progress=show, differential=args.differential)
    summary = {**asdict(report), "inputs_per_s": round(report.inputs_per_s, 1), "seed": args.seed}
    print(
        f"fuzz: {report.inputs:,} inputs in {report.seconds:.1f} s "
        f"({report.inputs_per_s:,.0f}/s), accepted {report.accepted:,}, "
        f"crashes {report.crashes}, contract breaches {report.breaches}, "
        f"peak RSS {report.peak_rss_mb} MiB"
    )
    if args.differential:
        print(
            f"fast decoder vs reference: {report.mismatches} mismatches; "
            f"{report.fast_accepted:,} inputs accepted by its fast path "
            f"({report.payload_texts:,} with the payload's text alone)"
        )
    print("rejections by reason: " + ", ".join(f"{k}={v:,}" for k, v in report.reasons.items()))
    for example in report.examples:
        print("  " + example)
    if args.json:
        json.dump(summary, args.json, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

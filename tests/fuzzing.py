"""The fuzz run: decode generated inputs with the reference and the consumer's decoder, check each.

For every input: **no crash** (``decode_event`` returns, it never raises: an exception is a bug),
**no contract breach** (every accepted event passes :func:`tests.checks.contract_problems`, every
rejection has a known code and a bounded message), and, in differential runs, **the consumer's
decoder is the reference** (:func:`tests.checks.result_differences` is empty). ``python -m
bench.fuzz`` is the command-line run; ``tests/test_fuzz.py`` runs a short one.
"""

from __future__ import annotations

import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from consumer.pipeline.decode import decode_event as fast_decode_event
from consumer.pipeline.decode import fast_path
from schemas import DecodedEvent, Rejection, decode_event
from tests.checks import MAX_BYTES, contract_problems, rejection_problems, result_differences
from tests.generators import hostile_inputs, mutated_inputs, valid_envelopes

__all__ = ["FuzzReport", "check_one", "run_fuzz"]


@dataclass
class FuzzReport:
    """What a fuzz run found; ``ok`` when no crash and no breach."""

    inputs: int = 0
    seconds: float = 0.0
    accepted: int = 0
    crashes: int = 0
    breaches: int = 0
    #: Inputs where the consumer's fast decoder and the reference disagreed (differential runs).
    mismatches: int = 0
    #: Inputs the fast decoder decided without the reference (valid ones), in differential runs.
    fast_accepted: int = 0
    #: Of those, the events whose payload text alone goes to PostgreSQL (not the whole record).
    payload_texts: int = 0
    peak_rss_mb: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.breaches == 0 and self.mismatches == 0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check_one(
    value: bytes, report: FuzzReport, reasons: Counter[str], *, differential: bool = False
) -> None:
    """Decode ``value`` and record a crash or breach in ``report`` (and, if ``differential``,
    a mismatch of the consumer's fast decoder with the reference)."""
    try:
        result = decode_event(value, max_bytes=MAX_BYTES)
        quick = fast_path(value, MAX_BYTES) if differential else None
        if quick is not None:
            report.fast_accepted += 1
            report.payload_texts += quick.payload_json is not None
        fast = quick or (fast_decode_event(value, max_bytes=MAX_BYTES) if differential else result)
    except BaseException as exc:  # the contract: decode_event never raises
        report.crashes += 1
        if len(report.examples) < 10:
            report.examples.append(f"raised {type(exc).__name__}: {value[:200]!r}")
        return
    if differential:
        differences = result_differences(fast, result, value)
        if differences:
            report.mismatches += 1
            if len(report.examples) < 10:
                report.examples.append(f"fast decoder differs {differences[:3]}: {value[:200]!r}")
    if isinstance(result, DecodedEvent):
        report.accepted += 1
        problems = contract_problems(value, result)
    elif isinstance(result, Rejection):
        reasons[str(result.reason)] += 1
        problems = rejection_problems(result)
    else:
        problems = [f"returned {type(result).__name__}"]
    if problems:
        report.breaches += 1
        if len(report.examples) < 10:
            report.examples.append(f"{problems}: {value[:200]!r}")


def run_fuzz(
    inputs: int,
    seed: int = 1,
    *,
    progress: Callable[[FuzzReport], None] | None = None,
    source: Iterator[bytes] | None = None,
    differential: bool = True,
) -> FuzzReport:
    """Decode ``inputs`` generated inputs (hostile shapes first) and check each one; with
    ``differential``, also check the consumer's fast decoder against the reference on each."""
    rng = random.Random(seed)
    corpus = valid_envelopes(rng, 300)
    generated = source or mutated_inputs(rng, corpus)
    report = FuzzReport()
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    stream = (*hostile_inputs(), *corpus) if source is None else ()
    for value in stream:
        if report.inputs >= inputs:
            break
        check_one(value, report, reasons, differential=differential)
        report.inputs += 1
    while report.inputs < inputs:
        check_one(next(generated), report, reasons, differential=differential)
        report.inputs += 1
        if progress and report.inputs % 100_000 == 0:
            report.seconds = time.perf_counter() - started
            progress(report)
    report.seconds = time.perf_counter() - started
    report.reasons = dict(reasons.most_common())
    report.peak_rss_mb = round(_peak_rss_mb(), 1)
    return report

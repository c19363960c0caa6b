"""Process-wide runtime tuning for the long-running commands (``run``, ``replay``).

:func:`tune_garbage_collector` freezes what start-up allocated and makes the cyclic garbage
collector's young-generation passes rarer: a consumer allocates many short-lived, acyclic objects
per record that reference counting frees at once. What it saved is in ``bench/RESULTS.md``.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GC_YOUNG_THRESHOLD", "tune_garbage_collector"]

#: Allocations (minus deallocations) of container objects between two young-generation passes.
#: A batch of 2,000 records makes tens of thousands of them, nearly all freed by reference
#: counting; a pass every 20,000 keeps the rare cyclic garbage (exception tracebacks, asyncio
#: futures) bounded to a few MiB while the collector runs ~30x less often.
GC_YOUNG_THRESHOLD: Final = 20_000


def tune_garbage_collector() -> None:
    """Freeze what startup allocated and make young-generation passes rarer.

    Call once, after the imports and before the hot loop. ``gc.freeze()`` moves every object alive
    now into a permanent generation that no collection walks (they live as long as the process);
    the thresholds then apply to what the loop allocates. Idempotent; collection stays enabled,
    so reference cycles are still reclaimed.
    """
    gc.collect()
    gc.freeze()
    # Middle and old generations keep CPython's ratios (10, 10) scaled to the larger young
    # generation; full passes are further limited by CPython's own 25 %-growth rule.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)

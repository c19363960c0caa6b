"""The garbage-collector tuning applied by ``run`` and ``replay``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.runtime import GC_YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_startup_objects_and_keeps_collection_enabled() -> None:
    gc.unfreeze()
    tune_garbage_collector()
    assert gc.get_freeze_count() > 1000  # the imported modules' objects, at least
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    assert gc.isenabled()

    class Node:
        other: object = None

    # A reference cycle made after tuning is still reclaimed.
    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2


def test_run_and_replay_apply_it() -> None:
    # Both long-running commands call it before their loop (the benchmark measures the effect).
    import inspect

    from consumer import cli

    for command in (cli.run, cli.replay):
        assert "tune_garbage_collector()" in inspect.getsource(command)

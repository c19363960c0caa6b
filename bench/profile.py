"""Sampling profiles of the service under load (``python -m bench.run --profile``), with py-spy.

py-spy is not a dependency of the project (``pip install py-spy`` to use this); without it
``--profile`` is skipped with a note. It samples the running ``routing-persistence run``
subprocess from outside (``--nonblocking``: the service is never paused), 97 times a second, and
writes collapsed stacks; :func:`top_frames` turns them into the table of what dominates.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "top_frames"]


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy recording one process until :meth:`stop` (or its exit)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self._proc: subprocess.Popen[bytes] | None = None
        exe = _py_spy()
        if exe is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                exe,
                "record",
                "-p",
                str(pid),
                "-r",
                "97",
                "-f",
                "raw",
                "-o",
                str(out),
                "--nonblocking",
                "-d",
                "3600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def available(self) -> bool:
        """Whether py-spy was found and started."""
        return self._proc is not None

    def stop(self) -> None:
        """Stop sampling and let py-spy write its file."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _short(frame: str) -> str:
    # "apply_events (consumer/pipeline/apply.py:77)" with the site-packages/venv prefix cut off.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.replace(str(Path(__file__).resolve().parent.parent) + "/", "")
    return f"{name} ({where})"


def top_frames(raw: Path, count: int = 15) -> dict[str, list[list[object]]]:
    """The frames with the most samples: ``self`` (on top of the stack) and ``total`` (anywhere).

    Each entry is ``[frame, percent of samples]``; idle samples are included in the total, so
    the percentages say where the process's wall time went while it was sampled.
    """
    if not raw.exists():
        return {"self": [], "total": []}
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        weight = int(n)
        samples += weight
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    if samples == 0:
        return {"self": [], "total": []}
    return {
        "samples": [[samples, 100.0]],
        "self": [[f, round(100 * c / samples, 1)] for f, c in own.most_common(count)],
        "total": [[f, round(100 * c / samples, 1)] for f, c in total.most_common(count * 2)],
    }

"""What operator commands print: tables and progress, rich on a terminal, plain text otherwise.

Plain output (pipes, logs, ``watch``, tests) is stable: columns aligned with spaces, numbers
right-aligned, one header line, and progress as one line every few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = [
    "PLAIN_PROGRESS_EVERY_S",
    "ProgressReport",
    "print_table",
    "render_plain_table",
    "rich_table",
    "stderr_console",
]

#: Without a terminal, one progress line per this many seconds.
PLAIN_PROGRESS_EVERY_S: Final = 5.0


def stderr_console() -> Console:
    """Where a command's errors go: stderr, no markup or highlighting of the message."""
    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def render_plain_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned with spaces, numbers right-aligned (for pipes, logs and ``watch``)."""
    materialised = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in materialised) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            numeric = cell.replace(".", "", 1).lstrip("-").isdigit()
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join(line(r) for r in materialised)


def rich_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    numeric: Collection[str] = (),
    styles: Sequence[str | None] | None = None,
) -> Table:
    """A rich table: ``numeric`` columns right-aligned, ``styles[i]`` applied to row ``i``."""
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name, justify="right" if name in numeric else "left")
    for i, row in enumerate(rows):
        table.add_row(*row, style=styles[i] if styles else None)
    return table


def print_table(
    console: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    numeric: Collection[str] = (),
    styles: Sequence[str | None] | None = None,
) -> None:
    """A rich table on a terminal, else ``title`` and :func:`render_plain_table` on stdout."""
    if console.is_terminal:
        console.print(rich_table(header, rows, title=title, numeric=numeric, styles=styles))
        return
    head = f"{title}\n" if title else ""
    sys.stdout.write(head + render_plain_table(header, rows) + "\n")
    sys.stdout.flush()


class _RateColumn(ProgressColumn):
    """Records per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rec/s" if speed is None else f"{speed:,.0f} rec/s", style="cyan")


class ProgressReport:
    """Progress of ``total`` records: a rich bar on a terminal, else a plain line every
    ``PLAIN_PROGRESS_EVERY_S`` (``"<label>: done/total records (x%), rate, elapsed, eta"``).

    Use as a context manager; :meth:`advance` after each batch.
    """

    def __init__(self, console: Console, total: int, *, label: str) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._task: Any = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self) -> ProgressReport:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self._total)
        else:
            self._line()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        else:
            self._line()

    def advance(self, records: int) -> None:
        """Count ``records`` more as done."""
        self._done += records
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)
        elif time.monotonic() - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._line()

    def complete(self) -> None:
        """Everything is done: the offsets left over were transaction markers or aborted records."""
        self.advance(self._total - self._done)

    def _line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        share = 100.0 * self._done / self._total if self._total else 100.0
        eta = f"{(self._total - self._done) / rate:.0f}s" if rate > 0 else "-"
        sys.stdout.write(
            f"{self._label}: {self._done}/{self._total} records ({share:.1f}%), "
            f"{rate:.0f} rec/s, elapsed {elapsed:.0f}s, eta {eta}\n"
        )
        sys.stdout.flush()

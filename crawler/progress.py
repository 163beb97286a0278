"""A live status line on a TTY, in place of scrolling per-item logs.

The line is redrawn twice a second and cleared whenever a log line
(warnings and errors still print) has to go above it.  Never used in JSON
mode or when stderr is not a terminal.  It shows the items by outcome, the
repositories done out of the total once the total is known (at once with
``--repository``, when the catalog is fully listed otherwise) with an ETA,
the item rate, and when Akua paused the pool (``Retry-After``) for how much
longer.  At the end it prints a short summary table.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TextIO

import anyio

from crawler.outcomes import Outcome
from crawler.report import ItemReport, Reporter, RunSummary

REFRESH_S = 0.5
_CLEAR = "\r\x1b[2K"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def summary_table(summary: RunSummary, exit_status: int | None = None) -> str:
    """The end-of-run table: outcomes with a count, problems new/known, duration."""
    rows = [(key, n) for key, n in summary.outcome_counts().items() if n]
    rows.append(("problems new", summary.new_problems))
    rows.append(("problems known", summary.known_problems))
    width = max(len(key) for key, _ in rows)
    lines = [f"  {key:<{width}}  {n:>7}" for key, n in rows]
    tail = f"  {'duration':<{width}}  {clock(summary.duration_s):>7}"
    if exit_status is not None:
        tail += f"   exit {exit_status}"
    return "\n".join([f"{summary.mode} summary", *lines, tail]) + "\n"


class ProgressLine:
    """A text stream for the log renderer that keeps the status line at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._counts: Counter[str] = Counter()
        self._started = time.monotonic()
        self._shown = False
        self._reporter: Reporter | None = None

    def attach(self, reporter: Reporter) -> None:
        self._reporter = reporter

    # the log renderer writes here
    def write(self, text: str) -> int:
        if self._shown:
            self._stream.write(_CLEAR)
            self._shown = False
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def observe(self, report: ItemReport) -> None:
        self._counts[report.outcome.value] += 1

    def render(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else time.monotonic()) - self._started, 1e-9)
        items = sum(self._counts.values())
        counts = " ".join(f"{o.value} {self._counts[o.value]}" for o in Outcome if self._counts[o.value])
        parts = [counts or "no items yet"]
        reporter = self._reporter
        if reporter is not None:
            done, total = reporter.repositories_done, reporter.repositories_total
            if total:
                eta = ""
                if 0 < done < total:
                    eta = f", ETA {clock(elapsed / done * (total - done))}"
                parts.append(f"repositories {done}/{total}{eta}")
            else:
                parts.append(f"repositories {done}")
        parts.append(f"{items / elapsed:.1f} items/s")
        if reporter is not None and reporter.akua_rate is not None:
            pause = reporter.akua_rate.statistics().paused_for_s
            if pause > 0:
                parts.append(f"PAUSED by Akua for {math.ceil(pause)}s more")
        parts.append(clock(elapsed))
        return " | ".join(parts)

    def draw(self) -> None:
        self._stream.write(_CLEAR + self.render())
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False

    def print_summary(self, exit_status: int | None = None) -> None:
        self.clear()
        if self._reporter is not None:
            self._stream.write(summary_table(self._reporter.summary, exit_status))
            self._stream.flush()

    async def run(self) -> None:
        try:
            while True:
                self.draw()
                await anyio.sleep(REFRESH_S)
        finally:
            self.clear()

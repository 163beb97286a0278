"""A live status line on a TTY, in place of scrolling per-item logs.

The line is redrawn twice a second and cleared whenever a log line
(warnings and errors still print) has to go above it.  Never used in JSON
mode or when stderr is not a terminal.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

import anyio

from crawler.outcomes import Outcome
from crawler.report import ItemReport

REFRESH_S = 0.5
_CLEAR = "\r\x1b[2K"


class ProgressLine:
    """A text stream for the log renderer that keeps the status line at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._counts: Counter[str] = Counter()
        self._started = time.monotonic()
        self._shown = False

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

    def render(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done = sum(self._counts.values())
        counts = " ".join(f"{o.value} {self._counts.get(o.value, 0)}" for o in Outcome)
        minutes, seconds = divmod(int(elapsed), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{counts} | {done / elapsed:.1f} items/s | {hours:02d}:{minutes:02d}:{seconds:02d}"

    def draw(self) -> None:
        self._stream.write(_CLEAR + self.render())
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False

    async def run(self) -> None:
        try:
            while True:
                self.draw()
                await anyio.sleep(REFRESH_S)
        finally:
            self.clear()

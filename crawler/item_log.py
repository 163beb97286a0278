"""The run's problem (and ignored) items for ``--report``, in bounded memory.

``--report`` lists every problem and every ignored item of a run, in the
order they ended.  A registry where thousands of versions are broken would
otherwise keep thousands of :class:`~crawler.report.ItemReport` objects until
the end.  An :class:`ItemLog` keeps the first ``held_max`` as they are; after
that each one is written, as its ``as_json()`` row, to an anonymous temporary
file (unlinked as it is made: nothing is left behind, even after ``kill -9``)
and read back, in order, when the report is written.  The ``run.finished``
event lists at most a hundred problems; :class:`crawler.report.RunSummary`
keeps those itself.

A temporary file that cannot be written (full, missing, read-only) is logged
once as ``report.spill_failed``; later items are then held in memory and the
report is the same.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from crawler.report import ItemReport

HELD_MAX: Final = 1000  # items held as objects before the rest go to disk

log = structlog.get_logger("crawler")


class ItemLog:
    def __init__(self, *, held_max: int = HELD_MAX, spill_dir: Path | None = None) -> None:
        self._held_max = held_max
        self._spill_dir = spill_dir
        self._head: list[ItemReport] = []  # the first ones, and everything once a spill failed
        self._file: IO[bytes] | None = None
        self._spilled = 0  # complete lines on disk
        self._end = 0  # where the last complete line ends
        self._tail: list[ItemReport] = []  # after the spilled ones, when a spill failed
        self._spill = True

    def __len__(self) -> int:
        return len(self._head) + self._spilled + len(self._tail)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        return f"ItemLog(items={len(self)}, on_disk={self._spilled})"

    @property
    def on_disk(self) -> int:
        return self._spilled

    def append(self, report: ItemReport) -> None:
        if len(self._head) < self._held_max and not self._spilled:
            self._head.append(report)
        elif self._spill:
            try:
                self._write(json.dumps(report.as_json(), ensure_ascii=False).encode() + b"\n")
            except OSError as exc:
                self._spill = False
                log.warning("report.spill_failed",
                            directory=str(self._spill_dir or tempfile.gettempdir()),
                            reason=exc.strerror or str(exc),
                            note="the report's remaining items stay in memory until the end")
                self._tail.append(report)
        else:
            self._tail.append(report)

    def _write(self, line: bytes) -> None:
        # Unbuffered, so a full disk fails this item's write, never a later flush; only
        # complete lines count (``_spilled``), so a half-written one is never read.
        if self._file is None:
            self._file = tempfile.TemporaryFile(  # noqa: SIM115  (open until close())
                "w+b", buffering=0, prefix="akua-report-", dir=self._spill_dir)
        fd, done = self._file.fileno(), 0
        while done < len(line):  # at explicit offsets: a reader's position never matters
            done += os.pwrite(fd, line[done:], self._end + done)
        self._spilled += 1
        self._end += len(line)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every item's ``as_json()`` row, in the order they were appended; can be called again."""
        for report in self._head:
            yield report.as_json()
        if self._file is not None:
            with open(os.dup(self._file.fileno()), "rb") as reader:
                reader.seek(0)
                for _ in range(self._spilled):
                    yield json.loads(reader.readline())
        for report in self._tail:
            yield report.as_json()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

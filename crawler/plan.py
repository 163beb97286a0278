"""``plan``'s output: what a run would do, for people to read and diff, and for scripts.

Lines are collected while the crawl runs (in whatever order the workers
finish) and printed at the end sorted by repository, then SemVer, then tag,
followed by the totals, so two plans of an unchanged registry are
byte-identical.  Nothing in a line depends on time or on scheduling.

Memory stays bounded whatever the registry's size: each item is rendered as
soon as it is reported and only ``(sort key, line)`` is kept.  Once
``buffer_items`` are held, they are sorted and spilled as one run to an
anonymous temporary file (unlinked at once, so nothing is left behind, even
after ``kill -9``); at the end the runs and what is still held are merged
(:func:`heapq.merge`, stable, so equal keys keep the order they came in, as
one stable sort would) and written out as they come.  When ``MAX_RUNS`` runs
exist they are merged into one, so a plan never holds many files open.  A
spill that fails (no room, no temporary directory) is logged once; the lines
are then kept in memory and the output is the same.

Text: ``ACTION REPOSITORY TAG SEMVER DIGEST REASON``, the action padded for the eye.
``-o json``: one object per line with sorted keys, the totals as the last object.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final, TextIO, TypeAlias

import structlog

from crawler.report import ItemReport, RunSummary
from crawler.versions import SortKey, tag_to_semver

#: lines held in memory before they are sorted and spilled to disk (about 0.6 KB each)
BUFFER_ITEMS: Final = 1024
#: spilled runs kept apart before they are merged into one (bounds the open files)
MAX_RUNS: Final = 64
WRITE_CHUNK: Final = 64 * 1024  # characters per write to the output stream

_NO_SEMVER: Any = (1,)  # sorts after every version of the repository

_Key: TypeAlias = tuple[str, tuple[int, SortKey | Any], str, str]
# What a line is sorted by, as text: repository, semver, tag, digest ("" for none).
# (sort key, the SemVer's text or "", the rendered line): the key holds the repository,
# tag and digest, so a spilled run can make the key again.
_Entry: TypeAlias = tuple[_Key, str, str]

log = structlog.get_logger("crawler")


def action_of(report: ItemReport) -> str:
    if report.action is not None:
        return report.action.upper()
    if report.from_state:
        return "DONE" if report.outcome.is_success else report.outcome.value.upper()
    return report.outcome.value.upper()


def _planned_outcome(report: ItemReport) -> str:
    """A plan writes nothing: a version it would write is ``would_import`` or
    ``would_create_version`` (the TOTAL's words), never ``imported``."""
    if report.action is not None:
        return "would_" + report.action.replace("-", "_")
    return report.outcome.value


def _key(repository: str, semver_text: str, tag: str, digest: str) -> _Key:
    semver = tag_to_semver(semver_text) if semver_text else None
    order: tuple[int, SortKey | Any] = (0, semver.sort_key()) if semver else (1, _NO_SEMVER)
    return (repository, order, tag, digest)


def text_line(report: ItemReport) -> str:
    tag = report.tag or "-"
    if report.tags:
        tag += "," + ",".join(report.tags)
    # The package name when a name rule makes it differ from the repository path.
    where = f"{report.repository} -> {report.package}" if report.package else report.repository
    return (f"{action_of(report):<15} {where} {tag} {report.semver or '-'} {report.digest or '-'} "
            f"{report.reason}").rstrip()


def json_line(report: ItemReport) -> str:
    return json.dumps({
        "action": action_of(report), "repository": report.repository, "tag": report.tag,
        "tags": list(report.tags), "semver": report.semver, "digest": report.digest,
        "outcome": _planned_outcome(report), "reason": report.reason,
        **({"package": report.package} if report.package else {}),
    }, sort_keys=True)


class _Run:
    """One sorted run on disk: a JSON array ``[repository, semver, tag, digest, line]`` a line."""

    def __init__(self, entries: Iterable[_Entry], directory: Path | None) -> None:
        # Kept open until the plan is printed (closed by close()), so no with-block.
        self._file: IO[str] = tempfile.TemporaryFile(  # noqa: SIM115
            "w+", encoding="utf-8", newline="\n", prefix="akua-plan-", dir=directory)
        try:
            write = self._file.write
            for (repository, _order, tag, digest), semver, line in entries:
                write(json.dumps([repository, semver, tag, digest, line], ensure_ascii=False,
                                 separators=(",", ":")))
                write("\n")
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def entries(self) -> Iterator[_Entry]:
        self._file.seek(0)
        for record in self._file:
            repository, semver, tag, digest, line = json.loads(record)
            yield _key(repository, semver, tag, digest), semver, line

    def close(self) -> None:
        self._file.close()


def _first(entry: _Entry) -> _Key:
    return entry[0]


class PlanPrinter:
    def __init__(
        self, stream: TextIO, *, json_lines: bool = False, buffer_items: int = BUFFER_ITEMS,
        spill_dir: Path | None = None, max_runs: int = MAX_RUNS,
    ) -> None:
        """``spill_dir``: where sorted runs go (None: the system's temporary directory,
        ``TMPDIR``)."""
        self._stream = stream
        self._json = json_lines
        self._buffer_items = max(1, buffer_items)
        self._max_runs = max(2, max_runs)
        self._spill_dir = spill_dir
        self._spill = True  # False once a spill failed: everything stays in memory
        self._held: list[_Entry] = []
        self._runs: list[_Run] = []

    @property
    def spilled_runs(self) -> int:
        """Sorted runs on disk right now (for tests and diagnostics)."""
        return len(self._runs)

    def add(self, report: ItemReport) -> None:
        semver = report.semver or ""
        key = _key(report.repository, semver, report.tag or "", report.digest or "")
        self._held.append((key, semver, json_line(report) if self._json else text_line(report)))
        if self._spill and len(self._held) >= self._buffer_items:
            self._spill_held()

    def _spill_held(self) -> None:
        self._held.sort(key=_first)
        try:
            self._runs.append(_Run(self._held, self._spill_dir))
        except OSError as exc:
            self._spill_failed(exc)  # the lines stay held, in memory
            return
        self._held = []
        if len(self._runs) >= self._max_runs:
            try:
                merged = _Run(heapq.merge(*(r.entries() for r in self._runs), key=_first),
                              self._spill_dir)
            except OSError as exc:
                self._spill_failed(exc)  # the runs stay as they are; what comes stays held
                return
            for old in self._runs:
                old.close()
            self._runs = [merged]

    def _spill_failed(self, exc: OSError) -> None:
        self._spill = False
        log.warning("plan.spill_failed", directory=str(self._spill_dir or tempfile.gettempdir()),
                    reason=exc.strerror or str(exc),
                    note="the plan's remaining lines stay in memory until the end")

    def _ordered(self) -> Iterator[str]:
        self._held.sort(key=_first)
        for entry in heapq.merge(*(r.entries() for r in self._runs), iter(self._held), key=_first):
            yield entry[2]

    def _totals(self, summary: RunSummary) -> str:
        totals = {**summary.outcome_counts(), **summary.filter_counts()}
        if self._json:
            return json.dumps({"totals": totals}, sort_keys=True)
        return "TOTAL           " + ", ".join(f"{key} {n}" for key, n in totals.items())

    def iter_lines(self, summary: RunSummary) -> Iterator[str]:
        """Every line in plan order, the totals last; can be called again."""
        yield from self._ordered()
        yield self._totals(summary)

    def lines(self, summary: RunSummary) -> list[str]:
        return list(self.iter_lines(summary))

    def finish(self, summary: RunSummary) -> None:
        try:
            chunk: list[str] = []
            size = 0
            for line in self.iter_lines(summary):
                chunk.append(line)
                size += len(line) + 1
                if size >= WRITE_CHUNK:
                    self._stream.write("\n".join(chunk) + "\n")
                    chunk, size = [], 0
            if chunk:
                self._stream.write("\n".join(chunk) + "\n")
            self._stream.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Drops the spilled runs (their files are already unlinked)."""
        for run in self._runs:
            run.close()
        self._runs = []
        self._held = []

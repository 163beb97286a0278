"""Problem and ignored items in bounded memory: the report and run.finished stay as they were."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

from structlog.testing import capture_logs

from crawler.ignore import IgnoreRule
from crawler.item_log import ItemLog
from crawler.outcomes import Outcome
from crawler.outputs import RunResult, report_document, write_report
from crawler.report import PROBLEMS_LISTED_MAX, ItemReport, Reporter


def without_duration(report_text: str) -> str:
    """The report's text with its one clock-dependent figure blanked."""
    return re.sub(r'"duration_s": [0-9.e-]+', '"duration_s": 0', report_text)


def problem(n: int, *, known: bool = False, repository: str = "team/app") -> ItemReport:
    outcome = (Outcome.INVALID, Outcome.REJECTED, Outcome.FAILED)[n % 3]
    return ItemReport(repository=repository, tag=f"1.{n}.0", semver=f"1.{n}.0",
                      digest=f"sha256:{n:064x}", outcome=outcome,
                      reason=f"broken {n}: «schéma»" + ("\nline two" if n % 5 == 0 else ""),
                      known_since=1000.0 + n if known and outcome is not Outcome.FAILED else None)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """The kernel refuses (EFBIG) any write past ``limit`` bytes of a file: a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_items_beyond_the_held_ones_go_to_disk_and_come_back_in_order(tmp_path: Path) -> None:
    reports = [problem(n) for n in range(250)]
    log = ItemLog(held_max=7, spill_dir=tmp_path)
    for report in reports:
        log.append(report)
    assert len(log) == 250 and log.on_disk == 243
    assert os.listdir(tmp_path) == []  # an anonymous file: nothing left after a kill
    expected = [r.as_json() for r in reports]
    assert list(log.rows()) == expected
    log.append(problem(250))  # appending after reading goes on at the end
    assert list(log.rows()) == [*expected, problem(250).as_json()]
    log.close()


def test_a_temporary_directory_that_cannot_be_written_keeps_the_items_in_memory(
    tmp_path: Path,
) -> None:
    reports = [problem(n) for n in range(40)]
    log = ItemLog(held_max=5, spill_dir=tmp_path / "missing")
    with capture_logs() as logs:
        for report in reports:
            log.append(report)
    assert [e["event"] for e in logs] == ["report.spill_failed"]  # once
    assert log.on_disk == 0
    assert list(log.rows()) == [r.as_json() for r in reports]


def test_a_disk_that_fills_up_midway_loses_no_item(tmp_path: Path) -> None:
    reports = [problem(n) for n in range(60)]
    log = ItemLog(held_max=2, spill_dir=tmp_path)
    with capture_logs() as logs, file_size_limit(3000):
        for report in reports:
            log.append(report)
    assert [e["event"] for e in logs] == ["report.spill_failed"]
    assert 0 < log.on_disk < 58  # some went to disk before it was full, the rest stayed held
    assert list(log.rows()) == [r.as_json() for r in reports]


def test_run_finished_lists_the_same_problems_new_first_with_many_of_each() -> None:
    reporter = Reporter("run", ignore=(IgnoreRule(repository="team/old", reason="r"),))
    reporter.summary.problems = ItemLog(held_max=3)
    reporter.summary.ignored = ItemLog(held_max=3)
    sent = []
    for n in range(400):  # known ones first, then new ones, then ignored ones
        report = problem(n, known=n < 150, repository="team/old" if n >= 380 else "team/app")
        sent.append(reporter.item(report))
    summary = reporter.summary
    problems = [r for r in sent if r.outcome.is_problem]
    listed = sorted(problems, key=lambda p: not p.is_new_problem)[:PROBLEMS_LISTED_MAX]
    fields = summary.as_fields()
    assert fields["problems"] == [
        f"{p.name()} {p.outcome.value} ({'new' if p.is_new_problem else 'known'}): {p.reason}"
        for p in listed]
    assert fields["problems_total"] == len(problems) == 380
    assert fields["problems_not_listed"] == 380 - PROBLEMS_LISTED_MAX
    assert (summary.new_problems, summary.known_problems) == (
        sum(p.is_new_problem for p in problems), sum(not p.is_new_problem for p in problems))
    assert fields["ignored"] == 20


def test_the_report_file_lists_every_problem_and_ignored_item_as_before(tmp_path: Path) -> None:
    reporter = Reporter("run", ignore=(IgnoreRule(repository="team/old", reason="r"),))
    reporter.summary.problems = ItemLog(held_max=4, spill_dir=tmp_path)
    reporter.summary.ignored = ItemLog(held_max=4, spill_dir=tmp_path)
    sent = [reporter.item(problem(n, known=n % 2 == 0,
                                  repository="team/old" if n % 4 == 0 else "team/app"))
            for n in range(120)]
    result = RunResult(reporter.summary, exit_status=1, finished_at=2e9, last_success_at=None)
    path = tmp_path / "report.json"
    write_report(path, result)
    text = path.read_text()
    # Streamed, and the same bytes as one json.dumps of the whole document.
    assert without_duration(text) == without_duration(
        json.dumps(report_document(result), indent=2) + "\n")
    report = json.loads(text)
    assert report["problems"] == [r.as_json() for r in sent if r.outcome.is_problem]
    assert report["ignored"] == [r.as_json() for r in sent if r.outcome is Outcome.IGNORED]
    assert len(report["problems"]) == report["problems_total"] == 90


def test_an_empty_report_keeps_its_empty_lists(tmp_path: Path) -> None:
    reporter = Reporter("plan")
    result = RunResult(reporter.summary, exit_status=0, finished_at=2e9, last_success_at=None)
    path = tmp_path / "report.json"
    write_report(path, result)
    assert without_duration(path.read_text()) == without_duration(
        json.dumps(report_document(result), indent=2) + "\n")
    assert json.loads(path.read_text())["problems"] == []

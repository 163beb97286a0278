"""The plan's sorted output when its lines are spilled to disk: the same, line for line."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

from structlog.testing import capture_logs

from crawler.outcomes import Outcome
from crawler.plan import PlanPrinter
from crawler.report import ItemReport, Reporter
from crawler.versions import tag_to_semver


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def many_reports(count: int, seed: int = 7) -> list[ItemReport]:
    """Items of several repositories in a shuffled order: releases, prereleases (whose
    SemVer order is not text order), build metadata, tags that are not SemVer, a version
    with several tags, a renamed package, a problem, reasons with non-ASCII and a newline."""
    rng = random.Random(seed)
    reports = []
    for n in range(count):
        repository = f"team/app-{n % 13:02d}"
        kind = n % 7
        if kind == 0:
            tag, semver = f"1.{n % 11}.0-rc.{n % 3}", f"1.{n % 11}.0-rc.{n % 3}"
        elif kind == 1:
            tag, semver = f"latest-{n}", None
        elif kind == 2:
            tag, semver = f"v2.{n}.1", f"2.{n}.1"
        elif kind == 3:
            tag, semver = f"0.{n}.0_build.{n}", f"0.{n}.0+build.{n}"
        else:
            tag, semver = f"1.{n}.{n % 5}", f"1.{n}.{n % 5}"
        action = ("import", "create-version", None)[n % 3] if semver else None
        outcome = Outcome.IMPORTED if action else (Outcome.SKIPPED if semver is None
                                                   else Outcome.INVALID)
        reports.append(ItemReport(
            repository=repository, tag=tag, tags=(f"alias-{n}",) if n % 17 == 0 else (),
            semver=semver, digest=_digest(n) if semver else None, outcome=outcome,
            reason=f"reason {n}: schéma ✓" + ("\nsecond line" if n % 19 == 0 else ""),
            action=action, package=f"renamed-{n % 13}" if n % 23 == 0 else None,
        ))
    rng.shuffle(reports)
    return reports


def old_order(report: ItemReport) -> tuple[object, ...]:
    """The order plan lines always had: repository, then SemVer precedence, then tag."""
    semver = tag_to_semver(report.semver) if report.semver else None
    key = (0, semver.sort_key()) if semver else (1, (1,))
    return (report.repository, key, report.tag or "", report.digest or "")


def plan_of(reports: list[ItemReport], *, json_lines: bool = False, **kw: object) -> tuple[
    str, Reporter
]:
    out = io.StringIO()
    printer = PlanPrinter(out, json_lines=json_lines, **kw)  # type: ignore[arg-type]
    reporter = Reporter("plan", on_item=printer.add)
    for report in reports:
        reporter.item(report)
    printer.finish(reporter.summary)
    return out.getvalue(), reporter


def test_a_spilled_plan_is_line_for_line_the_plan_held_in_memory(tmp_path: Path) -> None:
    reports = many_reports(2_000)
    held, _ = plan_of(reports, buffer_items=1_000_000)
    # 2,000 items in runs of 37, merged into one whenever 5 runs exist.
    spilled, _ = plan_of(reports, buffer_items=37, max_runs=5, spill_dir=tmp_path)
    assert spilled == held
    lines = held.splitlines()
    assert lines[-1].startswith("TOTAL           would_import ")
    # And it is the order plans always had.
    expected = sorted(reports, key=old_order)
    firsts = [line for line in lines[:-1] if not line.startswith("second line")]
    assert [f.split()[4 if " -> " in f else 2] for f in firsts] == [
        r.tag + "".join("," + t for t in r.tags) for r in expected]


def test_a_spilled_json_plan_is_the_same_objects_in_the_same_order(tmp_path: Path) -> None:
    reports = many_reports(1_500, seed=3)
    held, _ = plan_of(reports, json_lines=True, buffer_items=1_000_000)
    spilled, _ = plan_of(reports, json_lines=True, buffer_items=64, spill_dir=tmp_path)
    assert spilled == held
    rows = [json.loads(line) for line in spilled.splitlines()]
    expected = sorted(reports, key=old_order)
    assert [(r["repository"], r["tag"], r["digest"]) for r in rows[:-1]] == [
        (r.repository, r.tag, r.digest) for r in expected]
    assert rows[1]["reason"] == expected[1].reason  # non-ASCII and newlines survive the disk
    assert rows[-1]["totals"]["would_import"] == sum(r.action == "import" for r in reports)


def test_equal_keys_keep_their_arrival_order_across_runs(tmp_path: Path) -> None:
    # Same repository, tag and digest, different reasons: as one stable sort would.
    reports = [ItemReport(repository="team/app", tag="1.0.0", semver="1.0.0", digest=_digest(1),
                          outcome=Outcome.INVALID, reason=f"copy {n}") for n in range(50)]
    spilled, _ = plan_of(reports, buffer_items=3, max_runs=4, spill_dir=tmp_path)
    assert [line.rsplit(" ", 1)[1] for line in spilled.splitlines()[:-1]] == [
        str(n) for n in range(50)]


def test_spilled_runs_leave_no_file_behind_and_are_dropped_after_printing(tmp_path: Path) -> None:
    out = io.StringIO()
    printer = PlanPrinter(out, buffer_items=10, max_runs=100, spill_dir=tmp_path)
    reporter = Reporter("plan", on_item=printer.add)
    for report in many_reports(95):
        reporter.item(report)
    assert printer.spilled_runs == 9
    assert os.listdir(tmp_path) == []  # anonymous files: nothing to clean up after a kill
    printer.finish(reporter.summary)
    assert printer.spilled_runs == 0
    assert len(out.getvalue().splitlines()) == 95 + 1 + sum(
        "\n" in r.reason for r in many_reports(95))


def test_a_spill_that_cannot_be_written_keeps_the_lines_in_memory(tmp_path: Path) -> None:
    reports = many_reports(300)
    held, _ = plan_of(reports, buffer_items=1_000_000)
    missing = tmp_path / "no-such-directory"
    with capture_logs() as logs:
        spilled, _ = plan_of(reports, buffer_items=20, spill_dir=missing)
    assert spilled == held
    warnings = [e for e in logs if e["event"] == "plan.spill_failed"]
    assert len(warnings) == 1  # once, not once per batch
    assert warnings[0]["directory"] == str(missing) and warnings[0]["log_level"] == "warning"


def test_a_spill_that_fails_after_some_runs_keeps_what_was_written(tmp_path: Path) -> None:
    reports = many_reports(400)
    held, _ = plan_of(reports, buffer_items=1_000_000)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    out = io.StringIO()
    printer = PlanPrinter(out, buffer_items=50, spill_dir=spill_dir)
    reporter = Reporter("plan", on_item=printer.add)
    for report in reports[:120]:
        reporter.item(report)
    assert printer.spilled_runs == 2
    spill_dir.rmdir()  # the temporary directory goes away mid-plan
    with capture_logs() as logs:
        for report in reports[120:]:
            reporter.item(report)
    assert [e["event"] for e in logs if e["event"].startswith("plan.")] == ["plan.spill_failed"]
    printer.finish(reporter.summary)
    assert out.getvalue() == held

"""Filtered items, per-source counts and source problems in the run summary and the plan."""

from __future__ import annotations

import io

from crawler.outcomes import Outcome
from crawler.plan import PlanPrinter
from crawler.report import ItemReport, Reporter


def test_filtered_items_are_counted_never_problems_never_plan_lines() -> None:
    printer = PlanPrinter(io.StringIO())
    reporter = Reporter("plan", on_item=printer.add)
    reporter.source("charts")
    reporter.source("apps")
    reporter.item(ItemReport(repository="charts/web", tag="3.0.0", outcome=Outcome.SKIPPED,
                             reason="filtered: outside semver '>=1 <3'", source="charts"))
    reporter.item(ItemReport(repository="charts/web", tag="1.0.0", semver="1.0.0",
                             digest="sha256:" + "a" * 64, outcome=Outcome.IMPORTED,
                             reason="would import", action="import", source="charts", package="web"))
    reporter.repository_filtered("charts", "charts/tmp-1", "matched by exclude 'charts/tmp-*'")
    reporter.source_failed("apps", "apps.example", "cannot list the repositories of apps.example: x")
    summary = reporter.summary
    fields = summary.as_fields()
    assert fields["filtered"] == 1 and fields["filtered_repositories"] == 1
    assert fields["items"] == 2  # the would-import and the source problem, not the filtered tag
    assert fields["sources"] == {
        "apps": {"failed": 1, "problem": "cannot list the repositories of apps.example: x"},
        "charts": {"filtered": 1, "would_import": 1, "filtered_repositories": 1},
    }
    assert summary.new_problems == 1  # the source, not the filtered tag
    lines = printer.lines(summary)
    assert lines[0].startswith("FAILED          apps.example - - - source 'apps': cannot list")
    assert lines[1].startswith("IMPORT          charts/web -> web 1.0.0 1.0.0")
    assert not any("3.0.0" in line for line in lines)
    assert lines[-1].endswith("filtered 1, filtered_repositories 1")


def test_one_source_without_filters_keeps_the_summary_as_it_was() -> None:
    reporter = Reporter("run")
    reporter.source("r.example")
    reporter.item(ItemReport(repository="team/app", tag="1.0.0", outcome=Outcome.IMPORTED,
                             source="r.example"))
    fields = reporter.summary.as_fields()
    assert "sources" not in fields
    assert (fields["filtered"], fields["filtered_repositories"]) == (0, 0)
    assert reporter.summary.filter_counts() == {}

"""The operator's outputs as plain data: ignore rules, report, metrics, plan lines, status text."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crawler.errors import ConfigError
from crawler.ignore import IgnoreRule, parse_rules
from crawler.logs import configure
from crawler.outcomes import Outcome
from crawler.outputs import RunResult, metrics_registry, write_metrics, write_report
from crawler.plan import PlanPrinter
from crawler.progress import ProgressLine, summary_table
from crawler.report import ItemReport, Reporter, apply_ignore
from crawler.status import parse_outcome, parse_since

DIGEST = "sha256:" + "c" * 64


def item(tag: str, outcome: Outcome = Outcome.INVALID, repository: str = "team/app", **kw) -> ItemReport:
    return ItemReport(repository=repository, tag=tag, semver=tag.lstrip("v"), digest=DIGEST,
                      outcome=outcome, reason="bad", **kw)


# -- ignore rules -------------------------------------------------------------------


def test_ignore_rules_parse_and_match() -> None:
    rules = parse_rules([
        {"repository": "team/legacy-*", "tag": "0.*", "reason": "pre-1.0"},
        {"repository": "team/app", "digest": DIGEST, "reason": "known bad"},
    ], "config")
    assert rules[0].matches("team/legacy-db", ["0.3.0"], None)
    assert not rules[0].matches("team/legacy-db", ["1.0.0"], None)
    assert rules[0].matches("team/legacy-db", ["1.0.0", "0.9.9"], None)  # any of the tags
    assert not rules[0].matches("team/legacy", ["0.1.0"], None)
    assert rules[1].matches("team/app", ["9.9.9"], DIGEST)
    assert not rules[1].matches("team/app", ["9.9.9"], "sha256:" + "d" * 64)


@pytest.mark.parametrize(("value", "fragment"), [
    ({"repository": "a"}, "'reason' is required"),
    ({"reason": "x"}, "'repository' is required"),
    ({"repository": "a", "reason": "x", "digest": "sha256:abc"}, "is not sha256:"),
    ({"repository": "a", "reason": "x", "tags": "1.*"}, "unknown key 'tags'"),
    ({"repository": "a", "reason": " "}, "non-empty string"),
])
def test_bad_ignore_rules_name_the_key(value: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match="config\\[0\\]") as caught:
        parse_rules([value], "config")
    assert fragment in str(caught.value)


def test_only_problems_are_ignored() -> None:
    rules = (IgnoreRule(repository="team/*", reason="owners know"),)
    ignored = apply_ignore(rules, item("1.0.0"))
    assert ignored.outcome is Outcome.IGNORED
    assert ignored.reason == "owners know (ignored; invalid: bad)"
    imported = item("1.0.0", Outcome.IMPORTED)
    assert apply_ignore(rules, imported) is imported


# -- the reporter's accounting --------------------------------------------------------


def test_new_and_known_problems_are_counted_apart() -> None:
    reporter = Reporter("run", ignore=(IgnoreRule(repository="team/old", reason="r"),))
    reporter.item(item("1.0.0"))
    reporter.item(item("1.1.0", Outcome.FAILED, known_since=1000.0))
    reporter.item(item("1.2.0", Outcome.REJECTED, from_state=True, known_since=1000.0))
    reporter.item(item("2.0.0", repository="team/old"))
    reporter.item(item("2.1.0", Outcome.IMPORTED))
    summary = reporter.summary
    assert (summary.new_problems, summary.known_problems, summary.problems_total) == (1, 2, 3)
    fields = summary.as_fields()
    assert fields["ignored"] == 1 and fields["imported"] == 1
    assert fields["problems"][0] == "team/app:1.0.0 invalid (new): bad"  # new ones first
    assert len(fields["problems"]) == 3


def test_plan_counts_what_it_would_write() -> None:
    reporter = Reporter("plan")
    reporter.item(item("1.0.0", Outcome.IMPORTED, action="import"))
    reporter.item(item("1.1.0", Outcome.IMPORTED, action="create-version"))
    fields = reporter.summary.as_fields()
    assert fields["would_import"] == 1 and fields["would_create_version"] == 1
    assert "imported" not in fields


# -- report and metrics files ------------------------------------------------------------


def finished_run() -> RunResult:
    reporter = Reporter("run", ignore=(IgnoreRule(repository="team/old", reason="r"),))
    reporter.item(item("1.0.0"))
    reporter.item(item("1.1.0", Outcome.FAILED, known_since=1000.0))
    reporter.item(item("1.2.0", Outcome.IMPORTED))
    reporter.item(item("2.0.0", repository="team/old"))
    summary = reporter.summary
    summary.requests = {"registry_manifest": 4, "registry_tags": 2, "api_requests": 3,
                        "api_writes": 2, "api_429": 1}
    summary.throttling = {"throttled": 1, "pauses": 1, "paused_s": 2.5}
    return RunResult(summary, exit_status=1, finished_at=2_000_000_000.0, last_success_at=1_999_000_000.0)


def test_report_file_is_complete_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    write_report(path, finished_run())
    doc = json.loads(path.read_text())
    assert doc["exit_status"] == 1
    assert doc["counts"]["invalid"] == 1 and doc["counts"]["ignored"] == 1
    assert (doc["new_problems"], doc["known_problems"]) == (1, 1)
    assert [(p["tag"], p["new"]) for p in doc["problems"]] == [("1.0.0", True), ("1.1.0", False)]
    assert doc["ignored"][0]["repository"] == "team/old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left


def test_metrics_file_parses_with_prometheus_own_parser(tmp_path: Path) -> None:
    path = tmp_path / "akua_crawler.prom"
    write_metrics(path, finished_run())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert samples[("akua_crawler_exit_status", (("mode", "run"),))] == 1
    assert samples[("akua_crawler_last_run_timestamp_seconds", (("mode", "run"),))] == 2e9
    assert samples[("akua_crawler_last_success_timestamp_seconds", (("mode", "run"),))] == 1.999e9
    assert samples[("akua_crawler_items", (("outcome", "invalid"),))] == 1
    assert samples[("akua_crawler_items", (("outcome", "ignored"),))] == 1
    assert samples[("akua_crawler_problems", (("kind", "new"),))] == 1
    assert samples[("akua_crawler_problems", (("kind", "known"),))] == 1
    assert samples[("akua_crawler_requests", (("kind", "manifest"), ("service", "registry")))] == 4
    assert samples[("akua_crawler_requests", (("kind", "all"), ("service", "akua")))] == 3
    assert samples[("akua_crawler_akua_throttled_responses", ())] == 1
    assert samples[("akua_crawler_akua_pauses", ())] == 1
    assert samples[("akua_crawler_akua_paused_seconds", ())] == 2.5


def test_metrics_never_touch_the_process_registry() -> None:
    from prometheus_client import REGISTRY

    before = {m.name for m in REGISTRY.collect()}
    metrics_registry(finished_run())
    assert {m.name for m in REGISTRY.collect()} == before


# -- plan output ------------------------------------------------------------------------


def test_plan_lines_are_sorted_by_repository_then_semver_and_end_with_totals() -> None:
    reporter = Reporter("plan")
    printer = PlanPrinter(io.StringIO())
    reported = []
    for report in (
        item("1.10.0", Outcome.IMPORTED, action="create-version"),
        item("latest", Outcome.SKIPPED, repository="team/app"),
        item("1.2.0", Outcome.IMPORTED, action="create-version", tags=("latest-1",)),
        item("0.1.0", Outcome.IMPORTED, repository="a/first", action="import"),
        item("1.0.0-rc.1", Outcome.IMPORTED, action="import"),
    ):
        reported.append(reporter.item(report))
        printer.add(reported[-1])
    lines = printer.lines(reporter.summary)
    assert [line.split()[1:3] for line in lines[:-1]] == [
        ["a/first", "0.1.0"], ["team/app", "1.0.0-rc.1"], ["team/app", "1.2.0,latest-1"],
        ["team/app", "1.10.0"], ["team/app", "latest"]]
    assert lines[-1].startswith("TOTAL") and "would_import 2, would_create_version 2" in lines[-1]
    printer_json = PlanPrinter(io.StringIO(), json_lines=True)
    for report in reported:
        printer_json.add(report)
    rows = [json.loads(line) for line in printer_json.lines(reporter.summary)]
    assert rows[0]["repository"] == "a/first" and rows[0]["action"] == "IMPORT"
    assert [row.get("outcome") for row in rows[:-1]] == [
        "would_import", "would_import", "would_create_version", "would_create_version", "skipped"]
    assert rows[-1]["totals"]["would_import"] == 2


# -- status filters, progress, logs ---------------------------------------------------------


def test_since_takes_dates_and_ages() -> None:
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2d", now) == now.timestamp() - 2 * 86400
    assert parse_since("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    assert parse_since("2026-12-01T03:00:00Z") == dt.datetime(2026, 12, 1, 3, tzinfo=dt.UTC).timestamp()
    with pytest.raises(ConfigError, match="--since"):
        parse_since("yesterday")
    with pytest.raises(ConfigError, match="--outcome"):
        parse_outcome("imported")


def test_progress_shows_repositories_eta_and_the_summary_table() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    reporter = Reporter("run", on_item=line.observe)
    line.attach(reporter)
    reporter.sources_expected(2)
    reporter.source_listed(3)
    assert "repositories 0 " in line.render() + " "  # total unknown until every source is listed
    reporter.source_listed(1)
    reporter.item(item("1.0.0", Outcome.IMPORTED))
    reporter.repository_done()
    text = line.render(now=line._started + 10)
    assert "repositories 1/4, ETA 00:00:30" in text and "imported 1" in text
    line.print_summary(0)
    table = out.getvalue()
    assert "imported" in table and "problems new" in table and "exit 0" in table
    assert "{" not in summary_table(reporter.summary)  # a table, not a dict repr


def test_standard_logging_records_are_json_and_redacted() -> None:
    out = io.StringIO()
    configure(log_format="json", level="info", secrets=["sk_akua_very_secret"], stream=out)
    logging.getLogger("urllib3.connectionpool").warning("retrying with token %s", "sk_akua_very_secret")
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "retrying with token ***"
    assert line["level"] == "warning" and line["logger"] == "urllib3.connectionpool"
    assert "sk_akua_very_secret" not in out.getvalue()


@pytest.mark.anyio
async def test_progress_shows_a_pause_asked_by_akua() -> None:
    from crawler.ratelimit import AdaptiveRateLimiter

    line = ProgressLine(io.StringIO())
    reporter = Reporter("run")
    line.attach(reporter)
    reporter.akua_rate = AdaptiveRateLimiter(10, 1)
    assert "PAUSED" not in line.render()
    reporter.akua_rate.pause(4.5)
    assert "PAUSED by Akua for 5s more" in line.render()
    assert reporter.akua_rate.statistics().pauses == 1


def test_the_readme_alerts_parse_and_name_metrics_the_crawler_writes() -> None:
    import re

    import yaml

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("Two ready alerts (Prometheus rules):", 1)[1].split("```yaml\n", 1)[1]
    rules = yaml.safe_load(block.split("```", 1)[0])["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["AkuaCrawlerNoSuccessfulRun", "AkuaCrawlerNewProblems"]
    written = {family.name for family in metrics_registry(finished_run()).collect()}
    for rule in rules:
        for name in re.findall(r"akua_crawler_[a-z_]+", rule["expr"]):
            assert name in written, name


def test_item_events_carry_one_tag_and_the_others_in_a_list() -> None:
    from structlog.testing import capture_logs

    reporter = Reporter("run")
    with capture_logs() as logs:
        reporter.item(item("1.2.0", Outcome.IMPORTED, tags=("v1.2.0", "1.2.0_0")))
        reporter.item(item("1.3.0", Outcome.INVALID, known_since=5.0))
        reporter.item(item("1.4.0", Outcome.INVALID))
        reporter.item(ItemReport(repository="team/app", tag="latest", outcome=Outcome.SKIPPED,
                                 reason="tag is not SemVer"))
    imported, known, new, latest = logs
    assert (imported["tag"], imported["tags"]) == ("1.2.0", ["v1.2.0", "1.2.0_0"])
    assert (known["log_level"], known["new"]) == ("info", False)
    assert (new["log_level"], new["new"]) == ("warning", True)
    assert latest["log_level"] == "debug"

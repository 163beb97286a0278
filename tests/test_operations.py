"""Operating it from cron: a bad night, a good night, and what the operator sees of each.

Real registry (the mixed world), the strict Akua double injecting 5xx on the
first night and nothing on the second, the CLI in process.  Checked: the exit
statuses with ``--fail-on``, ``status`` naming the failed items as new, the
ignore list, one ``run.finished`` per run on every exit path, the report and
metrics files against the counts, byte-identical plans, and an old state
migrated in place.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crawler.cli import main
from crawler.config import Settings
from crawler.crawl import target_of
from crawler.state import SCHEMA_VERSION, StateStore
from testkit.akua_double import AkuaDouble
from testkit.world import MixedWorld, seed_mixed_registry
from tests.test_faults import assert_exactly_once, expected_by_ref
from tests.test_state import SCHEMA_2A90FF5

# With one worker the double's seeded faults hit the same requests every time: this seed
# fails a few versions for good (five 5xx in a row) and never ten in a row (an abort).
BAD_NIGHT: dict[str, Any] = {"error_5xx_rate": 0.8, "seed": 5}

IGNORE = """
[[ignore]]
repository = "team/broken"
tag = "1.[01].0"
reason = "broken by its publisher, superseded by 1.2.0 (TICKET-7)"
"""


@pytest.fixture
def world(seeder) -> MixedWorld:
    return seed_mixed_registry(seeder)


def events_of(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def closing(events: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [e for e in events if e["event"] in ("run.finished", "run.stopped")]
    assert [e["event"] for e in ends] == ["run.finished"], ends
    return ends[0]


class Operator:
    """Runs the CLI the way a cron job would, against one state."""

    def __init__(self, registry_host: str, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys):
        self.host, self.akua, self.tmp, self.capsys = registry_host, akua, tmp_path, capsys
        self.state = tmp_path / "state.db"
        self.config = tmp_path / "crawler.toml"
        self.config.write_text(IGNORE)
        self.report = tmp_path / "report.json"
        self.metrics = tmp_path / "akua_crawler.prom"
        self.api_url = akua.url  # kept: a stopped double has no url
        monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)

    def cli(self, *args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = self.capsys.readouterr()
        return status, out, err

    def run(self, *extra: str) -> tuple[int, dict[str, Any]]:
        status, _, err = self.cli(
            "run", "--config", str(self.config), "--registry", self.host, "--plain-http",
            "--state", str(self.state), "--api-url", self.api_url, "--log-format", "json",
            "--concurrency", "1", "--rate", "500", "--no-docker-config",
            "--report", str(self.report), "--metrics-file", str(self.metrics), *extra)
        end = closing(events_of(err))
        assert end["exit_status"] == status
        return status, end

    def status(self, *extra: str) -> dict[str, Any]:
        code, out, _ = self.cli("status", "--state", str(self.state), "-o", "json", *extra)
        assert code == 0
        return json.loads(out)

    def status_text(self) -> str:
        code, out, _ = self.cli("status", "--state", str(self.state))
        assert code == 0
        return out

    def plan(self) -> str:
        code, out, _ = self.cli(
            "plan", "--config", str(self.config), "--registry", self.host, "--plain-http",
            "--state", str(self.state), "--api-url", self.akua.url, "--log-format", "json",
            "--concurrency", "4")
        assert code == 0
        return out


def metric_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def check_outputs_match(op: Operator, end: dict[str, Any]) -> None:
    """The report and the metrics file say what run.finished said."""
    report = json.loads(op.report.read_text())
    assert report["exit_status"] == end["exit_status"]
    for outcome, count in report["counts"].items():
        assert end[outcome] == count, outcome
    assert report["new_problems"] == end["new_problems"]
    assert report["known_problems"] == end["known_problems"]
    assert len(report["problems"]) == end["problems_total"]
    samples = metric_samples(op.metrics)
    assert samples[("akua_crawler_exit_status", (("mode", "run"),))] == end["exit_status"]
    for outcome, count in report["counts"].items():
        assert samples[("akua_crawler_items", (("outcome", outcome),))] == count
    assert samples[("akua_crawler_problems", (("kind", "new"),))] == end["new_problems"]
    assert samples[("akua_crawler_problems", (("kind", "known"),))] == end["known_problems"]
    writes = sum(v for (name, labels), v in samples.items()
                 if name == "akua_crawler_requests" and ("kind", "writes") in labels)
    assert writes == end["requests"].get("api_writes", 0)


@pytest.mark.slow  # two nights of a fault run (80% 5xx, retries): the slow lane
def test_bad_night_then_good_night(
    world: MixedWorld, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    akua = make_akua(**BAD_NIGHT)
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)

    # Night one: Akua answers 5xx; some versions run out of retries.
    status, end = op.run("--fail-on", "any")
    assert status == 1
    assert end["failed"] >= 1 and end["new_problems"] == end["failed"]
    assert end["ignored"] == 2 and end["invalid"] == 0  # the two broken artifacts, accepted
    check_outputs_match(op, end)
    failed = {(p["repository"], p["tag"]) for p in json.loads(op.report.read_text())["problems"]}
    assert len(failed) == end["failed"]

    # The morning after: status names them, as new, with their reason and first-seen time.
    doc = op.status()
    assert doc["last_run"]["exit_status"] == 1 and doc["last_successful_run"] is None
    rows = {(repo["repository"], row["tag"]): row for repo in doc["repositories"] for row in repo["items"]}
    problems = {key for key, row in rows.items() if row["outcome"] == "failed"}
    assert problems == failed
    assert all(rows[key]["new"] is True and rows[key]["first_seen"] for key in failed)
    assert all(row["seen_in_last_run"] for row in rows.values())
    assert "HTTP 5" in rows[next(iter(failed))]["reason"] or "5xx" in rows[next(iter(failed))]["reason"]
    ignored = {key: row for key, row in rows.items() if row["outcome"] == "ignored"}
    assert set(ignored) == {("team/broken", "1.0.0"), ("team/broken", "1.1.0")}
    assert all("TICKET-7" in row["reason"] for row in ignored.values())
    assert doc["problems"] == {"total": len(failed), "new": len(failed), "known": 0}
    text = op.status_text()
    assert "team/broken" in text and "NEW" in text and "failed" in text
    assert op.status("--outcome", "ignored")["problems"]["total"] == 0
    assert [r["repository"] for r in op.status("--repository", "team/broken")["repositories"]] == [
        "team/broken"]

    # Night two: Akua is well. The failures are imported; nothing else is sent again.
    akua.configure(error_5xx_rate=0.0)
    status, end = op.run("--fail-on", "any")
    assert status == 0, end.get("problems")
    assert end["imported"] == len(failed) and end["failed"] == 0 and end["ignored"] == 2
    assert end["new_problems"] == end["known_problems"] == 0
    check_outputs_match(op, end)
    assert_exactly_once(akua, expected_by_ref(registry.host, world))
    doc = op.status()
    assert doc["problems"]["total"] == 0
    assert doc["last_successful_run"]["id"] == doc["last_run"]["id"]
    # Every artifact night two met, settled or not, was seen by it; first-seen moved only
    # for the items whose outcome changed (failed -> imported).
    db = sqlite3.connect(op.state)
    night_two = doc["last_run"]["started_at"]
    rows = db.execute("SELECT tag, repository, first_seen, last_seen FROM items").fetchall()
    assert rows and all(last >= night_two for _, _, _, last in rows)
    moved = {(repo, tag) for tag, repo, first, _ in rows if first >= night_two}
    assert moved == failed
    db.close()
    samples = metric_samples(op.metrics)
    assert samples[("akua_crawler_last_success_timestamp_seconds", (("mode", "run"),))] > 0

    # Two plans of the unchanged registry are byte-identical, and sorted.
    first, second = op.plan(), op.plan()
    assert first == second
    lines = first.splitlines()
    assert lines[-1].startswith("TOTAL") and "would_import 0" in lines[-1]
    names = [line.split()[1] for line in lines[:-1]]
    assert names == sorted(names)


def test_known_problems_do_not_fail_the_next_night_with_fail_on_new(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)
    op.config.write_text("")  # no ignore list: the two invalid artifacts are problems
    status, end = op.run()
    assert (status, end["new_problems"], end["invalid"]) == (1, 2, 2)
    status, end = op.run()
    assert (status, end["new_problems"], end["known_problems"]) == (0, 0, 2)
    assert op.run("--fail-on", "any")[0] == 1
    assert op.run("--fail-on", "never")[0] == 0
    doc = op.status()
    assert doc["problems"] == {"total": 2, "new": 0, "known": 2}
    broken = [row for repo in doc["repositories"] for row in repo["items"]]
    assert [row["seen_in_last_run"] for row in broken] == [True, True]
    # A run over another repository only: the broken ones were not met by it.
    assert op.run("--repository", "team/app")[0] == 0
    broken = [row for repo in op.status()["repositories"] for row in repo["items"]]
    assert [row["seen_in_last_run"] for row in broken] == [False, False]
    assert "not seen by the last run" in op.status_text()


def test_akua_down_for_good_fails_every_night_and_is_no_success(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    # A failed item is never a known problem: a failure that persists is an outage.
    registry = registry_factory()
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)
    status, end = op.run("--repository", "team/app")
    assert status == 0 and end["imported"] >= 1
    success = op.status()["last_successful_run"]
    stamp = metric_samples(op.metrics)[
        ("akua_crawler_last_success_timestamp_seconds", (("mode", "run"),))]
    akua.stop()  # Akua unreachable: connections to its port are refused
    port = int(op.api_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as held:  # bound, never listening: no other server takes the port
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        held.bind(("127.0.0.1", port))
        nights_without_akua(op, stamp, success)


def nights_without_akua(op: Operator, stamp: float, success: dict[str, Any]) -> None:
    for night in (1, 2):
        status, end = op.run()
        assert status == 1, (night, end)
        assert end["imported"] == 0 and end["failed"] >= 1
        assert (end["new_problems"], end["known_problems"]) == (end["failed"], 0)
        check_outputs_match(op, end)
        samples = metric_samples(op.metrics)
        assert samples[("akua_crawler_exit_status", (("mode", "run"),))] == 1
        # the good run's time (from the state's row: a few ms after the one that run wrote)
        assert samples[("akua_crawler_last_success_timestamp_seconds", (("mode", "run"),))] \
            == pytest.approx(stamp, abs=1.0)
        doc = op.status()
        assert doc["last_run"]["exit_status"] == 1
        assert doc["last_successful_run"] == success  # not moved
        assert doc["problems"]["new"] == doc["problems"]["total"] == end["failed"]


# -- exactly one run.finished on every exit path ------------------------------------------


def test_one_closing_event_when_the_state_is_unusable_locked_or_the_token_refused(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)
    op.state.write_bytes(b"not a database " * 100)
    status, end = op.run()
    assert status == 2 and "state" in end["abort_reason"]
    assert json.loads(op.report.read_text())["exit_status"] == 2
    op.state.unlink()

    with StateStore(op.state, target=target_of(Settings(registry=registry.host, api_url=akua.url))):
        status, end = op.run()
        assert op.status()["last_run"] is None  # status reads while the lock is held
    assert status == 4 and "in use by another" in end["abort_reason"]
    assert metric_samples(op.metrics)[("akua_crawler_exit_status", (("mode", "run"),))] == 4

    monkeypatch.setenv("AKUA_API_TOKEN", "sk_akua_wrong_token")
    status, end = op.run()
    assert status == 3 and "refused the token" in end["abort_reason"]
    doc = op.status()
    assert doc["last_run"]["exit_status"] == 3 and doc["last_run"]["abort_reason"]


def test_a_bug_exits_5_with_one_closing_event(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)
    assert op.run()[0] == 0  # the broken artifacts are on the ignore list
    db = sqlite3.connect(op.state)  # a row no crawler writes: reading it is a bug, not an item problem
    db.execute("UPDATE items SET outcome = 'exploded' WHERE repository = 'team/drafty'")
    db.commit()
    db.close()
    status, end = op.run()
    assert status == 5
    assert "exploded" in json.dumps(end)  # the abort reason, or the contained repository's reason
    assert json.loads(op.report.read_text())["exit_status"] == 5


# -- an upgrade keeps the state ------------------------------------------------------------


def test_a_state_written_by_2a90ff5_is_migrated_in_place_by_the_next_run(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    op = Operator(registry.host, akua, tmp_path, monkeypatch, capsys)
    op.config.write_text("")
    target = target_of(Settings(registry=registry.host, api_url=akua.url))
    # What main at 2a90ff5 left after importing team/drafty 0.1.0 (and nothing else).
    drafty = next(v for v in world.versions if v.repository == "team/drafty")
    akua.add_package("team/drafty", f"oci://{registry.host}/team/drafty",
                     [(drafty.semver, drafty.digest, drafty.schema)])
    package_id = akua.packages()[0]["id"]
    version_id = akua.versions(package_id)[0]["id"]
    db = sqlite3.connect(op.state)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_2A90FF5)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("target", target)])
    db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, 'imported', '', ?, ?, 1000.0)",
               (registry.host, "team/drafty", "0.1.0", drafty.digest, "0.1.0", package_id, version_id))
    db.execute("INSERT INTO packages VALUES (?, ?, 1000.0)",
               (f"oci://{registry.host}/team/drafty", package_id))
    db.commit()
    db.close()
    before = len(akua.writes())

    status, end = op.run()
    assert status == 1  # the two invalid artifacts, new to this state
    assert end["exists"] == 1  # team/drafty 0.1.0: settled by the old state, no request
    assert len(akua.writes()) - before == len(world.versions) - 1
    db = sqlite3.connect(op.state)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    first_seen = db.execute("SELECT first_seen FROM items WHERE repository = 'team/drafty'").fetchone()
    assert first_seen == (1000.0,)
    assert op.status()["last_run"]["exit_status"] == 1

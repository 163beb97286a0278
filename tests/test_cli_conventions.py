"""CLI conventions: -c and AKUA_CRAWLER_CONFIG, -v/-q, global options on either side of the
command, --version, help with env/default/choices and exit statuses, per-command options,
completion generated from the parser, --password-stdin, status over several shards."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from crawler.arguments import build_parser, log_level_of
from crawler.cli import main
from crawler.outcomes import Outcome
from crawler.state import ItemRecord, StateStore
from testkit.registry import package_annotations
from tests.plugins.cli import run_in_process

SCHEMA = {"type": "object"}


def help_of(*command: str) -> str:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*command, "--help"])
    assert stop.value.code == 0
    return ""


def test_help_shows_env_default_choices_and_exit_statuses(capsys) -> None:
    help_of("run")
    text = " ".join(capsys.readouterr().out.split())  # help wraps at the terminal's width
    assert "--rate PER_SECOND" in text and "AKUA_CRAWLER_RATE; default 10.0" in text
    assert "--name-rule {path,last_segment,strip_prefix,template}" in text
    assert "AKUA_CRAWLER_PRERELEASES; default on" in text
    assert "exit statuses:" in text and "130 stopped by SIGINT, 143 by SIGTERM" in text
    help_of("plan")
    plan = " ".join(capsys.readouterr().out.split())
    assert "--rate" not in plan and "--api-timeout" not in plan  # plan never writes to Akua
    assert build_parser().parse_args(["plan", "--rate", "5"]).rate == "5"  # still accepted
    assert "--semver RANGE" in plan and "-o {text,json}" in plan
    assert "state cannot be written any more" in plan  # row 3 names the state write failures
    help_of("status")
    status = " ".join(capsys.readouterr().out.split())
    assert "0 the state was read" in status and "2 bad usage, or the state cannot be read" in status
    assert "SIGTERM" not in status and "a bug in the crawler" not in status  # status exits 0 or 2


def test_an_exception_escaping_the_run_exits_5_with_one_closing_event(
    seeder, registry_factory, tmp_path: Path
) -> None:
    # A reader that went away (`plan | head -0`): the plan's lines cannot be written. Whatever
    # escapes the run's own handlers ends as a bug (5), never Python's 1, and run.finished
    # is still logged once.
    from tests.plugins.cli import child_command, child_environment

    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory()
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read the plan
    try:
        done = subprocess.run(
            child_command(["plan", "--registry", registry.host, "--plain-http", "--state",
                           str(tmp_path / "s.db"), "--log-format", "json"]),
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120,
            env=child_environment())
    finally:
        os.close(writer)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert done.returncode == 5, done.stderr[-3000:]
    finished = [e for e in events if e["event"] == "run.finished"]
    assert len(finished) == 1 and finished[0]["exit_status"] == 5
    assert "BrokenPipeError" in finished[0]["abort_reason"]
    assert [e["event"] for e in events].count("run.crashed") == 1


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["-c", "x.toml", "--log-level", "debug", "plan", "--registry", "r"])
    after = parser.parse_args(["plan", "--registry", "r", "-c", "x.toml", "--log-level", "debug"])
    for args in (before, after):
        assert (args.config, args.log_level, args.registry) == (Path("x.toml"), "debug", "r")
    assert log_level_of(parser.parse_args(["-v", "plan"])) == "debug"
    assert log_level_of(parser.parse_args(["plan", "-q"])) == "warning"
    assert log_level_of(parser.parse_args(["plan", "-qq"])) == "error"
    assert log_level_of(parser.parse_args(["-q", "plan", "--log-level", "info"])) == "info"
    assert log_level_of(parser.parse_args(["plan"])) is None


def test_version_names_key_dependencies(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    out = capsys.readouterr().out
    assert out.startswith("akua-crawler ")
    for name in ("Python", "oras", "httpx", "requests", "anyio", "node-semver"):
        assert name in out


def test_config_from_flag_or_environment(tmp_path: Path, monkeypatch, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text('registry = "127.0.0.1:9"\nconcurrency = "many"\n')
    done = run_in_process(["plan", "-c", str(config)], monkeypatch, capsys)
    assert done.status == 2 and "concurrency: expected int" in done.stderr
    done = run_in_process(["plan"], monkeypatch, capsys, {"AKUA_CRAWLER_CONFIG": str(config)})
    assert done.status == 2 and "concurrency: expected int" in done.stderr


def test_completion_is_generated_from_the_parser(capsys) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "--semver" in script and "--name-rule" in script and "status" in script
    bash = shutil.which("bash")
    assert bash, "bash is missing"
    checked = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True, timeout=30,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    assert main(["completion", "zsh"]) == 0
    assert "#compdef akua-crawler" in capsys.readouterr().out


def test_password_from_standard_input(seeder, registry_factory, akua, tmp_path: Path,
                                      monkeypatch, capsys) -> None:
    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory(users={"bob": "stdin-secret-pw"})
    args = ["run", "--registry", registry.host, "--plain-http", "--username", "bob",
            "--password-stdin", "--api-url", akua.url, "--state", str(tmp_path / "s.db"),
            "--log-format", "json"]
    monkeypatch.setattr("sys.stdin", io.StringIO("stdin-secret-pw\n"))
    done = run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN": akua.switches.token})
    assert done.status == 0, done.stderr
    assert "stdin-secret-pw" not in done.stderr + done.stdout
    assert [p["name"] for p in akua.packages()] == ["team/app"]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    done = run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN": akua.switches.token})
    assert done.status == 2 and "--password-stdin: standard input is empty" in done.stderr


def test_status_merges_the_shards_states(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'registry = "r.example"\nstate = "{tmp_path}/state.db"\nshard_count = 2\n')
    for index, repository in ((0, "team/a"), (1, "team/b")):
        path = tmp_path / f"state.shard-{index}-of-2.db"
        with StateStore(path, target="t") as store:
            run = store.start_run(mode="run", crawler_version="test")
            store.write([ItemRecord(registry="r.example", repository=repository, tag="1.0.0",
                                    digest="sha256:" + "a" * 64, semver="1.0.0",
                                    outcome=Outcome.INVALID, reason=f"broken {repository}")])
            store.finish_run(run, exit_status=1, counts={"invalid": 1}, new_problems=1,
                             known_problems=0, abort_reason=None)
    assert main(["status", "-c", str(config), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["repository"] for r in doc["repositories"]] == ["team/a", "team/b"]
    assert doc["problems"]["total"] == 2 and len(doc["states"]) == 2
    assert main(["status", "--state", str(tmp_path / "state.shard-1-of-2.db")]) == 0
    text = capsys.readouterr().out
    assert "team/b" in text and "team/a" not in text
    assert main(["status", "--state", str(tmp_path / "state.shard-0-of-2.db"),
                 "--state", str(tmp_path / "state.shard-1-of-2.db")]) == 0
    text = capsys.readouterr().out
    assert "team/a" in text and "team/b" in text and "state.shard-1-of-2.db" in text

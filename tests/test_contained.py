"""One repository cannot stop the run: a body Akua would refuse, a bug (issue 7.15, 7.16)."""

from __future__ import annotations

from pathlib import Path

import pytest

import crawler.job
from crawler.prepare import Preparation, Prepared
from crawler.registry import Manifest
from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema

LONG = "team/" + "a" * 130  # a legal OCI repository path; 135 characters as a package name


def seed(seeder: Seeder, *repositories: str) -> None:
    for repository in repositories:
        for semver in ("1.0.0", "1.1.0"):
            seeder.add_artifact(repository, [semver],
                                annotations=package_annotations(app_schema(semver), None))


def args(command: str, registry, tmp_path: Path, akua: AkuaDouble | None = None) -> list[str]:
    line = [command, "--registry", registry.host, "--plain-http", "--state", str(tmp_path / "s.db"),
            "--log-format", "json", "--rate", "500"]
    return line + (["--api-url", akua.url] if akua is not None else [])


def test_a_name_over_akuas_limit_is_a_problem_in_plan_not_a_crash(
    seeder, registry_factory, tmp_path, cli
) -> None:
    seed(seeder, LONG, "team/app")
    registry = registry_factory()
    result = cli(args("plan", registry, tmp_path))
    assert result.status == 1
    # The selection refuses the name before any tag list (naming.py); the request check
    # (request.py, tests/test_request.py) would stop it before sending otherwise.
    lines = [line.split(maxsplit=5) for line in result.stdout.splitlines() if LONG in line]
    assert [line[0] for line in lines] == ["INVALID"]  # issue 7.15: the name's fault
    assert "package name of 135 characters, over Akua's 120" in lines[0][5]
    assert sum(line.startswith(("IMPORT", "CREATE-VERSION")) for line in result.stdout.splitlines()) == 2
    assert result.closing["exit_status"] == 1


def test_a_name_over_akuas_limit_is_never_sent_and_the_others_go_on(
    seeder, registry_factory, akua: AkuaDouble, tmp_path, cli
) -> None:
    seed(seeder, LONG, "team/app")
    registry = registry_factory()
    result = cli(args("run", registry, tmp_path, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert result.status == 1
    assert {p["name"] for p in akua.packages()} == {"team/app"}
    assert [e["repository"] for e in result.events if e.get("outcome") in ("invalid", "rejected")] == [LONG]
    [long] = [e for e in result.events if e.get("repository") == LONG and e.get("outcome")]
    assert long["outcome"] == "invalid"
    assert long["reason"] == (f"{LONG} maps to a package name of 135 characters, over Akua's 120; "
                              "set name_overrides or another name_rule")
    assert result.closing["invalid"] == 1 and result.closing["rejected"] == 0
    assert result.closing["imported"] == 2
    assert not result.named("run.crashed")


@pytest.fixture
def buggy_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect in the crawler that only one repository's artifacts reach."""
    real = crawler.job.prepare

    def prepare(manifest: Manifest, how: Preparation) -> Prepared:
        if how.name == "team/buggy":
            raise RuntimeError("a defect only team/buggy reaches")
        return real(manifest, how)

    monkeypatch.setattr(crawler.job, "prepare", prepare)


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_bug_ends_its_repository_failed_and_the_run_goes_on(
    command: str, buggy_prepare, seeder, registry_factory, akua: AkuaDouble, tmp_path, cli
) -> None:
    seed(seeder, "team/app", "team/buggy", "team/db")
    registry = registry_factory()
    result = cli(args(command, registry, tmp_path, akua if command == "run" else None),
                 env={"AKUA_API_TOKEN": akua.switches.token})
    assert result.status == 5
    [crash] = result.named("repository.crashed")
    assert crash["repository"] == "team/buggy"
    assert "Traceback" in crash["exception"]
    assert "RuntimeError: a defect only team/buggy reaches" in crash["exception"]
    [failed] = [e for e in result.named("item.failed") if e["repository"] == "team/buggy"]
    assert "a bug in the crawler stopped work on this repository: RuntimeError" in failed["reason"]
    closing = result.closing
    assert closing["event"] == "run.finished"
    assert closing["exit_status"] == 5
    assert closing["contained_bugs"] == 1
    if command == "run":
        assert {p["name"] for p in akua.packages()} == {"team/app", "team/db"}
        assert closing["imported"] == 4
    else:
        assert sum(line.startswith(("IMPORT", "CREATE-VERSION")) for line in result.stdout.splitlines()) == 4

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


def test_a_name_over_akuas_limit_is_invalid_in_plan(seeder, registry_factory, tmp_path, cli) -> None:
    seed(seeder, LONG, "team/app")
    registry = registry_factory()
    result = cli(args("plan", registry, tmp_path))
    assert result.status == 1
    lines = [line.split(maxsplit=5) for line in result.stdout.splitlines() if LONG in line]
    assert [line[0] for line in lines] == ["INVALID", "INVALID"]
    assert all("135 characters, Akua allows at most 120" in line[5] for line in lines)
    assert "map the repository to a shorter package name" in lines[0][5]
    assert sum(line.startswith(("IMPORT", "CREATE-VERSION")) for line in result.stdout.splitlines()) == 2
    assert result.closing["exit_status"] == 1


def test_a_name_over_akuas_limit_is_invalid_in_run_and_never_sent(
    seeder, registry_factory, akua: AkuaDouble, tmp_path, cli
) -> None:
    seed(seeder, LONG, "team/app")
    registry = registry_factory()
    result = cli(args("run", registry, tmp_path, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert result.status == 1
    assert {p["name"] for p in akua.packages()} == {"team/app"}
    invalid = result.named("item.invalid")
    assert {e["repository"] for e in invalid} == {LONG}
    assert len(invalid) == 2
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

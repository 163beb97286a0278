"""What one repository does cannot stop the run (issue 8.5, 8.8)."""

from __future__ import annotations

from pathlib import Path

from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema
from tests.gating_proxy import GatingProxy


def seed(seeder: Seeder, repository: str, versions: int) -> None:
    for minor in range(versions):
        semver = f"1.{minor}.0"
        seeder.add_artifact(repository, [semver], annotations=package_annotations(app_schema(semver), None))


def args(command: str, host: str, tmp_path: Path, akua: AkuaDouble | None = None) -> list[str]:
    line = [command, "--registry", host, "--plain-http", "--state", str(tmp_path / "s.db"),
            "--log-format", "json", "--rate", "500"]
    return line + (["--api-url", akua.url] if akua is not None else [])


def test_one_repository_answering_500_ends_failed_and_the_others_finish(
    seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, cli
) -> None:
    seed(seeder, "team/broken", 12)  # more failing items than the streak allows
    seed(seeder, "team/app", 2)
    seed(seeder, "team/db", 2)
    registry = registry_factory()
    with GatingProxy(registry.host, broken="team/broken") as proxy:
        result = cli(args("run", proxy.host, tmp_path, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert proxy.broken_answers >= 12
    assert result.status == 1, result.closing
    assert not result.named("run.aborted")
    failed = result.named("item.failed")
    assert {e["repository"] for e in failed} == {"team/broken"}
    assert len(failed) == 12
    assert {p["name"] for p in akua.packages()} == {"team/app", "team/db"}
    assert result.closing["imported"] == 4


def test_a_catalog_entry_that_is_no_repository_name_is_invalid_and_the_others_are_crawled(
    seeder, registry_factory, tmp_path: Path, cli
) -> None:
    seed(seeder, "team/app", 2)
    registry = registry_factory()
    bad = ("Team/App", "team/app:1.0", "team app", "team//app")
    with GatingProxy(registry.host, catalog_extra=bad) as proxy:
        result = cli(args("plan", proxy.host, tmp_path))
    assert result.status == 1, result.stderr[-2000:]
    invalid = {e["repository"]: e["reason"] for e in result.named("item.invalid")}
    assert set(invalid) == set(bad)
    for name, reason in invalid.items():
        assert f"{name!r} is not a valid OCI repository name" in reason
    assert sum(line.startswith(("IMPORT", "CREATE-VERSION")) for line in result.stdout.splitlines()) == 2
    assert not result.named("run.crashed")

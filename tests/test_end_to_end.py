"""The product path through the CLI: a real registry, the strict Akua double."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testkit.akua_double import AkuaDouble
from testkit.world import MixedWorld, seed_mixed_registry
from tests.plugins.cli import run_in_process


@pytest.fixture
def world(seeder) -> MixedWorld:
    return seed_mixed_registry(seeder)


def crawl(
    command: str, registry, akua: AkuaDouble | None, state: Path, monkeypatch, capsys, *extra: str
) -> tuple[int, list[dict[str, Any]], str]:
    args = [command, "--registry", registry.host, "--plain-http", "--state", str(state),
            "--log-format", "json", "--concurrency", "4", "--rate", "500", *extra]
    env = {}
    if akua is not None:
        env["AKUA_API_TOKEN"] = akua.switches.token
        args += ["--api-url", akua.url]
    done = run_in_process(args, monkeypatch, capsys, env)
    return done.status, done.events, done.stdout


def writes(akua: AkuaDouble) -> list[tuple[str, dict[str, Any]]]:
    return [(r.path, r.body) for r in akua.writes()]


def test_run_imports_exactly_the_valid_versions_once(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    state = tmp_path / "state.db"
    status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys)

    assert status == 1  # two invalid artifacts
    # One package per repository with a valid version, created by its lowest SemVer.
    packages = {p["name"]: p for p in akua.packages()}
    assert set(packages) == world.repositories
    for name, package in packages.items():
        assert package["source"] == {"kind": "oci", "oci_ref": f"oci://{registry.host}/{name}"}
    assert packages["team/app"]["description"] == "The team's app."

    # Exactly the expected versions, with the exact digest and schema, in ascending order.
    by_repo: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, body in writes(akua):
        if path.endswith("packages:import"):
            by_repo.setdefault(body["name"], []).append(
                (body["version"]["semver"], body["version"]["ref"], body["version"]["input_schema"]))
            assert body["oci_ref"] == f"oci://{registry.host}/{body['name']}"
        else:
            package_id = path.split("/")[3]
            name = next(n for n, p in packages.items() if p["id"] == package_id)
            by_repo.setdefault(name, []).append((body["semver"], body["ref"], body["input_schema"]))
    expected: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for version in world.versions:
        expected.setdefault(version.repository, []).append(
            (version.semver, version.digest, version.schema))
    assert by_repo == expected
    assert not akua.find_duplicates()
    for name, versions in expected.items():
        first = next(path for path, body in writes(akua)
                     if path.endswith("packages:import") and body["name"] == name)
        assert first.endswith("packages:import")
        assert len(akua.versions(packages[name]["id"])) == len(versions)

    items = [e for e in events if e["event"].startswith("item.")]
    for e in items:
        assert {"repository", "tag", "semver", "digest", "outcome", "reason", "duration_ms"} <= set(e)
    invalid = {(e["repository"], e["tag"]): e["reason"] for e in items if e["outcome"] == "invalid"}
    assert set(invalid) == set(world.invalid)
    for key, fragment in world.invalid.items():
        assert fragment in invalid[key]
    skipped = {(e["repository"], e["tag"]) for e in items if e["outcome"] == "skipped"}
    assert world.no_schema <= skipped
    # Tags such as `latest` are met again every night: counted, logged at debug only.
    assert not world.skipped_tags & skipped
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["imported"] == len(world.versions)
    assert finished["invalid"] == 2 and finished["exit_status"] == 1
    assert finished["skipped"] == len(world.skipped_tags | world.no_schema)
    assert finished["new_problems"] == 2 and finished["known_problems"] == 0
    assert any("team/broken:1.0.0 invalid" in p for p in finished["problems"])


def test_second_run_writes_nothing(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    state = tmp_path / "state.db"
    crawl("run", registry, akua, state, monkeypatch, capsys)
    before = len(akua.received)
    status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys)
    assert status == 0  # the invalid artifacts are still invalid, but known: nothing new broke
    assert akua.received[before:] == []  # not a single API request, let alone a write
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["invalid"] == 2 and finished["known_problems"] == 2
    assert finished["new_problems"] == 0
    assert finished["exists"] == len(world.versions)
    assert finished["imported"] == 0


def test_state_lost_but_akua_has_everything(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    crawl("run", registry, akua, tmp_path / "one.db", monkeypatch, capsys)
    count = len(akua.writes())
    status, events, _ = crawl("run", registry, akua, tmp_path / "two.db", monkeypatch, capsys)
    assert status == 1
    assert len(akua.writes()) == count  # found by oci_ref, then 409s: nothing created twice
    assert not akua.find_duplicates()
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["exists"] == len(world.versions)


def test_plan_writes_nothing_and_prints_the_plan(
    world: MixedWorld, registry_factory, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    monkeypatch.delenv("AKUA_API_TOKEN", raising=False)
    state = tmp_path / "state.db"
    status, _, out = crawl("plan", registry, None, state, monkeypatch, capsys)
    assert status == 1
    assert not state.exists()
    lines = out.splitlines()
    assert any(line.startswith("IMPORT") and " team/app 1.0.0 " in line for line in lines)
    assert any(line.startswith("CREATE-VERSION") and " team/app v1.2.0 1.2.0 " in line
               for line in lines)
    assert any(line.startswith("SKIPPED") and " team/app latest " in line for line in lines)
    assert any(line.startswith("INVALID") and "team/broken 1.1.0" in line for line in lines)
    assert any(line.startswith("SKIPPED") and "tools/image 1.0.0" in line for line in lines)


def test_selected_repositories_only(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    status, _, _ = crawl("run", registry, akua, tmp_path / "s.db", monkeypatch, capsys,
                         "--repository", "team/drafty")
    assert status == 0
    assert [p["name"] for p in akua.packages()] == ["team/drafty"]


def test_a_version_with_a_conflicting_tag_costs_nothing_in_akua_on_a_rerun(
    seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    from testkit.registry import package_annotations

    seeder.add_artifact("conf/app", ["1.0.0"],
                        annotations=package_annotations({"type": "object", "title": "A"}, None))
    seeder.add_artifact("conf/app", ["v1.0.0"],
                        annotations=package_annotations({"type": "object", "title": "B"}, None))
    registry = registry_factory()
    state = tmp_path / "state.db"
    status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys)
    assert status == 1  # the conflicting tag is a new problem
    first = {e["tag"]: e["outcome"] for e in events if e["event"].startswith("item.")}
    assert first == {"1.0.0": "imported", "v1.0.0": "rejected"}
    assert len(akua.writes()) == 1

    for _ in range(2):
        before = len(akua.received)
        status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys)
        assert status == 0  # the rejected tag is a known problem
        assert len(akua.received) == before  # no request at all to Akua
        finished = events[-1]
        assert finished["event"] == "run.finished"
        assert (finished["exists"], finished["rejected"], finished["known_problems"]) == (1, 1, 1)
        requests = finished["requests"]
        assert (requests["api_requests"], requests["registry_manifest_get"],
                requests["registry_manifest_head"]) == (0, 0, 1)  # one HEAD of v1.0.0
    assert len(akua.writes()) == 1

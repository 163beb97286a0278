"""Issue 12 end to end, through the CLI: real registries, the strict Akua double.

Two registries in one config with different filters and name rules; an unreachable
source beside a good one; collisions and over-long names refused before any write; a
changed name rule refused; three shards importing every version exactly once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from tests.plugins.cli import CliResult, child_command, child_environment, json_events, run_in_process

SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
          "properties": {"replicas": {"type": "integer"}}}


def seed(seeder: Seeder, repository: str, *tags: str) -> dict[str, str]:
    """One artifact per tag (distinct digests); returns tag -> digest."""
    return {
        tag: seeder.add_artifact(repository, [tag], annotations=package_annotations(
            SCHEMA, f"{repository} {tag}"), layer_bytes=f"{repository}:{tag}".encode())
        for tag in tags
    }


def crawl(command: str, akua: AkuaDouble | None, state: Path, monkeypatch, capsys, *extra: str,
          config: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    args = [command, "--state", str(state), "--log-format", "json", "--log-level", "debug",
            "--concurrency", "4", "--rate", "500", *extra]
    if config is not None:
        args += ["--config", str(config)]
    environ = dict(env or {})
    if akua is not None:
        environ["AKUA_API_TOKEN"] = akua.switches.token
        args += ["--api-url", akua.url]
    return run_in_process(args, monkeypatch, capsys, environ)


def imported(akua: AkuaDouble) -> dict[str, list[str]]:
    """Package name -> its versions' SemVers, as Akua holds them."""
    return {p["name"]: sorted(v["semver"] for v in akua.versions(p["id"])) for p in akua.packages()}


@pytest.fixture
def two_registries(tmp_path: Path, registry_factory):
    charts_root, apps_root = tmp_path / "charts-storage", tmp_path / "apps-storage"
    charts_root.mkdir()
    apps_root.mkdir()
    charts, apps = Seeder(charts_root), Seeder(apps_root)
    seed(charts, "charts/web", "1.0.0", "2.1.0", "3.0.0", "2.2.0-rc.1", "latest")
    seed(charts, "charts/db", "0.9.0", "1.5.0")
    seed(charts, "charts/tmp-scratch", "1.0.0")  # excluded
    seed(charts, "other/thing", "1.0.0")  # not included
    seed(apps, "acme/api", "v1.0.0", "v1.1.0-beta.1", "v1.1.0", "v1.2.0-nightly.3")
    seed(apps, "acme/worker", "2.0.0")
    seed(apps, "acme/hidden", "1.0.0")  # not in the repositories file
    return registry_factory(charts_root), registry_factory(apps_root)


def fleet_config(tmp_path: Path, charts, apps, *, extra_charts: str = "") -> Path:
    listing = tmp_path / "apps-repositories.txt"
    listing.write_text("# apps has a catalog, but we only want these\nacme/api\nacme/worker\n")
    config = tmp_path / "fleet.toml"
    config.write_text(f"""
prereleases = false

[[source]]
name = "charts"
registry = "{charts.host}"
plain_http = true
include = ["charts/**"]
exclude = ["charts/tmp-*"]
semver = ">=1.0.0 <3"
name_rule = "strip_prefix"
name_prefix = "charts/"
{extra_charts}

[[source]]
name = "apps"
registry = "{apps.host}"
plain_http = true
repositories_file = "{listing}"
prereleases = true
deny_tags = [".*-nightly.*"]
name_rule = "template"
name_template = "apps-{{last}}"
""")
    return config


def test_two_registries_filters_and_names(two_registries, akua: AkuaDouble, tmp_path: Path,
                                          monkeypatch, capsys) -> None:
    charts, apps = two_registries
    config = fleet_config(tmp_path, charts, apps)
    state = tmp_path / "state.db"

    plan = crawl("plan", None, state, monkeypatch, capsys, config=config)
    assert plan.status == 0, plan.stderr
    assert "charts/web -> web" in plan.stdout and "acme/api -> apps-api" in plan.stdout
    assert "tmp-scratch" not in plan.stdout and "acme/hidden" not in plan.stdout

    done = crawl("run", akua, state, monkeypatch, capsys, config=config)
    assert done.status == 0, done.stderr
    assert imported(akua) == {
        "web": ["1.0.0", "2.1.0"],  # 3.0.0 outside the range, 2.2.0-rc.1 a prerelease, latest not SemVer
        "db": ["1.5.0"],  # 0.9.0 outside the range
        "apps-api": ["1.0.0", "1.1.0", "1.1.0-beta.1"],  # the nightly denied
        "apps-worker": ["2.0.0"],
    }
    for package in akua.packages():
        host = charts.host if not package["name"].startswith("apps-") else apps.host
        assert package["source"]["oci_ref"].startswith(f"oci://{host}/")
    assert not akua.find_duplicates()

    finished = done.closing
    assert finished["filtered"] == 4  # 3.0.0, 2.2.0-rc.1, 0.9.0 (charts); v1.2.0-nightly.3 (apps)
    assert finished["filtered_repositories"] == 2  # charts/tmp-scratch, other/thing
    assert finished["sources"]["charts"]["imported"] == 3
    assert finished["sources"]["apps"]["imported"] == 4
    filtered = [e for e in done.events if e.get("reason", "").startswith("filtered")]
    assert filtered and all(e["level"] == "debug" for e in filtered)
    assert any("outside semver '>=1.0.0 <3'" in e["reason"] for e in filtered)
    # An excluded repository costs no tag list: 2 charts repositories + 2 listed apps ones, at
    # what one repository's tag list costs.
    single = crawl("plan", None, tmp_path / "single.db", monkeypatch, capsys, "--registry", apps.host,
                   "--plain-http", "--repository", "acme/worker")
    per_repository = single.closing["requests"]["registry_tags"]
    assert per_repository >= 1
    assert finished["requests"]["registry_tags"] == 4 * per_repository

    again = crawl("run", akua, state, monkeypatch, capsys, config=config)
    assert again.status == 0
    assert again.closing["imported"] == 0


def test_an_unreachable_source_does_not_stop_the_other(two_registries, akua: AkuaDouble,
                                                       tmp_path: Path, monkeypatch, capsys,
                                                       refused_host: str) -> None:
    charts, _apps = two_registries
    closed = refused_host
    config = tmp_path / "c.toml"
    config.write_text(f"""
[[source]]
name = "down"
registry = "{closed}"
plain_http = true
registry_timeout = 2

[[source]]
name = "charts"
registry = "{charts.host}"
plain_http = true
include = ["charts/web"]
""")
    done = crawl("run", akua, tmp_path / "state.db", monkeypatch, capsys, config=config)
    assert done.status == 1  # a source-level problem, not an abort
    assert sorted(imported(akua)["charts/web"]) == ["1.0.0", "2.1.0", "2.2.0-rc.1", "3.0.0"]
    finished = done.closing
    assert finished["sources"]["down"]["problem"].startswith(
        f"cannot list the repositories of {closed}")
    assert any("down" in p for p in finished["problems"])


def test_collisions_and_long_names_refused_before_any_write(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    seed(seeder, "team-a/app", "1.0.0")
    seed(seeder, "team-b/app", "1.0.0")
    long_repository = "deep/" + "x" * 130
    seed(seeder, long_repository, "1.0.0")
    seed(seeder, "team-a/fine", "1.0.0")
    registry = registry_factory()
    flags = ["--registry", registry.host, "--plain-http", "--name-rule", "last_segment"]
    state = tmp_path / "state.db"

    plan = crawl("plan", None, state, monkeypatch, capsys, *flags)
    assert plan.status == 1
    assert "package name collision" in plan.stdout and "over Akua's 120" in plan.stdout

    done = crawl("run", akua, state, monkeypatch, capsys, *flags)
    assert done.status == 1
    assert imported(akua) == {"fine": ["1.0.0"]}
    refused = {p.split(" ")[0] for p in done.closing["problems"]}
    assert {"team-a/app:-", "team-b/app:-", f"{long_repository}:-"} <= refused

    # A new repository colliding with a package already imported: only the newcomer is refused.
    seed(seeder, "team-c/fine", "1.0.0")
    done = crawl("run", akua, state, monkeypatch, capsys, *flags)
    assert imported(akua) == {"fine": ["1.0.0"]}
    refused = [p for p in done.closing["problems"] if "team-c/fine" in p]
    assert refused and "which" in refused[0] and "was imported under" in refused[0]
    assert not any(p.startswith("team-a/fine") for p in done.closing["problems"])

    # Listed explicitly, the same collision is a configuration error: exit 2, nothing contacted.
    listed = crawl("run", akua, state, monkeypatch, capsys, *flags,
                   "--repository", "team-a/app", "--repository", "team-b/app")
    assert listed.status == 2
    assert "package name collision" in listed.stderr


def test_a_changed_name_rule_is_refused(seeder: Seeder, registry_factory, akua: AkuaDouble,
                                        tmp_path: Path, monkeypatch, capsys) -> None:
    seed(seeder, "charts/app", "1.0.0")
    registry = registry_factory()
    flags = ["--registry", registry.host, "--plain-http"]
    state = tmp_path / "state.db"
    assert crawl("run", akua, state, monkeypatch, capsys, *flags).status == 0
    seed(seeder, "charts/app", "1.1.0")
    done = crawl("run", akua, state, monkeypatch, capsys, *flags, "--name-rule", "last_segment")
    assert done.status == 1
    assert imported(akua) == {"charts/app": ["1.0.0"]}  # no second package "app"
    problem = done.closing["problems"][0]
    assert "imported as 'charts/app'" in problem and "'app'" in problem
    # With an override keeping the old name, the new version goes into the same package.
    done = crawl("run", akua, state, monkeypatch, capsys, *flags, "--name-rule", "last_segment",
                 "--name-override", "charts/app=charts/app")
    assert done.status == 0
    assert imported(akua) == {"charts/app": ["1.0.0", "1.1.0"]}


def test_three_shards_import_every_version_exactly_once(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    expected: dict[str, list[str]] = {}
    # 36 repositories: the chance that the (port-dependent) hash leaves a shard empty is 3(2/3)^36,
    # about one in 700,000.
    for i in range(36):
        repository = f"team-{i % 5}/app-{i}"
        seed(seeder, repository, "1.0.0", "1.1.0")
        expected[repository] = ["1.0.0", "1.1.0"]
    registry = registry_factory()
    state = tmp_path / "state.db"
    writer_of: dict[str, int] = {}
    for index in range(3):
        before = len(akua.writes())
        done = crawl("run", akua, state, monkeypatch, capsys, "--registry", registry.host,
                     "--plain-http", "--shard", f"{index}/3")
        assert done.status == 0, done.stderr
        assert done.closing["shard"] == f"{index}/3"
        for write in akua.writes()[before:]:
            name = write.body.get("name") or next(
                p["name"] for p in akua.packages() if p["id"] == write.path.split("/")[3])
            assert writer_of.setdefault(name, index) == index, f"{name} written by two shards"
        assert (tmp_path / f"state.shard-{index}-of-3.db").exists()
    assert imported(akua) == expected  # every version, exactly once
    assert not akua.find_duplicates()
    assert len(akua.writes()) == 36 * 2
    assert sorted(set(writer_of.values())) == [0, 1, 2]  # every shard did a share
    # A re-run of any shard sends nothing.
    again = crawl("run", akua, state, monkeypatch, capsys, "--registry", registry.host,
                  "--plain-http", "--shard", "1/3")
    assert again.closing["imported"] == 0


def test_a_source_refusing_its_credentials_does_not_stop_the_other(
    two_registries, registry_factory, tmp_path: Path, akua: AkuaDouble, monkeypatch, capsys
) -> None:
    charts, _apps = two_registries
    locked_root = tmp_path / "locked-storage"
    locked_root.mkdir()
    seed(Seeder(locked_root), "team/app", "1.0.0")
    locked = registry_factory(locked_root, users={"robot": "the-right-password"})
    config = tmp_path / "c.toml"
    config.write_text(f"""
[[source]]
name = "locked"
registry = "{locked.host}"
plain_http = true
username = "robot"
password_env = "LOCKED_PASSWORD"

[[source]]
name = "charts"
registry = "{charts.host}"
plain_http = true
include = ["charts/db"]
""")
    done = crawl("run", akua, tmp_path / "state.db", monkeypatch, capsys, config=config,
                 env={"LOCKED_PASSWORD": "a-wrong-password"})
    assert done.status == 1
    assert imported(akua) == {"charts/db": ["0.9.0", "1.5.0"]}
    problem = done.closing["sources"]["locked"]["problem"]
    assert "refused the credentials of user 'robot'" in problem
    assert "a-wrong-password" not in done.stderr + done.stdout
    assert [e["source"] for e in done.named("source.failed")] == ["locked"]


def test_token_and_registry_password_from_files(seeder: Seeder, registry_factory, akua: AkuaDouble,
                                                 tmp_path: Path, monkeypatch, capsys) -> None:
    seed(seeder, "team/app", "1.0.0")
    registry = registry_factory(users={"robot": "pw-in-a-file"})
    token_file, password_file = tmp_path / "token", tmp_path / "password"
    token_file.write_text(akua.switches.token + "\n")
    password_file.write_text("pw-in-a-file\n")
    args = ["run", "--registry", registry.host, "--plain-http", "--username", "robot",
            "--api-url", akua.url, "--state", str(tmp_path / "s.db"), "--log-format", "json"]
    done = run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN_FILE": str(token_file),
                                                      "REGISTRY_PASSWORD_FILE": str(password_file)})
    assert done.status == 0, done.stderr
    assert imported(akua) == {"team/app": ["1.0.0"]}
    assert "pw-in-a-file" not in done.stderr and akua.switches.token not in done.stderr


@pytest.mark.slow
def test_three_shards_at_once_as_processes(seeder: Seeder, registry_factory, akua: AkuaDouble,
                                           tmp_path: Path) -> None:
    """The Indexed Job as it runs: three processes at the same time, shard from
    JOB_COMPLETION_INDEX and the count, each with its own state and lock."""
    expected: dict[str, list[str]] = {}
    for i in range(30):
        repository = f"team-{i % 4}/svc-{i}"
        seed(seeder, repository, "1.0.0", "2.0.0")
        expected[repository] = ["1.0.0", "2.0.0"]
    registry = registry_factory()
    args = child_command(["run", "--registry", registry.host, "--plain-http", "--api-url", akua.url,
                          "--state", str(tmp_path / "state.db"), "--log-format", "json",
                          "--rate", "300"])
    children = [
        subprocess.Popen(args, env=child_environment({
            "AKUA_API_TOKEN": akua.switches.token, "AKUA_CRAWLER_SHARD_COUNT": "3",
            "JOB_COMPLETION_INDEX": str(index)}),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for index in range(3)
    ]
    try:
        outputs = [child.communicate(timeout=120)[1] for child in children]
    finally:
        for child in children:  # a hung shard must not outlive the test
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    finished = [next(e for e in json_events(out) if e["event"] == "run.finished") for out in outputs]
    assert sorted(f["shard"] for f in finished) == ["0/3", "1/3", "2/3"]
    assert sum(f["imported"] for f in finished) == 60
    assert imported(akua) == expected
    assert not akua.find_duplicates()
    for index in range(3):
        assert (tmp_path / f"state.shard-{index}-of-3.db").exists()

"""Exactly once under faults: the CLI in process against the mixed world and a hostile double.

Each fault (429 in its three shapes, 5xx, answers lost after or before the
commit, latency) is injected alone and all together; the double's seed is
fixed so that every test meets its fault.  After the run Akua holds every
expected version exactly once, with its digest and schema, and a second run
sends nothing.  Then the refusals: a wrong token, a schema the server does
not accept, a registry that is down, a state held by another run, bad
configuration.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from crawler.cli import main
from crawler.config import Settings
from crawler.crawl import target_of
from crawler.state import StateStore
from testkit.akua_double import AkuaDouble
from testkit.world import MixedWorld, seed_mixed_registry
from tests.plugins.cli import run_in_process
from tests.tripwire import contacted

# Multi-process fault and kill runs: the slow lane (python -m pytest -m slow).
pytestmark = pytest.mark.slow

# The seeds are fixed so that each fault shows up and its hits are spread out: a
# seed that happens to fail one call five times in a row tests the retry budget,
# which is not what these tests are about.
FAULTS: dict[str, dict[str, Any]] = {
    "429-retry-after-seconds": {"force_429_rate": 0.3, "retry_after": "seconds", "seed": 7},
    "429-retry-after-date": {"force_429_rate": 0.3, "retry_after": "date", "seed": 7},
    "429-no-retry-after": {"force_429_rate": 0.3, "retry_after": None, "seed": 7},
    "5xx": {"error_5xx_rate": 0.2, "seed": 13},
    "drop-after-commit": {"drop_after_commit_rate": 0.3, "seed": 7},
    "drop-before-commit": {"drop_before_commit_rate": 0.3, "seed": 7},
    "latency": {"latency_s": 0.02, "seed": 7},
    "write-rate-limit": {"write_rate_limit": 8.0, "write_burst": 1},
    "all-together": {
        "force_429_rate": 0.1,
        "error_5xx_rate": 0.1,
        "drop_after_commit_rate": 0.2,
        "drop_before_commit_rate": 0.1,
        "latency_s": 0.01,
        "seed": 12,
    },
}


@pytest.fixture
def world(seeder) -> MixedWorld:
    return seed_mixed_registry(seeder)


def crawl(
    registry_host: str, akua: AkuaDouble, state: Path, monkeypatch, capsys, *extra: str,
    token: str | None = None,
) -> tuple[int, list[dict[str, Any]], str]:
    """One ``run`` in process; returns (exit status, JSON log events, stderr text)."""
    args = ["run", "--registry", registry_host, "--plain-http", "--state", str(state),
            "--api-url", akua.url, "--log-format", "json", "--concurrency", "4", "--rate", "500",
            "--no-docker-config"]
    done = run_in_process([*args, *extra], monkeypatch, capsys,
                          env={"AKUA_API_TOKEN": token or akua.switches.token})
    return done.status, done.events, done.stderr


def finished(events: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [e for e in events if e["event"] in ("run.finished", "run.stopped")]
    assert all(e["event"] == "run.finished" for e in ends)
    assert len(ends) == 1, events[-5:]
    return ends[0]


def expected_by_ref(registry_host: str, world: MixedWorld) -> dict[str, dict[str, tuple[str, Any]]]:
    out: dict[str, dict[str, tuple[str, Any]]] = {}
    for v in world.versions:
        out.setdefault(f"oci://{registry_host}/{v.repository}", {})[v.semver] = (v.digest, v.schema)
    return out


def assert_exactly_once(akua: AkuaDouble, expected: dict[str, dict[str, tuple[str, Any]]]) -> None:
    """One package per oci_ref, each expected version in it once, with its digest and schema."""
    assert not akua.find_duplicates(), akua.find_duplicates()
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for package in akua.packages():
        by_ref.setdefault(package["source"]["oci_ref"], []).append(package)
    assert set(by_ref) == set(expected)
    for ref, packages in by_ref.items():
        assert len(packages) == 1, f"{ref}: {len(packages)} packages"
        versions = akua.versions(packages[0]["id"])
        semvers = [v["semver"] for v in versions]
        assert len(semvers) == len(set(semvers)), f"{ref}: {semvers}"
        got = {v["semver"]: (v["ref"], v["input_schema"]) for v in versions}
        assert got == expected[ref], ref


def fault_statuses(akua: AkuaDouble) -> dict[str, int]:
    counts = akua.counts()
    return {
        "429": counts.get("429", 0),
        "5xx": sum(n for status, n in counts.items() if status.isdigit() and status.startswith("5")),
        "dropped": counts["dropped"],
    }


# -- faults, alone and together --------------------------------------------------


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_version_exactly_once_under_faults(
    name: str, world: MixedWorld, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    faults = FAULTS[name]
    akua = make_akua(**faults)
    registry = registry_factory()
    state = tmp_path / "state.db"

    status, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)

    assert status == 1  # the two invalid artifacts of the mixed world, nothing else
    end = finished(events)
    imported = end["imported"]
    # A try budget can run out by chance (30% of writes dropped, five tries: the seeded
    # faults can fall on one write's every try), and the item then ends "failed", as in
    # production: the next run, as cron would start it, finishes it, and nothing twice.
    for _ in range(2):
        if end["failed"] == 0:
            break
        assert all("gave up after" in problem for problem in end.get("problems", [])
                   if "invalid" not in problem), end.get("problems")
        _, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
        end = finished(events)
        imported += end["imported"]
    assert end["failed"] == 0 and end["rejected"] == 0, end.get("problems")
    assert imported == len(world.versions)
    assert_exactly_once(akua, expected_by_ref(registry.host, world))
    # Every commit in the double, a dropped answer's included, is one expected version.
    assert len(akua.writes()) == len(world.versions)
    # The fault did happen (the seed is fixed so that it does).
    seen = fault_statuses(akua)
    if "force_429_rate" in faults or "write_rate_limit" in faults:
        assert seen["429"] > 0
    if "error_5xx_rate" in faults:
        assert seen["5xx"] > 0
    if "drop_after_commit_rate" in faults or "drop_before_commit_rate" in faults:
        assert seen["dropped"] > 0
    if name == "all-together":
        assert all(seen.values()), seen

    before = len(akua.received)
    status, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
    assert status == 0  # the invalid artifacts are known by now
    assert akua.received[before:] == []  # settled by the state: not one request, let alone a write
    assert finished(events)["exists"] == len(world.versions)


def test_drop_after_commit_on_every_write_still_once(
    world: MixedWorld, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Every write committed and every answer lost: only the look-before-resend saves the day."""
    akua = make_akua(seed=3, drop_after_commit_rate=1.0)
    registry = registry_factory()
    status, events, _ = crawl(registry.host, akua, tmp_path / "s.db", monkeypatch, capsys)
    assert status == 1
    end = finished(events)
    assert end["imported"] == len(world.versions) and end["failed"] == 0
    assert len(akua.writes()) == len(world.versions)
    assert akua.counts()["dropped"] >= len(world.versions)
    assert_exactly_once(akua, expected_by_ref(registry.host, world))


# -- identity without unique names, state lost ---------------------------------------


def test_unique_names_off_and_state_deleted_still_one_package_per_ref(
    world: MixedWorld, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    # No 409 on import: only the crawler's own lookup by oci_ref and the
    # idempotency key stand between a resend and a second package.
    akua = make_akua(unique_names=False, seed=11, drop_after_commit_rate=0.3)
    registry = registry_factory()
    state = tmp_path / "state.db"
    status, _, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
    assert status == 1
    assert akua.counts()["dropped"] > 0
    writes = len(akua.writes())
    assert writes == len(world.versions)

    for suffix in ("", "-wal", "-shm"):
        state.with_name(state.name + suffix).unlink(missing_ok=True)
    status, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
    assert status == 1
    assert len(akua.writes()) == writes  # nothing created twice
    assert finished(events)["exists"] == len(world.versions)
    assert_exactly_once(akua, expected_by_ref(registry.host, world))


# -- what Akua already has --------------------------------------------------------------


def test_preexisting_packages_and_versions(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    host = registry.host
    app = [v for v in world.versions if v.repository == "team/app"]
    drafty = next(v for v in world.versions if v.repository == "team/drafty")
    other_digest = "sha256:" + "0" * 64
    # team/app: 1.0.0 as published, 1.1.0 with another digest; team/drafty under another name.
    app_id = akua.add_package(
        "team/app", f"oci://{host}/team/app",
        [(app[0].semver, app[0].digest, app[0].schema), (app[1].semver, other_digest, app[1].schema)],
    )
    akua.add_package("drafty-by-hand", f"oci://{host}/team/drafty",
                     [(drafty.semver, drafty.digest, drafty.schema)])

    status, events, _ = crawl(host, akua, tmp_path / "s.db", monkeypatch, capsys)

    assert status == 1
    items = {(e["repository"], e["semver"]): e for e in events if e["event"].startswith("item.")
             and e.get("semver")}
    assert items[("team/app", app[0].semver)]["outcome"] == "exists"
    assert items[("team/drafty", drafty.semver)]["outcome"] == "exists"
    rejected = items[("team/app", app[1].semver)]
    assert rejected["outcome"] == "rejected"
    assert f"version {app[1].semver} exists with a different digest" in rejected["reason"]
    assert other_digest in rejected["reason"] and app[1].digest in rejected["reason"]
    # The rest of team/app went into the package that was there; nothing was duplicated.
    assert not akua.find_duplicates()
    assert len([p for p in akua.packages() if p["source"]["oci_ref"] == f"oci://{host}/team/app"]) == 1
    got = {v["semver"]: v["ref"] for v in akua.versions(app_id)}
    assert got == {v.semver: (other_digest if v is app[1] else v.digest) for v in app}
    end = finished(events)
    assert end["rejected"] == 1 and end["exists"] == 2
    assert end["imported"] == len(world.versions) - 3


def test_name_taken_by_a_package_from_another_registry_is_rejected(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    drafty = next(v for v in world.versions if v.repository == "team/drafty")
    foreign = "oci://elsewhere.example/team/drafty"
    foreign_id = akua.add_package("team/drafty", foreign, [("9.9.9", drafty.digest, drafty.schema)])

    status, events, _ = crawl(registry.host, akua, tmp_path / "s.db", monkeypatch, capsys)

    assert status == 1
    rejected = [e for e in events if e["event"] == "item.rejected"]
    assert [(e["repository"], e["semver"]) for e in rejected] == [("team/drafty", drafty.semver)]
    assert f"package name 'team/drafty' is taken in Akua by {foreign_id} from {foreign}" in (
        rejected[0]["reason"])
    # The foreign package is untouched; everything else went in once.
    assert [v["semver"] for v in akua.versions(foreign_id)] == ["9.9.9"]
    expected = expected_by_ref(registry.host, world)
    del expected[f"oci://{registry.host}/team/drafty"]
    expected[foreign] = {"9.9.9": (drafty.digest, drafty.schema)}
    assert_exactly_once(akua, expected)


# -- refusals ---------------------------------------------------------------------------


def test_wrong_token_aborts_after_the_first_refusal(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    status, events, _ = crawl(registry.host, akua, tmp_path / "s.db", monkeypatch, capsys,
                              token="sk_akua_not_the_right_one")
    assert status == 3
    aborted = next(e for e in events if e["event"] == "run.aborted")
    assert "refused the token" in aborted["reason"]
    received = akua.received
    assert received and all(r.status == 401 for r in received)
    assert len(received) <= 4  # at most one per worker, not one per item
    assert akua.packages() == []


def test_server_side_verification_rejects_one_item_and_the_rest_goes_on(
    world: MixedWorld, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    host = registry.host
    published = {(f"oci://{host}/{v.repository}", v.semver): (v.digest, v.schema)
                 for v in world.versions}
    victim = next(v for v in world.versions if v.repository == "team/app" and v.semver == "1.1.0")
    key = (f"oci://{host}/team/app", "1.1.0")
    published[key] = (victim.digest, {**victim.schema, "title": "what the server expects"})
    akua = make_akua(expected=published)
    state = tmp_path / "s.db"

    status, events, _ = crawl(host, akua, state, monkeypatch, capsys)

    assert status == 1
    rejected = [e for e in events if e["event"] == "item.rejected"]
    assert [(e["repository"], e["semver"]) for e in rejected] == [("team/app", "1.1.0")]
    assert "HTTP 422" in rejected[0]["reason"]
    assert "input_schema does not match the published artifact" in rejected[0]["reason"]
    expected = expected_by_ref(host, world)
    del expected[key[0]]["1.1.0"]
    assert_exactly_once(akua, expected)

    # The next run looks at the rejected tag (HEAD) and, unchanged, leaves it alone.
    before = len(akua.received)
    status, events, _ = crawl(host, akua, state, monkeypatch, capsys)
    assert status == 0  # the rejected version and the invalid artifacts are known problems
    assert finished(events)["known_problems"] == 3
    assert akua.received[before:] == []


def test_registry_down_aborts_and_keeps_the_state(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys,
    refused_host: str,
) -> None:
    registry = registry_factory()
    state = tmp_path / "s.db"
    assert crawl(registry.host, akua, state, monkeypatch, capsys)[0] == 1
    with StateStore(state, target=target_of(Settings(registry=registry.host, api_url=akua.url))) as s:
        recorded = s.count_items()
    assert recorded > 0
    before = len(akua.received)

    down = refused_host
    status, events, _ = crawl(down, akua, state, monkeypatch, capsys)

    assert status == 3
    aborted = next(e for e in events if e["event"] == "run.aborted")
    assert f"cannot list the repositories of {down}" in aborted["reason"]
    assert akua.received[before:] == []
    # The state is intact: the same rows, and a run against the live registry has nothing to do.
    with StateStore(state, target=target_of(Settings(registry=registry.host, api_url=akua.url))) as s:
        assert s.count_items() == recorded
    status, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
    assert status == 0  # only known problems
    assert akua.received[before:] == []
    assert finished(events)["exists"] == len(world.versions)


def test_second_run_on_a_locked_state_exits_4(
    world: MixedWorld, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    registry = registry_factory()
    state = tmp_path / "s.db"
    target = target_of(Settings(registry=registry.host, api_url=akua.url))
    with StateStore(state, target=target):  # another run, as far as the CLI can tell
        status, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys)
    assert status == 4
    aborted = next(e for e in events if e["event"] == "run.aborted")
    assert "in use by another akua-crawler run" in aborted["reason"]
    assert str(state) in aborted["reason"]
    assert akua.received == []
    assert finished(events)["exit_status"] == 4
    # Released: the same command now runs.
    assert crawl(registry.host, akua, state, monkeypatch, capsys)[0] == 1
    assert_exactly_once(akua, expected_by_ref(registry.host, world))


# -- bad configuration: exit 2 before anything is contacted -----------------------------




BAD_CONFIGS: dict[str, tuple[list[str], dict[str, str | None], str]] = {
    "no token": ([], {"AKUA_API_TOKEN": None}, "AKUA_API_TOKEN: not set"),
    "token with a space": ([], {"AKUA_API_TOKEN": "sk abc"}, "whitespace"),
    "concurrency 0": (["--concurrency", "0"], {}, "--concurrency"),
    "rate not a number": (["--rate", "fast"], {}, "--rate"),
    "api url not http": (["--api-url", "ftp://127.0.0.1/v1"], {}, "not an http(s) URL"),
    "plain http to a remote api": (["--api-url", "http://akua.example.com/v1"], {}, "plain HTTP"),
    "user without password": (["--username", "robot"], {"REGISTRY_PASSWORD": None},
                              "REGISTRY_PASSWORD is empty"),
    "bad repository": (["--repository", "Team/App"], {}, "not a valid OCI repository name"),
    "bad log level": (["--log-level", "loud"], {}, "--log-level"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration_exits_2_before_contact(
    case: str, akua: AkuaDouble, tripwire: socket.socket, tmp_path: Path, monkeypatch, capsys
) -> None:
    extra, env, fragment = BAD_CONFIGS[case]
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    host = f"127.0.0.1:{tripwire.getsockname()[1]}"
    state = tmp_path / "s.db"
    args = ["run", "--registry", host, "--plain-http", "--state", str(state), "--api-url", akua.url,
            "--log-format", "json", *extra]
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2
    assert "configuration error" in err and fragment in err
    assert not contacted(tripwire)
    assert akua.received == []
    assert not state.exists()


@pytest.mark.parametrize("case", ["token key", "unknown key", "not toml"])
def test_bad_config_file_exits_2_before_contact(
    case: str, akua: AkuaDouble, tripwire: socket.socket, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    text = {"token key": 'token = "sk_in_a_file"\n', "unknown key": "concurency = 4\n",
            "not toml": "concurrency = \n"}[case]
    config = tmp_path / "crawler.toml"
    config.write_text(text)
    host = f"127.0.0.1:{tripwire.getsockname()[1]}"
    status = main(["run", "--config", str(config), "--registry", host, "--plain-http",
                   "--state", str(tmp_path / "s.db"), "--api-url", akua.url])
    err = capsys.readouterr().err
    assert status == 2
    assert f"config file {config}" in err
    assert "sk_in_a_file" not in err
    assert not contacted(tripwire)
    assert akua.received == []


@pytest.mark.parametrize("case", ["not sqlite", "another target"])
def test_unusable_state_exits_2_before_contact(
    case: str, akua: AkuaDouble, tripwire: socket.socket, tmp_path: Path, monkeypatch, capsys
) -> None:
    state = tmp_path / "s.db"
    host = f"127.0.0.1:{tripwire.getsockname()[1]}"
    if case == "not sqlite":
        state.write_bytes(b"this is no database, " * 200)
    else:
        with StateStore(state, target=target_of(Settings(registry=host, api_url="https://other/v1"))):
            pass
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    status = main(["run", "--registry", host, "--plain-http", "--state", str(state),
                   "--api-url", akua.url, "--log-format", "json"])
    err = capsys.readouterr().err
    assert status == 2
    assert "state" in err
    assert not contacted(tripwire)
    assert akua.received == []


def test_import_lost_then_retries_exhausted_does_not_import_the_package_twice(
    seeder, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    """No unique names: the first import commits, its answer is lost, every resend fails.

    The version is left ``failed`` for the next run; the next version of the
    same repository must then find the package that was created, not import
    a second one under another idempotency key.  The seed is chosen for that
    sequence with one worker; the test checks the sequence happened.
    """
    schema = {"type": "object"}
    digests = [seeder.add_artifact("team/lost", [semver], annotations={
        "dev.akua.package.input-schema": json.dumps(schema)}) for semver in ("1.0.0", "1.1.0")]
    registry = registry_factory()
    akua = make_akua(unique_names=False, seed=143, error_5xx_rate=0.5, drop_after_commit_rate=0.5)
    state = tmp_path / "s.db"

    _, events, _ = crawl(registry.host, akua, state, monkeypatch, capsys, "--concurrency", "1")

    imports = [r for r in akua.received if r.path == "/v1/packages:import"
               and r.body["version"]["semver"] == "1.0.0"]
    assert imports[0].status is None and imports[0].created_id is not None  # committed, answer lost
    assert len(imports) == 5 and all(r.status is not None and r.status >= 500 for r in imports[1:])
    failed = [e for e in events if e["event"] == "item.failed"]
    assert [(e["repository"], e["semver"]) for e in failed] == [("team/lost", "1.0.0")]

    assert not akua.find_duplicates(), akua.find_duplicates()
    assert len(akua.packages()) == 1
    package_id = akua.packages()[0]["id"]
    assert {v["semver"]: v["ref"] for v in akua.versions(package_id)} == {
        "1.0.0": digests[0], "1.1.0": digests[1]}

    # The next run settles the failed version against what Akua has: nothing new is written.
    akua.configure(error_5xx_rate=0.0, drop_after_commit_rate=0.0)
    writes = len(akua.writes())
    assert crawl(registry.host, akua, state, monkeypatch, capsys)[0] == 0
    assert len(akua.writes()) == writes
    assert not akua.find_duplicates()

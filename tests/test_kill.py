"""Killed and resumed: the crawler as a real process, the Akua double in this one.

The double's store lives in the test process, so it survives every kill.
The crawler is started, SIGKILLed once the double has received a random
(seeded) number of further requests, started again, and so on; then the
faults are turned off and a last run completes.  Whatever the kill moments
were, Akua ends with every version exactly once, one package per repository.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.akua_double import AkuaDouble
from testkit.registry import LocalRegistry, Seeder, package_annotations
from tests.plugins.cli import ROOT, child_command, child_environment

# Multi-process fault and kill runs: the slow lane (python -m pytest -m slow).
pytestmark = pytest.mark.slow

REPOSITORIES = 8
VERSIONS = 6
KILLS = 5
FAULTS = {"error_5xx_rate": 0.1, "drop_after_commit_rate": 0.1, "latency_s": 0.01}
NO_FAULTS = {"error_5xx_rate": 0.0, "drop_after_commit_rate": 0.0, "latency_s": 0.0}
POLL_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Published:
    repository: str
    semver: str
    digest: str
    schema: dict[str, Any]


def seed_grid(seeder: Seeder) -> list[Published]:
    out = []
    for r in range(REPOSITORIES):
        repository = f"kill/repo-{r}"
        for v in range(VERSIONS):
            semver = f"1.{v}.0"
            schema = {"type": "object", "title": f"{repository} {semver}",
                      "properties": {"n": {"type": "integer", "default": v}}}
            digest = seeder.add_artifact(repository, [semver],
                                         annotations=package_annotations(schema, None))
            out.append(Published(repository, semver, digest, schema))
    return out


def start(registry: LocalRegistry, akua: AkuaDouble, state: Path, log: Path) -> subprocess.Popen[bytes]:
    env = child_environment({"AKUA_API_TOKEN": akua.switches.token})
    args = child_command(["run", "--registry", registry.host, "--plain-http",
                          "--state", str(state), "--api-url", akua.url, "--log-format", "json",
                          "--concurrency", "4", "--rate", "200", "--no-docker-config"])
    with open(log, "wb") as err:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> bool:
    """Bounded poll: True once ``condition`` holds, False if the process ended first."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.002)
    process.kill()
    process.wait()
    pytest.fail(f"nothing happened within {POLL_DEADLINE_S:g}s")


def events(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def assert_exactly_once(akua: AkuaDouble, registry: LocalRegistry, grid: list[Published]) -> None:
    assert not akua.find_duplicates(), akua.find_duplicates()
    packages = akua.packages()
    refs = [p["source"]["oci_ref"] for p in packages]
    assert sorted(refs) == sorted({f"oci://{registry.host}/{p.repository}" for p in grid})
    for package in packages:
        name = package["source"]["oci_ref"].removeprefix(f"oci://{registry.host}/")
        got = [(v["semver"], v["ref"], v["input_schema"]) for v in akua.versions(package["id"])]
        want = [(p.semver, p.digest, p.schema) for p in grid if p.repository == name]
        assert sorted(got, key=str) == sorted(want, key=str), name
    # Each commit in the double is one published version: nothing was written twice.
    assert len(akua.writes()) == len(grid)


@pytest.mark.parametrize("unique_names", [True, False], ids=["unique-names", "no-unique-names"])
def test_sigkill_at_random_moments_then_resume_exactly_once(
    unique_names: bool, seeder: Seeder, registry_factory, make_akua, tmp_path: Path
) -> None:
    grid = seed_grid(seeder)
    registry = registry_factory()
    akua = make_akua(unique_names=unique_names, seed=5, **FAULTS)
    state = tmp_path / "state.db"
    rng = random.Random(20240611 + unique_names)
    # Per kill: requests waited for, requests the double had seen, commits so far, exit status.
    moments: list[tuple[int, int, int, int]] = []

    for kill in range(KILLS):
        base = len(akua.received)
        target = rng.randint(2, 12)
        process = start(registry, akua, state, tmp_path / f"run-{kill}.log")
        reached = wait_for(lambda n=base + target: len(akua.received) >= n, process)
        if reached:
            process.send_signal(signal.SIGKILL)
        status = process.wait(timeout=30)
        moments.append((target, len(akua.received) - base, akua.counts()["writes"], status))
        assert not akua.find_duplicates(), (moments, akua.find_duplicates())
    print("kill moments (requests waited for, seen, commits so far, status):", moments)
    killed = [m for m in moments if m[3] == -signal.SIGKILL]
    assert len(killed) >= KILLS - 1, moments  # the kills landed while work was left
    assert akua.counts()["writes"] < len(grid)  # and not all of it was done before the last run

    akua.configure(**NO_FAULTS)
    process = start(registry, akua, state, tmp_path / "final.log")
    assert process.wait(timeout=120) == 0, (tmp_path / "final.log").read_text()[-3000:]
    end = next(e for e in events(tmp_path / "final.log") if e["event"] == "run.finished")
    assert end["imported"] + end["exists"] == len(grid)
    assert end["failed"] == end["rejected"] == end["invalid"] == 0
    assert_exactly_once(akua, registry, grid)
    print("final run:", {k: end[k] for k in ("imported", "exists")}, "double:", akua.counts())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_cleanly_and_the_next_run_writes_only_what_is_missing(
    signum: signal.Signals, seeder: Seeder, registry_factory, make_akua, tmp_path: Path
) -> None:
    grid = seed_grid(seeder)
    registry = registry_factory()
    akua = make_akua(latency_s=0.02)
    state = tmp_path / "state.db"

    process = start(registry, akua, state, tmp_path / "stopped.log")
    assert wait_for(lambda: len(akua.writes()) >= 3, process), "the run ended before any write"
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    logged = events(tmp_path / "stopped.log")
    assert any(e["event"] == "run.stopping" and e["signal"] == signum.name for e in logged)
    stopped = [e for e in logged if e["event"] in ("run.stopped", "run.finished")]
    assert [e["event"] for e in stopped] == ["run.finished"]  # exactly one closing event
    assert stopped[0]["exit_status"] == 128 + signum and stopped[0]["interrupted"] == signum.name
    written = len(akua.writes())
    assert 3 <= written < len(grid)

    before = len(akua.received)
    process = start(registry, akua, state, tmp_path / "final.log")
    assert process.wait(timeout=120) == 0, (tmp_path / "final.log").read_text()[-3000:]
    final = akua.received[before:]
    # The stopped run recorded every write Akua confirmed: no resend, not even one meeting a 409.
    assert [r for r in final if r.status == 409] == []
    assert len([r for r in final if r.created_id is not None]) == len(grid) - written
    end = next(e for e in events(tmp_path / "final.log") if e["event"] == "run.finished")
    assert end["imported"] == len(grid) - written
    assert end["exists"] == written
    assert_exactly_once(akua, registry, grid)

"""The state failing under a run, for real: a full disk, another process holding its
lock (issue 8.6); plan on a read-only mount without --api-url (8.12).

A small tmpfs is mounted for each test (the tests need root, as in the CI container).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema

REPOSITORIES = ("team/app", "team/db", "team/web")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"these tests mount a small tmpfs: run them as root (CAP_SYS_ADMIN): {done.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def seed(seeder: Seeder, versions: tuple[str, ...] = ("1.0.0", "1.1.0")) -> None:
    for repository in REPOSITORIES:
        for semver in versions:
            seeder.add_artifact(repository, [semver],
                                annotations=package_annotations(app_schema(semver), None))


def args(command: str, registry, state: Path, akua: AkuaDouble | None) -> list[str]:
    line = [command, "--registry", registry.host, "--plain-http", "--state", str(state),
            "--log-format", "json", "--rate", "500", "--concurrency", "1"]
    return line + (["--api-url", akua.url] if akua is not None else [])


def on_first_import(akua: AkuaDouble, fault: Callable[[], None]) -> None:
    """Run ``fault`` in the double right before it answers the first import (a real write
    in Akua the crawler then cannot record)."""
    handle = akua.handle
    fired = []

    def handle_then_fault(request: Any) -> Any:
        reply = handle(request)
        if not fired and request.target.split("?")[0].endswith("packages:import"):
            fired.append(True)
            fault()
        return reply

    akua.handle = handle_then_fault  # type: ignore[method-assign]


def fill(mount: Path) -> None:
    with open(mount / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def assert_clean_abort(result, reason: str) -> None:
    assert result.status == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [aborted] = result.named("run.aborted")
    assert "cannot write the state" in aborted["reason"] and reason in aborted["reason"]
    closing = result.closing
    assert closing["event"] == "run.finished" and closing["exit_status"] == 3
    assert "cannot write the state" in closing["abort_reason"]


def assert_once_after_rerun(registry, akua: AkuaDouble, state: Path, cli, versions: int = 2) -> None:
    again = cli(args("run", registry, state, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert again.status == 0, again.stderr[-3000:]
    assert {p["name"] for p in akua.packages()} == set(REPOSITORIES)
    assert len(akua.writes()) == versions * len(REPOSITORIES)  # each version written once, ever


def test_a_full_disk_stops_the_run_cleanly_and_nothing_is_lost(
    tmpfs: Path, seeder, registry_factory, make_akua, cli
) -> None:
    versions = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
    seed(seeder, versions)
    registry = registry_factory()
    state = tmpfs / "state.db"
    # 50 ms away: every package's next write waits for its last answer, so the run can
    # stop before the last ones whatever the machine's load (at 0 ms, with all three
    # packages in flight, a loaded machine sometimes wrote all six of two versions each
    # before the writer met the full disk).
    akua: AkuaDouble = make_akua(latency_s=0.05)
    on_first_import(akua, lambda: fill(tmpfs))
    result = cli(args("run", registry, state, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert_clean_abort(result, "full")
    assert 1 <= len(akua.writes()) < len(versions) * len(REPOSITORIES)  # stopped taking work
    (tmpfs / "filler").unlink()
    assert_once_after_rerun(registry, akua, state, cli, len(versions))


@pytest.mark.slow  # a second process holds the lock through SQLite's busy timeout
def test_state_locked_by_another_process_stops_cleanly(
    tmp_path: Path, seeder, registry_factory, akua: AkuaDouble, cli
) -> None:
    seed(seeder)
    registry = registry_factory()
    state = tmp_path / "state.db"
    holders: list[subprocess.Popen[str]] = []

    def lock() -> None:
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sqlite3, sys\n"
             f"db = sqlite3.connect({str(state)!r}, isolation_level=None)\n"
             "db.execute('BEGIN EXCLUSIVE')\n"
             "print('locked', flush=True)\n"
             "sys.stdin.read()\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"

    on_first_import(akua, lock)
    try:
        result = cli(args("run", registry, state, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    finally:
        for holder in holders:
            holder.communicate("", timeout=30)
    assert_clean_abort(result, "locked")
    assert_once_after_rerun(registry, akua, state, cli)


def test_plan_reads_a_state_on_a_read_only_mount_without_the_api_url(
    tmpfs: Path, seeder, registry_factory, akua: AkuaDouble, cli
) -> None:
    seed(seeder)
    registry = registry_factory()
    state = tmpfs / "state.db"
    first = cli(args("run", registry, state, akua), env={"AKUA_API_TOKEN": akua.switches.token})
    assert first.status == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True, timeout=30)
    plan = cli(args("plan", registry, state, None))  # the default --api-url, not the run's
    assert plan.status == 0, plan.stderr[-3000:]
    done = [line for line in plan.stdout.splitlines() if line.startswith("DONE")]
    assert len(done) == 2 * len(REPOSITORIES)
    assert sorted(p.name for p in tmpfs.iterdir()) == ["state.db", "state.db.lock"]


def fill_leaving(mount: Path, free: int) -> None:
    """Fill the tmpfs until ``free`` bytes (about) are left."""
    stat = os.statvfs(mount)
    size = max(stat.f_bavail * stat.f_frsize - free, 0)
    with open(mount / "filler", "wb") as filler:
        filler.write(b"\0" * size)


def test_a_full_disk_under_a_fresh_state_stops_cleanly(
    tmpfs: Path, seeder, registry_factory, akua: AkuaDouble, cli
) -> None:
    # REVIEW B2: the first writes of a new state (its schema, its target, the run's row)
    # on a disk with little room left: exit 3 "cannot write the state", never a bug.
    seed(seeder)
    registry = registry_factory()
    state = tmpfs / "state.db"
    statuses: dict[int, int] = {}
    before_the_crawl = 0
    for free in range(0, 160 * 1024, 4096):
        for leftover in tmpfs.iterdir():
            leftover.unlink()
        fill_leaving(tmpfs, free)
        result = cli(args("run", registry, state, akua), env={"AKUA_API_TOKEN": akua.switches.token})
        statuses[free] = result.status
        assert "Traceback" not in result.stderr, (free, result.stderr[-3000:])
        closing = result.closing
        assert closing["event"] == "run.finished" and closing["exit_status"] == result.status
        assert len(result.named("run.finished")) == 1
        if result.status == 3:
            assert_clean_abort(result, "full")
            before_the_crawl += "nothing was crawled" in closing["abort_reason"]
        else:
            assert result.status == 0, (free, result.stderr[-3000:])
    assert before_the_crawl >= 1, statuses  # the fresh state's first writes were hit
    assert 0 in statuses.values(), statuses  # and with room enough the run succeeds

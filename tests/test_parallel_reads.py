"""Reads run in parallel across the versions of one repository, writes stay in order."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from crawler.cli import main
from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema
from tests.gating_proxy import GatingProxy

IN_FLIGHT = 4
VERSIONS = [f"1.{minor}.0" for minor in range(12)]


def seed_one_repository(seeder: Seeder) -> None:
    for semver in VERSIONS:
        seeder.add_artifact("team/app", [semver], annotations=package_annotations(app_schema(semver), None))


def test_one_repository_reads_its_manifests_in_parallel(
    seeder: Seeder, registry_factory, tmp_path: Path, capsys
) -> None:
    seed_one_repository(seeder)
    registry = registry_factory()
    with GatingProxy(registry.host, gate=IN_FLIGHT) as proxy:
        status = main(["plan", "--registry", proxy.host, "--plain-http", "--state",
                       str(tmp_path / "state.db"), "--log-format", "json",
                       "--registry-in-flight", str(IN_FLIGHT)])
    out, _ = capsys.readouterr()
    assert status == 0
    # The registry's whole in-flight budget went to this one repository's manifests.
    assert proxy.max_in_flight == IN_FLIGHT
    assert proxy.manifest_gets == len(VERSIONS)
    lines = [line.split() for line in out.splitlines() if not line.startswith("TOTAL")]
    assert [(line[0], line[3]) for line in lines] == [("IMPORT", VERSIONS[0])] + [
        ("CREATE-VERSION", semver) for semver in VERSIONS[1:]
    ]


def test_reads_ahead_still_write_in_ascending_order(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    seed_one_repository(seeder)
    registry = registry_factory()
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    with GatingProxy(registry.host, gate=IN_FLIGHT) as proxy:
        status = main(["run", "--registry", proxy.host, "--plain-http", "--state",
                       str(tmp_path / "state.db"), "--log-format", "json", "--api-url", akua.url,
                       "--rate", "500", "--registry-in-flight", str(IN_FLIGHT)])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert proxy.max_in_flight == IN_FLIGHT
    sent = [(r.path, r.body) for r in akua.writes()]
    assert sent[0][0].endswith("packages:import")
    assert sent[0][1]["version"]["semver"] == VERSIONS[0]
    assert [body["semver"] for _, body in sent[1:]] == VERSIONS[1:]
    finished = [json.loads(line) for line in err.splitlines() if '"run.finished"' in line]
    assert finished[0]["imported"] == len(VERSIONS)


def test_a_repositorys_first_import_waits_only_for_its_own_first_manifest(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    seed_one_repository(seeder)
    registry = registry_factory()
    imported = threading.Event()
    handle = akua.handle

    def handle_and_tell(request: Any) -> Any:
        reply = handle(request)
        if request.target.split("?")[0].endswith("packages:import"):
            imported.set()
        return reply

    akua.handle = handle_and_tell  # type: ignore[method-assign]
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    # Every manifest but the lowest version's is held until Akua has the import.
    with GatingProxy(registry.host, hold_until=imported, free_tag=VERSIONS[0]) as proxy:
        status = main(["run", "--registry", proxy.host, "--plain-http", "--state",
                       str(tmp_path / "state.db"), "--log-format", "json", "--api-url", akua.url,
                       "--rate", "500", "--registry-in-flight", str(IN_FLIGHT)])
    capsys.readouterr()
    assert status == 0
    assert proxy.held == len(VERSIONS) - 1
    assert not proxy.held_too_long  # the import came while later manifests were still held
    assert [body["semver"] for _, body in [(r.path, r.body) for r in akua.writes()][1:]] == VERSIONS[1:]


def test_packages_write_at_once_beyond_the_read_ahead_slots(
    seeder: Seeder, registry_factory, make_akua, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Writes in flight follow rate x latency, not the read-ahead buffer: with 4 slots
    (concurrency 1, one registry request at a time) and Akua 0.3 s away, at 100 writes a
    second, far more than 4 packages are written at once (Little's law: 30)."""
    for index in range(12):
        for semver in ("1.0.0", "1.1.0"):
            seeder.add_artifact(f"team/app{index:02d}", [semver],
                                annotations=package_annotations(app_schema(semver), None))
    registry = registry_factory()
    akua: AkuaDouble = make_akua(latency_s=0.3)
    lock = threading.Lock()
    now = peak = 0
    handle = akua.handle

    def handle_counting(request: Any) -> Any:
        nonlocal now, peak
        if request.method != "POST":
            return handle(request)
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            return handle(request)
        finally:
            with lock:
                now -= 1

    akua.handle = handle_counting  # type: ignore[method-assign]
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    status = main(["run", "--registry", registry.host, "--plain-http", "--state",
                   str(tmp_path / "state.db"), "--log-format", "json", "--api-url", akua.url,
                   "--rate", "100", "--concurrency", "1", "--registry-in-flight", "1"])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert len(akua.writes()) == 24
    assert peak >= 8  # the read-ahead buffer (4 slots) would cap it at 4

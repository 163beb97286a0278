from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crawler.errors import ConfigError, StateLocked
from crawler.outcomes import Outcome
from crawler.state import ItemRecord, PackageRecord, StateStore

TARGET = "http://127.0.0.1:1/v1 workspace=-"


def record(tag: str, digest: str = "sha256:" + "a" * 64, outcome: Outcome = Outcome.IMPORTED):
    return ItemRecord(registry="r:1", repository="team/app", tag=tag, digest=digest,
                      semver=tag.lstrip("v"), outcome=outcome, package_id="pkg_1")


def test_round_trip_and_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, target=TARGET) as store:
        store.write([record("1.0.0")], [PackageRecord("oci://r:1/team/app", "pkg_1")])
        store.write([record("1.0.0", digest="sha256:" + "b" * 64, outcome=Outcome.INVALID)])
    with StateStore(path, target=TARGET) as store:
        rows = store.repository_items("r:1", "team/app")["1.0.0"]
        assert [r.outcome for r in rows] == [Outcome.INVALID, Outcome.IMPORTED]
        assert store.package_id("oci://r:1/team/app") == "pkg_1"
        store.write([], [PackageRecord("oci://r:1/team/app", None)])
        assert store.package_id("oci://r:1/team/app") is None


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db", target=TARGET) as store:
        store.write([record("1.0.0")])
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, target=TARGET), pytest.raises(StateLocked, match="in use by another"):
        StateStore(path, target=TARGET)
    StateStore(path, target=TARGET).close()  # released again


def test_other_target_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path, target=TARGET).close()
    with pytest.raises(ConfigError, match="records imports into"):
        StateStore(path, target="https://api.akua.dev/v1 workspace=-")


def test_readonly_needs_no_file_and_takes_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ro = StateStore(path, target=TARGET, readonly=True)
    assert ro.repository_items("r:1", "x") == {}
    assert not path.exists()
    with StateStore(path, target=TARGET) as store:
        store.write([record("1.0.0")])
        reader = StateStore(path, target=TARGET, readonly=True)
        assert "1.0.0" in reader.repository_items("r:1", "team/app")
        reader.close()


def test_garbage_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="state"):
        StateStore(path, target=TARGET)

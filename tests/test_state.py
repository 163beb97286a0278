from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crawler.errors import ConfigError, StateLocked
from crawler.outcomes import Outcome
from crawler.state import SCHEMA_VERSION, ItemRecord, PackageRecord, SeenItem, StateStore

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


# -- versioned migrations ---------------------------------------------------------

# The schema as main wrote it at commit 2a90ff5 (before versioned migrations): user_version 0,
# meta.schema_version "1".  Kept here verbatim so that upgrading such a state stays tested.
SCHEMA_2A90FF5 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    semver     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    package_id TEXT,
    version_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (registry, repository, tag, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packages (
    oci_ref    TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""


def write_old_state(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_2A90FF5)
    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                   [("schema_version", "1"), ("target", TARGET)])
    db.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("r:1", "team/app", "1.0.0", "sha256:" + "a" * 64, "1.0.0", "imported", "", "pkg_1",
          "ver_1", 1000.0),
         ("r:1", "team/app", "1.1.0", "sha256:" + "b" * 64, "1.1.0", "invalid", "bad schema", None,
          None, 2000.0)],
    )
    db.execute("INSERT INTO packages VALUES ('oci://r:1/team/app', 'pkg_1', 1000.0)")
    db.commit()
    db.close()


def test_a_state_written_by_2a90ff5_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_state(path)
    # Read-only openers (plan, status) never change it, and plan can still read it.
    with StateStore(path, target=TARGET, readonly=True) as reader:
        assert reader.schema_version == 0
        assert set(reader.repository_items("r:1", "team/app")) == {"1.0.0", "1.1.0"}
        assert reader.runs() == []
        assert [(i.tag, i.first_seen) for i in reader.current_items([Outcome.INVALID])] == [
            ("1.1.0", 2000.0)]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0

    with StateStore(path, target=TARGET) as store:
        items = store.repository_items("r:1", "team/app")
        assert items["1.0.0"][0].outcome is Outcome.IMPORTED
        assert items["1.0.0"][0].version_id == "ver_1"
        invalid = items["1.1.0"][0]
        assert (invalid.first_seen, invalid.last_seen) == (2000.0, 2000.0)
        assert store.package_id("oci://r:1/team/app") == "pkg_1"
        run = store.start_run(mode="run", crawler_version="test")
        assert [r.id for r in store.runs()] == [run]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert dict(db.execute("SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)
    # Opening again is a no-op.
    StateStore(path, target=TARGET).close()


def test_a_failing_migration_leaves_the_state_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_state(path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE items ADD COLUMN last_seen REAL")  # step 2's second ALTER then fails
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="could not be upgraded from schema version 0"):
        StateStore(path, target=TARGET)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    columns = [row[1] for row in db.execute("PRAGMA table_info(items)")]
    assert "first_seen" not in columns  # step 2's first statement was rolled back too


def test_a_state_from_a_newer_crawler_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path, target=TARGET).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    for readonly in (False, True):
        with pytest.raises(ConfigError, match="written by a newer akua-crawler"):
            StateStore(path, target=TARGET, readonly=readonly)


def test_first_seen_kept_while_the_outcome_stays(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, target=TARGET) as store:
        store.write([record("1.0.0", outcome=Outcome.FAILED)])
        first = store.repository_items("r:1", "team/app")["1.0.0"][0]
        store.write([record("1.0.0", outcome=Outcome.FAILED)])
        again = store.repository_items("r:1", "team/app")["1.0.0"][0]
        assert again.first_seen == first.first_seen and again.last_seen >= first.last_seen
        store.write([], seen=[SeenItem("r:1", "team/app", "1.0.0", "sha256:" + "a" * 64)])
        store.write([record("1.0.0", outcome=Outcome.IMPORTED)])
        done = store.repository_items("r:1", "team/app")["1.0.0"][0]
        assert done.outcome is Outcome.IMPORTED and done.first_seen >= again.last_seen
        assert store.current_items([Outcome.FAILED]) == []


def test_run_history_and_current_problems(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, target=TARGET) as store:
        one = store.start_run(mode="run", crawler_version="0.1.0")
        store.write([record("1.0.0", outcome=Outcome.INVALID),
                     record("2.0.0", outcome=Outcome.FAILED)])
        store.finish_run(one, exit_status=0, counts={"invalid": 1, "failed": 1}, new_problems=2,
                         known_problems=0, abort_reason=None)
        two = store.start_run(mode="run", crawler_version="0.1.0")
        store.finish_run(two, exit_status=3, counts={}, new_problems=0, known_problems=0,
                         abort_reason="registry looks down")
        # status reads while the run holds the lock
        reader = StateStore(path, target=None, readonly=True)
        last = reader.last_run()
        assert last is not None and last.id == two and last.abort_reason == "registry looks down"
        good = reader.last_run(successful=True)
        assert good is not None and good.id == one and good.counts == {"invalid": 1, "failed": 1}
        problems = reader.current_items([Outcome.INVALID, Outcome.FAILED])
        assert [(p.tag, p.outcome) for p in problems] == [("1.0.0", Outcome.INVALID),
                                                         ("2.0.0", Outcome.FAILED)]
        assert reader.current_items([Outcome.FAILED], repository="other") == []
        reader.close()


def test_package_names_are_kept_and_old_states_learn_the_repository_path(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_state(path)  # before name rules: the package was named after its repository path
    with StateStore(path, target=TARGET) as store:
        assert store.package_name("oci://r:1/team/app") == "team/app"
        assert store.package_name("oci://r:1/other") is None
        store.write([], [PackageRecord("oci://r:1/charts/web", "pkg_2", "web")])
        assert store.package_name("oci://r:1/charts/web") == "web"
        # A later record without a name (a re-lookup) keeps the known one.
        store.write([], [PackageRecord("oci://r:1/charts/web", "pkg_3")])
        assert store.package_name("oci://r:1/charts/web") == "web"
        assert store.package_id("oci://r:1/charts/web") == "pkg_3"


def test_plan_reads_package_names_from_a_state_not_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_state(path)
    with StateStore(path, target=TARGET, readonly=True) as reader:  # plan: no upgrade
        assert reader.package_name("oci://r:1/team/app") == "team/app"
        assert reader.package_name("oci://r:1/other/x") is None

"""State migration 4: skips from before the package schema source are forgotten once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from crawler.outcomes import Outcome
from crawler.state import MIGRATIONS, SCHEMA_VERSION, ItemRecord, StateStore

TARGET = "https://api.example/v1|ws"


def _record(tag: str, outcome: Outcome, reason: str) -> ItemRecord:
    return ItemRecord(
        registry="r:1", repository="team/app", tag=tag, digest="sha256:" + tag[0] * 64,
        semver=tag, outcome=outcome, reason=reason,
    )


def test_old_no_schema_skips_are_forgotten_once_and_new_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore(path, target=TARGET) as store:
        store.write(
            [_record("1.0.0", Outcome.SKIPPED, "no input schema"),
             _record("2.0.0", Outcome.SKIPPED, "tag is not SemVer"),
             _record("3.0.0", Outcome.IMPORTED, "package created")],
            [],
        )
    # Pretend the state was written before this migration.
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    db.commit()
    db.close()
    with StateStore(path, target=TARGET) as store:
        items = store.repository_items("r:1", "team/app")
        assert set(items) == {"2.0.0", "3.0.0"}
        # Recorded by this version, such a skip stays (the artifact is not an Akua package).
        store.write([_record("1.0.0", Outcome.SKIPPED, "no input schema")], [])
    with StateStore(path, target=TARGET) as store:
        assert set(store.repository_items("r:1", "team/app")) == {"1.0.0", "2.0.0", "3.0.0"}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

"""The durable local state: what each artifact ended as, and Akua's ids.

SQLite in WAL mode with ``synchronous=FULL``: a transaction that returned
from COMMIT is on disk and survives ``kill -9`` and power loss; one that
did not return is rolled back whole on the next open.  Rows are written
only after Akua confirmed the write, by one writer (see ``StateWriter``),
so the state never claims more than Akua has.  It may claim less (killed
between Akua's answer and the commit): the next run then meets a 409 or the
idempotent import, and records ``exists``.

One run at a time: an exclusive ``flock`` on ``<state>.lock``, held for the
life of the process and released by the kernel even after ``kill -9``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from crawler.errors import ConfigError, StateLocked
from crawler.outcomes import Outcome

SCHEMA_VERSION: Final = 1

_DDL: Final = """
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemRecord:
    registry: str
    repository: str
    tag: str
    digest: str
    semver: str
    outcome: Outcome
    reason: str = ""
    package_id: str | None = None
    version_id: str | None = None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PackageRecord:
    oci_ref: str
    package_id: str | None  # None forgets a stale id (Akua answered 404)


class StateStore:
    """Synchronous store; the async side reaches it through one thread at a time."""

    def __init__(self, path: Path, *, target: str, readonly: bool = False) -> None:
        """``readonly`` (for ``plan``) takes no lock and never creates or changes the file."""
        self.path = path
        self._lock_fd: int | None = None
        self._readonly = readonly
        if readonly:
            self._db = self._connect_readonly(path)
            if self._db is not None:
                self._check_target(target)
            return
        self._lock_fd = self._take_lock(path)
        try:
            self._db = self._connect(path)
            self._check_target(target)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ------------------------------------------------------------

    @staticmethod
    def _take_lock(path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state: cannot create {path.parent}: {exc.strerror}") from None
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"state: cannot open {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"state {path} is in use by another akua-crawler run (lock {lock_path}); "
                "not starting a second one"
            ) from None
        return fd

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_DDL)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state: {path} is not a usable SQLite database: {exc}") from None
        return db

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection | None:
        if not path.exists():
            return None
        try:
            return sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state: cannot read {path}: {exc}") from None

    def _check_target(self, target: str) -> None:
        """A state file belongs to one Akua API and workspace; mixing them would skip wrongly."""
        assert self._db is not None
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state: {self.path} is not a usable state file: {exc}") from None
        if not rows and self._readonly:
            return
        if not rows:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("target", target)],
                )
            return
        if rows.get("schema_version") != str(SCHEMA_VERSION):
            raise ConfigError(
                f"state: {self.path} has schema version {rows.get('schema_version')}, "
                f"this crawler writes {SCHEMA_VERSION}"
            )
        if rows.get("target") != target:
            raise ConfigError(
                f"state: {self.path} records imports into {rows.get('target')}, not {target}; "
                "use another --state for another API or workspace"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------

    def repository_items(self, registry: str, repository: str) -> dict[str, list[ItemRecord]]:
        """Every recorded row of one repository, per tag, newest first."""
        if self._db is None:
            return {}
        cursor = self._db.execute(
            "SELECT tag, digest, semver, outcome, reason, package_id, version_id, updated_at "
            "FROM items WHERE registry = ? AND repository = ? ORDER BY updated_at DESC",
            (registry, repository),
        )
        by_tag: dict[str, list[ItemRecord]] = {}
        for tag, digest, semver, outcome, reason, package_id, version_id, updated_at in cursor:
            by_tag.setdefault(tag, []).append(
                ItemRecord(
                    registry=registry,
                    repository=repository,
                    tag=tag,
                    digest=digest,
                    semver=semver,
                    outcome=Outcome(outcome),
                    reason=reason,
                    package_id=package_id,
                    version_id=version_id,
                    updated_at=updated_at,
                )
            )
        return by_tag

    def package_id(self, oci_ref: str) -> str | None:
        if self._db is None:
            return None
        row = self._db.execute(
            "SELECT package_id FROM packages WHERE oci_ref = ?", (oci_ref,)
        ).fetchone()
        return None if row is None else str(row[0])

    def count_items(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    # -- writing ------------------------------------------------------------

    def write(self, items: Iterable[ItemRecord], packages: Iterable[PackageRecord] = ()) -> None:
        """One durable transaction for a batch of confirmed outcomes."""
        if self._db is None:
            raise RuntimeError("the state was opened read-only")
        now = time.time()
        with self._transaction():
            for package in packages:
                if package.package_id is None:
                    self._db.execute("DELETE FROM packages WHERE oci_ref = ?", (package.oci_ref,))
                else:
                    self._db.execute(
                        "INSERT INTO packages(oci_ref, package_id, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(oci_ref) DO UPDATE SET package_id = excluded.package_id, "
                        "updated_at = excluded.updated_at",
                        (package.oci_ref, package.package_id, now),
                    )
            self._db.executemany(
                "INSERT INTO items(registry, repository, tag, digest, semver, outcome, reason, "
                "package_id, version_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(registry, repository, tag, digest) DO UPDATE SET "
                "semver = excluded.semver, outcome = excluded.outcome, reason = excluded.reason, "
                "package_id = excluded.package_id, version_id = excluded.version_id, "
                "updated_at = excluded.updated_at",
                [
                    (
                        item.registry,
                        item.repository,
                        item.tag,
                        item.digest,
                        item.semver,
                        item.outcome.value,
                        item.reason,
                        item.package_id,
                        item.version_id,
                        now,
                    )
                    for item in items
                ],
            )

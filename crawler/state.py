"""The durable local state: what each artifact ended as, Akua's ids, and the run history.

SQLite in WAL mode with ``synchronous=FULL``: a transaction that returned
from COMMIT is on disk and survives ``kill -9`` and power loss; one that
did not return is rolled back whole on the next open.  Rows are written
only after Akua confirmed the write, by one writer (see ``StateWriter``),
so the state never claims more than Akua has.  It may claim less (killed
between Akua's answer and the commit): the next run then meets a 409 or the
idempotent import, and records ``exists``.

One run at a time: an exclusive ``flock`` on ``<state>.lock``, held for the
life of the process and released by the kernel even after ``kill -9``.
Readers (``plan``, ``status``) take no lock: WAL lets them read while a run writes.

The schema is versioned with ``PRAGMA user_version`` and upgraded in place
by ordered steps (``MIGRATIONS``), all of them in one transaction: an old
state either comes out fully upgraded or untouched.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from crawler.errors import ConfigError, StateLocked, StateWriteFailed
from crawler.outcomes import Outcome

# Step N takes a state from user_version N-1 to N.  Step 1 is the schema written
# before versioned migrations (user_version 0, meta.schema_version "1"); its
# statements are idempotent, so on such a state it changes nothing.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS items ("
        " registry TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL,"
        " digest TEXT NOT NULL, semver TEXT NOT NULL, outcome TEXT NOT NULL,"
        " reason TEXT NOT NULL DEFAULT '', package_id TEXT, version_id TEXT,"
        " updated_at REAL NOT NULL, PRIMARY KEY (registry, repository, tag, digest)"
        ") WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS packages ("
        " oci_ref TEXT PRIMARY KEY, package_id TEXT NOT NULL, updated_at REAL NOT NULL"
        ") WITHOUT ROWID",
    ),
    (
        # Since when an item is in its current outcome, and when a run last saw it.
        "ALTER TABLE items ADD COLUMN first_seen REAL NOT NULL DEFAULT 0",
        "ALTER TABLE items ADD COLUMN last_seen REAL NOT NULL DEFAULT 0",
        "UPDATE items SET first_seen = updated_at, last_seen = updated_at",
        "CREATE INDEX IF NOT EXISTS items_by_outcome ON items(outcome)",
        "CREATE TABLE IF NOT EXISTS runs ("
        " id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,"
        " mode TEXT NOT NULL, exit_status INTEGER, counts TEXT NOT NULL DEFAULT '{}',"
        " new_problems INTEGER NOT NULL DEFAULT 0, known_problems INTEGER NOT NULL DEFAULT 0,"
        " abort_reason TEXT, crawler_version TEXT NOT NULL)",
    ),
    (
        # The package name each oci_ref was imported under, so a changed name rule is refused
        # instead of creating a second package.  Before name rules, it was the repository path.
        "ALTER TABLE packages ADD COLUMN name TEXT",
        "UPDATE packages SET name = substr(oci_ref, instr(substr(oci_ref, 7), '/') + 7)"
        " WHERE oci_ref LIKE 'oci://%/%'",
    ),
    (
        # Before the package schema source, every package as `akua publish` pushes it (no
        # annotation) was settled as skipped "no input schema".  Forget those skips once, so
        # the next run reads them again: the Akua packages among them are now imported, the
        # rest are recorded again as they were.
        "DELETE FROM items WHERE outcome = 'skipped' AND reason = 'no input schema'",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

#: Outcomes that are a problem someone has to look at.
PROBLEMS: Final = (Outcome.INVALID, Outcome.REJECTED, Outcome.FAILED)


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
    first_seen: float = 0.0  # in this outcome; kept while the outcome stays the same
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class PackageRecord:
    oci_ref: str
    package_id: str | None  # None forgets a stale id (Akua answered 404)
    name: str | None = None  # the package name it was imported under; None keeps the known one


@dataclass(frozen=True, slots=True)
class SeenItem:
    """An item a run met and left as it was: only its ``last_seen`` moves."""

    registry: str
    repository: str
    tag: str
    digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    id: int
    started_at: float
    finished_at: float | None
    mode: str
    exit_status: int | None  # None: still running, or killed before it could say
    counts: dict[str, int] = field(default_factory=dict)
    new_problems: int = 0
    known_problems: int = 0
    abort_reason: str | None = None
    crawler_version: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "started_at": self.started_at, "finished_at": self.finished_at,
            "mode": self.mode, "exit_status": self.exit_status, "counts": dict(self.counts),
            "new_problems": self.new_problems, "known_problems": self.known_problems,
            "abort_reason": self.abort_reason, "crawler_version": self.crawler_version,
        }


_ITEM_COLUMNS: Final = (
    "registry, repository, tag, digest, semver, outcome, reason, package_id, version_id, "
    "updated_at, first_seen, last_seen"
)
_RUN_COLUMNS: Final = (
    "id, started_at, finished_at, mode, exit_status, counts, new_problems, known_problems, "
    "abort_reason, crawler_version"
)


def _item(row: Sequence[Any]) -> ItemRecord:
    return ItemRecord(
        registry=row[0], repository=row[1], tag=row[2], digest=row[3], semver=row[4],
        outcome=Outcome(row[5]), reason=row[6], package_id=row[7], version_id=row[8],
        updated_at=row[9], first_seen=row[10], last_seen=row[11],
    )


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        id=row[0], started_at=row[1], finished_at=row[2], mode=row[3], exit_status=row[4],
        counts=json.loads(row[5] or "{}"), new_problems=row[6], known_problems=row[7],
        abort_reason=row[8], crawler_version=row[9],
    )


#: SQLite's primary result codes that mean "the file cannot be written now" (disk full,
#: I/O error, read-only, locked), not "this is no usable state file".
_WRITE_FAILURES: Final = frozenset({
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
})


def _is_write_failure(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _WRITE_FAILURES


def cannot_write(path: Path, exc: sqlite3.Error) -> StateWriteFailed:
    """A first write of the state (its schema, its target, the run's row) failed: the run
    stops cleanly before anything is crawled (exit 3)."""
    return StateWriteFailed(f"cannot write the state {path}: {exc}; nothing was crawled")


class StateStore:
    """Synchronous store; the async side reaches it through one thread at a time."""

    def __init__(self, path: Path, *, target: str | None, readonly: bool = False) -> None:
        """``readonly`` (``plan``, ``status``) takes no lock and never creates or changes the file.

        ``target`` (the Akua API and workspace) must match the one recorded; None accepts any
        (``status`` only reads what is there).
        """
        self.path = path
        self._lock_fd: int | None = None
        self._readonly = readonly
        self._db: sqlite3.Connection | None = None
        self.schema_version = SCHEMA_VERSION
        if readonly:
            self._db = self._connect_readonly(path)
            if self._db is not None:
                self.schema_version = self._user_version()
                if self.schema_version > SCHEMA_VERSION:
                    raise ConfigError(self._too_new())
                self._check_target(target)
            return
        self._lock_fd = self._take_lock(path)
        try:
            self._db = self._connect(path)
            self._migrate()
            self._check_target(target)
        except BaseException:
            if self._db is not None:
                self._db.close()
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
        except sqlite3.DatabaseError as exc:
            if _is_write_failure(exc):
                raise cannot_write(path, exc) from None
            raise ConfigError(f"state: {path} is not a usable SQLite database: {exc}") from None
        return db

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection | None:
        if not path.exists():
            return None
        uri = path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # Read-only media: WAL mode cannot create its shared-memory file there.  Read
            # the file as it is (immutable): a clean run leaves everything in it.
            db.close()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ConfigError(f"state: cannot read {path}: {exc}") from None
        try:
            db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state: cannot read {path}: {exc}") from None

    def _user_version(self) -> int:
        assert self._db is not None
        try:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            if not self._readonly and _is_write_failure(exc):
                raise cannot_write(self.path, exc) from None  # WAL's files on a full disk
            raise ConfigError(f"state: {self.path} is not a usable SQLite database: {exc}") from None

    def _too_new(self) -> str:
        return (
            f"state: {self.path} has schema version {self._user_version()}, written by a newer "
            f"akua-crawler; this one knows up to {SCHEMA_VERSION}"
        )

    def _migrate(self) -> None:
        """Every missing step, in order, in one transaction (with the new user_version)."""
        assert self._db is not None
        version = self._user_version()
        if version > SCHEMA_VERSION:
            raise ConfigError(self._too_new())
        if version == SCHEMA_VERSION:
            return
        try:
            with self._transaction():
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        self._db.execute(statement)
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                )
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            if _is_write_failure(exc):
                raise cannot_write(self.path, exc) from None
            raise ConfigError(
                f"state: {self.path} could not be upgraded from schema version {version} to "
                f"{SCHEMA_VERSION} (left unchanged): {exc}"
            ) from None

    def _check_target(self, target: str | None) -> None:
        """A state file belongs to one Akua API and workspace; mixing them would skip wrongly."""
        assert self._db is not None
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            if self._readonly and self.schema_version == 0:
                return  # an empty file: nothing recorded yet
            raise ConfigError(f"state: {self.path} is not a usable state file: {exc}") from None
        if not rows and self._readonly:
            return
        if not rows:
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO meta(key, value) VALUES (?, ?)",
                        [("schema_version", str(SCHEMA_VERSION)), ("target", target or "")],
                    )
            except sqlite3.DatabaseError as exc:
                raise cannot_write(self.path, exc) from None
            return
        if target is not None and rows.get("target") != target:
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
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------

    def repository_items(self, registry: str, repository: str) -> dict[str, list[ItemRecord]]:
        """Every recorded row of one repository, per tag, newest first."""
        if self._db is None:
            return {}
        columns = self._item_columns()
        cursor = self._db.execute(
            f"SELECT {columns} FROM items WHERE registry = ? AND repository = ? "  # noqa: S608
            "ORDER BY updated_at DESC",
            (registry, repository),
        )
        by_tag: dict[str, list[ItemRecord]] = {}
        for row in cursor:
            record = _item(row)
            by_tag.setdefault(record.tag, []).append(record)
        return by_tag

    def _item_columns(self) -> str:
        if self.schema_version < 2:  # read-only view of a state not upgraded yet
            return _ITEM_COLUMNS.replace("first_seen, last_seen", "updated_at, updated_at")
        return _ITEM_COLUMNS

    def package_id(self, oci_ref: str) -> str | None:
        if self._db is None:
            return None
        row = self._db.execute(
            "SELECT package_id FROM packages WHERE oci_ref = ?", (oci_ref,)
        ).fetchone()
        return None if row is None else str(row[0])

    def package_name(self, oci_ref: str) -> str | None:
        """The name the package of ``oci_ref`` was imported under, when the state knows it."""
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT name FROM packages WHERE oci_ref = ?", (oci_ref,)).fetchone()
        except sqlite3.OperationalError:  # a state older than step 3, read by plan (not upgraded)
            row = self._db.execute("SELECT 1 FROM packages WHERE oci_ref = ?", (oci_ref,)).fetchone()
            parts = oci_ref.split("/", 3)  # oci://HOST/REPOSITORY
            if row is None or len(parts) < 4:
                return None
            return parts[3]  # before name rules a package was named after its repository path
        return None if row is None or row[0] is None else str(row[0])

    def count_items(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def _has_items_table(self) -> bool:
        assert self._db is not None
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'"
        ).fetchone()
        return row is not None

    def _has_history(self) -> bool:
        return self._db is not None and self.schema_version >= 2

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs (``run`` mode; ``plan`` records none), newest first."""
        if not self._has_history():
            return []
        assert self._db is not None
        cursor = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,)  # noqa: S608
        )
        return [_run(row) for row in cursor]

    def last_run(self, *, successful: bool = False) -> RunRecord | None:
        """The latest run with exit status 0 (``successful``), or the latest at all."""
        if not self._has_history():
            return None
        assert self._db is not None
        where = "WHERE exit_status = 0" if successful else ""
        row = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT 1"  # noqa: S608
        ).fetchone()
        return None if row is None else _run(row)

    def current_items(
        self, outcomes: Iterable[Outcome], *, repository: str | None = None,
        since: float | None = None,
    ) -> list[ItemRecord]:
        """Items whose newest row per (registry, repository, tag) has one of ``outcomes``."""
        if self._db is None or (self.schema_version == 0 and not self._has_items_table()):
            return []
        wanted = [o.value for o in outcomes]
        marks = ", ".join("?" for _ in wanted)
        since_column = "first_seen" if self.schema_version >= 2 else "updated_at"
        sql = (
            f"SELECT {self._item_columns()} FROM items AS i WHERE outcome IN ({marks}) "  # noqa: S608
            "AND updated_at = (SELECT max(updated_at) FROM items AS n WHERE n.registry = i.registry "
            "AND n.repository = i.repository AND n.tag = i.tag)"
        )
        params: list[Any] = list(wanted)
        if repository is not None:
            sql += " AND repository = ?"
            params.append(repository)
        if since is not None:
            sql += f" AND {since_column} >= ?"
            params.append(since)
        sql += " ORDER BY repository, semver, tag, digest"
        return [_item(row) for row in self._db.execute(sql, params)]

    # -- writing ------------------------------------------------------------

    def _writable(self) -> sqlite3.Connection:
        if self._db is None or self._readonly:
            raise RuntimeError("the state was opened read-only")
        return self._db

    def write(
        self,
        items: Iterable[ItemRecord],
        packages: Iterable[PackageRecord] = (),
        seen: Iterable[SeenItem] = (),
    ) -> None:
        """One durable transaction for a batch of confirmed outcomes.

        ``first_seen`` is kept while an item's outcome stays the same and restarts when it
        changes; ``last_seen`` is now, for the written items and for ``seen``.
        """
        db = self._writable()
        now = time.time()
        with self._transaction():
            for package in packages:
                if package.package_id is None:
                    db.execute("DELETE FROM packages WHERE oci_ref = ?", (package.oci_ref,))
                else:
                    db.execute(
                        "INSERT INTO packages(oci_ref, package_id, updated_at, name) "
                        "VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(oci_ref) DO UPDATE SET package_id = excluded.package_id, "
                        "updated_at = excluded.updated_at, "
                        "name = coalesce(excluded.name, packages.name)",
                        (package.oci_ref, package.package_id, now, package.name),
                    )
            db.executemany(
                f"INSERT INTO items({_ITEM_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(registry, repository, tag, digest) DO UPDATE SET "
                "semver = excluded.semver, outcome = excluded.outcome, reason = excluded.reason, "
                "package_id = excluded.package_id, version_id = excluded.version_id, "
                "updated_at = excluded.updated_at, last_seen = excluded.last_seen, "
                "first_seen = CASE WHEN items.outcome = excluded.outcome THEN items.first_seen "
                "ELSE excluded.first_seen END",
                [
                    (
                        item.registry, item.repository, item.tag, item.digest, item.semver,
                        item.outcome.value, item.reason, item.package_id, item.version_id,
                        now, now, now,
                    )
                    for item in items
                ],
            )
            db.executemany(
                "UPDATE items SET last_seen = ? WHERE registry = ? AND repository = ? "
                "AND tag = ? AND digest = ?",
                [(now, s.registry, s.repository, s.tag, s.digest) for s in seen],
            )

    def start_run(self, *, mode: str, crawler_version: str) -> int:
        db = self._writable()
        try:
            with self._transaction():
                cursor = db.execute(
                    "INSERT INTO runs(started_at, mode, crawler_version) VALUES (?, ?, ?)",
                    (time.time(), mode, crawler_version),
                )
        except sqlite3.DatabaseError as exc:
            raise cannot_write(self.path, exc) from None
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(
        self, run_id: int, *, exit_status: int, counts: dict[str, int], new_problems: int,
        known_problems: int, abort_reason: str | None,
    ) -> None:
        db = self._writable()
        with self._transaction():
            db.execute(
                "UPDATE runs SET finished_at = ?, exit_status = ?, counts = ?, new_problems = ?, "
                "known_problems = ?, abort_reason = ? WHERE id = ?",
                (time.time(), exit_status, json.dumps(counts, sort_keys=True), new_problems,
                 known_problems, abort_reason, run_id),
            )

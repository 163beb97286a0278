"""The Akua double's data: packages, versions, idempotency keys.

Not thread-safe on its own: the caller (``core.AkuaCore``) holds one lock
around every use, so each request sees and leaves a consistent state.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import os
import secrets
import string
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_ID_ALPHABET = string.ascii_lowercase + string.digits
HTML_BASE = "https://akua.dev/packages/"


def new_id(prefix: str) -> str:
    # Not from the seeded generator: a double restarted from a state file with
    # the same seed would hand out the ids it handed out before.
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


@dataclass(slots=True, kw_only=True)
class VersionRecord:
    id: str
    package_id: str
    semver: str
    ref: str
    input_schema: dict[str, Any]
    compatibility: dict[str, Any] | None
    published_at: int
    created_at: int
    seq: int  # global creation order; cursors point at it

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package_id": self.package_id,
            "semver": self.semver,
            "ref": self.ref,
            "input_schema": self.input_schema,
            "published_at": self.published_at,
            "created_at": self.created_at,
        }


@dataclass(slots=True, kw_only=True)
class PackageRecord:
    id: str
    workspace_id: str
    name: str
    oci_ref: str
    description: str | None
    display_image_url: str | None
    latest_version_id: str
    created_at: int
    seq: int

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "html_url": HTML_BASE + self.id,
            "workspace_id": self.workspace_id,
            "name": self.name,
            "latest_version_id": self.latest_version_id,
            "description": self.description,
            "display_image_url": self.display_image_url,
            "source": {"kind": "oci", "oci_ref": self.oci_ref},
            "created_at": self.created_at,
        }


@dataclass(slots=True, kw_only=True)
class IdempotentReply:
    """What an import with a given idempotency key answered the first time."""

    fingerprint: str  # canonical JSON of the body: the same key with another body is refused
    package_id: str
    body: str


@dataclass(frozen=True, slots=True)
class Duplicates:
    """What must not exist twice in Akua.  Falsy when there is nothing to report.

    ``oci_refs``: oci_ref -> ids of the packages carrying it, for each
    oci_ref with more than one package.  ``versions``: (package id, semver)
    present more than once in one package (the 409 guard makes this
    impossible; it is checked anyway).  ``oci_versions``: (oci_ref, semver)
    present in more than one package, the client-visible double import.
    """

    oci_refs: dict[str, list[str]] = field(default_factory=dict)
    versions: list[tuple[str, str]] = field(default_factory=list)
    oci_versions: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.oci_refs or self.versions or self.oci_versions)

    def to_json(self) -> dict[str, Any]:
        return {
            "oci_refs": self.oci_refs,
            "versions": [list(v) for v in self.versions],
            "oci_versions": [list(v) for v in self.oci_versions],
        }


class CursorError(ValueError):
    pass


def encode_cursor(kind: str, seq: int) -> str:
    raw = f"{kind}:{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The sequence number in a cursor made by ``encode_cursor(kind, ...)``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        got_kind, _, seq = raw.rpartition(":")
        if got_kind != kind or not seq.isascii() or not seq.isdigit():
            raise CursorError(cursor)
        return int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError(cursor) from exc


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None

    def to_api(self) -> dict[str, Any]:
        return {"data": self.items, "has_more": self.has_more, "next_cursor": self.next_cursor}


class Store:
    def __init__(self, state_file: Path | None = None) -> None:
        self.state_file = state_file
        self.packages: dict[str, PackageRecord] = {}  # insertion order is creation order
        self.ordered: list[PackageRecord] = []  # the same, as a list to bisect on seq
        # Indexes so that an import does not scan every package (benchmarks hold thousands).
        self.by_name: dict[str, list[str]] = {}
        self.by_ref: dict[str, list[str]] = {}
        self.versions: dict[str, list[VersionRecord]] = {}  # per package, creation order
        self.idempotency: dict[str, IdempotentReply] = {}
        self.seq = 0
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # --- queries -----------------------------------------------------------

    def conflict(self, name: str, oci_ref: str) -> tuple[str, tuple[str, ...]] | None:
        """Why an import of (name, oci_ref) would duplicate a package, or None."""
        if same_name := self.by_name.get(name):
            return f"a package named {name!r} exists already ({same_name[0]})", ("body", "name")
        if same_ref := self.by_ref.get(oci_ref):
            return (
                f"a package with oci_ref {oci_ref!r} exists already ({same_ref[0]})",
                ("body", "oci_ref"),
            )
        return None

    def has_semver(self, package_id: str, semver: str) -> bool:
        # Exact string comparison: "1.0.0+a" and "1.0.0+b" are two versions here.
        return any(v.semver == semver for v in self.versions.get(package_id, ()))

    def list_packages(self, after: int, limit: int) -> Page:
        start = bisect.bisect_right(self.ordered, after, key=lambda p: p.seq)
        page = self.ordered[start : start + limit]
        more = len(self.ordered) > start + limit
        cursor = encode_cursor("pkg", page[-1].seq) if more else None
        return Page([p.to_api() for p in page], more, cursor)

    def list_versions(self, package_id: str, before: int | None, limit: int) -> Page:
        versions = self.versions.get(package_id, [])
        end = len(versions) if before is None else bisect.bisect_left(
            versions, before, key=lambda v: v.seq
        )
        page = versions[max(0, end - limit) : end][::-1]
        more = end > limit
        cursor = encode_cursor("ver:" + package_id, page[-1].seq) if more else None
        return Page([v.to_api() for v in page], more, cursor)

    def duplicates(self) -> Duplicates:
        by_ref: dict[str, list[str]] = {}
        for pkg in self.packages.values():
            by_ref.setdefault(pkg.oci_ref, []).append(pkg.id)
        in_package: Counter[tuple[str, str]] = Counter()
        by_oci: Counter[tuple[str, str]] = Counter()
        for package_id, versions in self.versions.items():
            oci_ref = self.packages[package_id].oci_ref
            for v in versions:
                in_package[(package_id, v.semver)] += 1
                by_oci[(oci_ref, v.semver)] += 1
        return Duplicates(
            oci_refs={ref: ids for ref, ids in by_ref.items() if len(ids) > 1},
            versions=sorted(k for k, n in in_package.items() if n > 1),
            oci_versions=sorted(k for k, n in by_oci.items() if n > 1),
        )

    # --- changes -----------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def create_package(
        self,
        *,
        workspace_id: str,
        name: str,
        oci_ref: str,
        description: str | None,
        display_image_url: str | None,
        version: dict[str, Any],
    ) -> tuple[PackageRecord, VersionRecord]:
        now = int(time.time())
        pkg = PackageRecord(
            id=new_id("pkg_"),
            workspace_id=workspace_id,
            name=name,
            oci_ref=oci_ref,
            description=description,
            display_image_url=display_image_url,
            latest_version_id="",
            created_at=now,
            seq=self._next_seq(),
        )
        self._index(pkg)
        ver = self.add_version(pkg.id, version)
        return pkg, ver

    def add_version(self, package_id: str, version: dict[str, Any]) -> VersionRecord:
        now = int(time.time())
        ver = VersionRecord(
            id=new_id("ver_"),
            package_id=package_id,
            semver=version["semver"],
            ref=version["ref"],
            input_schema=version["input_schema"],
            compatibility=version.get("compatibility"),
            published_at=now,
            created_at=now,
            seq=self._next_seq(),
        )
        self.versions[package_id].append(ver)
        # "latest" is the most recently created version, not the highest SemVer.
        self.packages[package_id].latest_version_id = ver.id
        return ver

    def _index(self, pkg: PackageRecord) -> None:
        self.packages[pkg.id] = pkg
        self.ordered.append(pkg)
        self.versions[pkg.id] = []
        self.by_name.setdefault(pkg.name, []).append(pkg.id)
        self.by_ref.setdefault(pkg.oci_ref, []).append(pkg.id)

    def clear(self) -> None:
        self.packages.clear()
        self.ordered.clear()
        self.by_name.clear()
        self.by_ref.clear()
        self.versions.clear()
        self.idempotency.clear()
        self.seq = 0

    # --- persistence -------------------------------------------------------

    def persist(self) -> None:
        """Write the state to the state file, if any, atomically (rename over)."""
        if self.state_file is None:
            return
        data = {
            "seq": self.seq,
            "packages": [asdict(p) for p in self.packages.values()],
            "versions": [asdict(v) for vs in self.versions.values() for v in vs],
            "idempotency": {k: asdict(r) for k, r in self.idempotency.items()},
        }
        directory = self.state_file.parent
        fd, tmp = tempfile.mkstemp(prefix=".akua-double-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.seq = int(data["seq"])
        for row in data["packages"]:
            self._index(PackageRecord(**row))
        for row in data["versions"]:
            ver = VersionRecord(**row)
            self.versions[ver.package_id].append(ver)
        for key, row in data["idempotency"].items():
            self.idempotency[key] = IdempotentReply(**row)

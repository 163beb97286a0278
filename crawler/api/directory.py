"""Which Akua package belongs to which ``oci_ref``.

Akua has no lookup by name or ref, only a paged list of every package in
the workspace.  The directory reads that list at most once per run, and
only when some repository has no package id in the state, then keeps it
current with what this run creates.  A 409 on import means someone created
a package we did not see: that re-reads the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from crawler.api.client import AkuaClient


@dataclass(frozen=True, slots=True)
class KnownPackage:
    package_id: str
    name: str
    oci_ref: str | None


class PackageDirectory:
    def __init__(self, api: AkuaClient) -> None:
        self._api = api
        self._by_ref: dict[str, KnownPackage] = {}
        self._by_name: dict[str, KnownPackage] = {}
        self._loaded = False
        self._lock = anyio.Lock()

    async def find(self, oci_ref: str) -> KnownPackage | None:
        async with self._lock:
            if not self._loaded:
                await self._load()
        return self._by_ref.get(oci_ref)

    async def find_after_conflict(self, oci_ref: str, name: str) -> KnownPackage | None:
        """Re-read the list; match ``source.oci_ref`` first, then the name."""
        async with self._lock:
            await self._load()
        return self._by_ref.get(oci_ref) or self._by_name.get(name)

    def remember(self, package: KnownPackage) -> None:
        if package.oci_ref:
            self._by_ref[package.oci_ref] = package
        self._by_name.setdefault(package.name, package)

    def invalidate(self) -> None:
        """Read the list again on the next ``find``: it may lack a package created unseen."""
        self._loaded = False

    def forget(self, oci_ref: str) -> None:
        gone = self._by_ref.pop(oci_ref, None)
        if gone is not None and self._by_name.get(gone.name) == gone:
            del self._by_name[gone.name]

    async def _load(self) -> None:
        by_ref: dict[str, KnownPackage] = {}
        by_name: dict[str, KnownPackage] = {}
        async for item in self._api.packages():
            package = known_package(item)
            if package is None:
                continue
            # Oldest first: if the server let duplicates in, the first one is the real one.
            if package.oci_ref:
                by_ref.setdefault(package.oci_ref, package)
            by_name.setdefault(package.name, package)
        self._by_ref, self._by_name = by_ref, by_name
        self._loaded = True


def known_package(item: dict[str, Any]) -> KnownPackage | None:
    package_id, name = item.get("id"), item.get("name")
    if not isinstance(package_id, str) or not isinstance(name, str):
        return None
    source = item.get("source")
    oci_ref = None
    if isinstance(source, dict) and source.get("kind") == "oci":
        ref = source.get("oci_ref")
        oci_ref = ref if isinstance(ref, str) else None
    return KnownPackage(package_id=package_id, name=name, oci_ref=oci_ref)

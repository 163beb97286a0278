"""pytest plugin: a real docker-registry per test, seeded through its storage.

Fixtures:

* ``registry_root``: a fresh, empty storage directory.
* ``seeder``: a ``Seeder`` writing into ``registry_root``.
* ``registry_factory(root=None, *, users=None)``: starts a ``LocalRegistry``
  (over ``registry_root`` by default) and stops it at teardown.
* ``local_registry``: a started registry over ``registry_root``.
* ``seeded_once(tmp_path_factory, seed)``: a context manager for a module-scoped
  fixture: a registry over storage that ``seed(seeder)`` fills once, for tests
  that only read it (thousands of seeded files cost more than the tests).

The registry reads its storage on every request (no cache configured), so
a test may seed before or after starting; seeding first and then calling
``registry_factory()`` is the clearest order.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from testkit.registry import (
    LocalRegistry,
    RegistryBinaryMissing,
    Seeder,
    find_registry_binary,
)


class RegistryFactory(Protocol):
    def __call__(
        self,
        root: Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        token_auth: Mapping[str, Any] | None = None,
        tls: Mapping[str, Any] | None = None,
        tls_probe: ssl.SSLContext | None = None,
    ) -> LocalRegistry: ...


def require_registry_binary() -> Path:
    """The binary, or fail the test (never skip) with the install hint."""
    try:
        return find_registry_binary()
    except RegistryBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    root = tmp_path / "registry-storage"
    root.mkdir()
    return root


@pytest.fixture
def seeder(registry_root: Path) -> Seeder:
    return Seeder(registry_root)


@pytest.fixture
def registry_factory(registry_root: Path, tmp_path: Path) -> Iterator[RegistryFactory]:
    require_registry_binary()
    started: list[LocalRegistry] = []
    numbers = itertools.count()

    def start(
        root: Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        token_auth: Mapping[str, Any] | None = None,
        tls: Mapping[str, Any] | None = None,
        tls_probe: ssl.SSLContext | None = None,
    ) -> LocalRegistry:
        # Each registry gets its own workdir (config, htpasswd, log) under
        # tmp_path, so a failing test leaves the logs to read.
        workdir = tmp_path / f"registry-{next(numbers)}"
        registry = LocalRegistry(root or registry_root, users=users, token_auth=token_auth,
                                 tls=tls, tls_probe=tls_probe, workdir=workdir)
        started.append(registry)
        return registry.start()

    yield start
    for registry in reversed(started):
        registry.stop()


@pytest.fixture
def local_registry(registry_factory: RegistryFactory) -> LocalRegistry:
    return registry_factory()


@contextmanager
def seeded_once(tmp_path_factory: pytest.TempPathFactory,
                seed: Callable[[Seeder], object]) -> Iterator[LocalRegistry]:
    """A started registry over storage ``seed`` filled, stopped on exit; its tests must not write."""
    require_registry_binary()
    folder = tmp_path_factory.mktemp("seeded-once")
    root = folder / "registry-storage"
    root.mkdir()
    seed(Seeder(root))
    with LocalRegistry(root, workdir=folder / "registry") as registry:
        yield registry

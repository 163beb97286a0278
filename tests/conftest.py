from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from typing import Final

import pytest

from testkit.memory_folder import memory_folder

# The tests' temporary folders (tmp_path, tmp_path_factory: registry storage, states,
# workdirs; about 20,000 small files and 21 MB per fast-lane run) go to /dev/shm where it
# is a writable folder with room to spare, as the benchmark's storage does: creating and
# later removing them on a disk cost the fast lane 2 to 3 s of CPU, mostly the kernel's
# (and their SQLite states fsync there). pytest's own root for them,
# PYTEST_DEBUG_TEMPROOT, so its numbered, locked and pruned folders (the last three runs)
# stay as they are, under /dev/shm/pytest-of-USER; set it (or --basetemp) to put them
# elsewhere. Decided here, before any folder is made: workers use their controller's.
SHM_ROOM_BYTES: Final = 1024 * 1024 * 1024


def _temp_root_in_memory() -> None:
    if "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    shm = memory_folder(SHM_ROOM_BYTES)
    if shm is not None:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(shm)


_temp_root_in_memory()

pytest_plugins = [
    "tests.isolation",
    "tests.plugins.cli",
    "tests.plugins.credential_helpers",
    "tests.plugins.registry",
    "tests.plugins.akua",
    "tests.plugins.retries",
    "tests.tripwire",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog globally; every test starts from the defaults."""
    import structlog  # here, like the plugins' imports: the xdist controller runs no test

    yield
    structlog.reset_defaults()


# Collection only builds what lives to the end (modules, items, strategies): the garbage
# collector has nothing to free meanwhile, and walking it again and again cost each
# xdist worker about a tenth of its start-up.
gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built lives to the end: the garbage collector need not walk it again
    and again while the tests run (about half its work), and from now on it runs."""
    gc.freeze()
    gc.enable()


def _xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The Hypothesis profiles (tests/hypothesis_profiles.py) are registered and "fast" is
    loaded before any test module is imported, and before Hypothesis's own plugin loads
    the one ``--hypothesis-profile`` names. (In every process: Hypothesis's plugin imports
    Hypothesis in an xdist controller's terminal summary anyway.)"""
    import tests.hypothesis_profiles  # noqa: F401


def pytest_sessionstart(session: pytest.Session) -> None:
    # The xdist controller collects nothing (its workers do): its collector runs at once.
    if _xdist_controller(session.config):
        gc.enable()

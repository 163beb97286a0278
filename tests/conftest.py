from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

# The tests' temporary folders (tmp_path, tmp_path_factory: registry storage, states,
# workdirs; about 20,000 small files and 21 MB per fast-lane run) go to /dev/shm where it
# is a writable folder with room to spare, as the benchmark's storage does: creating and
# later removing them on a disk cost the fast lane 2 to 3 s of CPU, mostly the kernel's
# (and their SQLite states fsync there). pytest's own root for them,
# PYTEST_DEBUG_TEMPROOT, so its numbered, locked and pruned folders (the last three runs)
# stay as they are, under /dev/shm/pytest-of-USER; set it (or --basetemp) to put them
# elsewhere. Decided here, before any folder is made: workers use their controller's.
SHM: Final = Path("/dev/shm")
SHM_ROOM_BYTES: Final = 1024 * 1024 * 1024


def _temp_root_in_memory() -> None:
    if "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    if SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free >= SHM_ROOM_BYTES:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(SHM)


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
    the one ``--hypothesis-profile`` names. An xdist controller imports no test, and so
    not Hypothesis either (a fifth of a second), unless it is asked to name a profile
    (``--hypothesis-profile``) or to show it (``-v``: Hypothesis's report header)."""
    asked = config.getoption("hypothesis_profile", None) or config.option.verbose > 0
    if asked or not _xdist_controller(config):
        import tests.hypothesis_profiles  # noqa: F401


def pytest_sessionstart(session: pytest.Session) -> None:
    # The xdist controller collects nothing (its workers do): its collector runs at once.
    if _xdist_controller(session.config):
        gc.enable()

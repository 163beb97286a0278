from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import structlog

import tests.hypothesis_profiles  # noqa: F401  (registers and loads the Hypothesis profiles first)

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


def pytest_sessionstart(session: pytest.Session) -> None:
    # The xdist controller collects nothing (its workers do): its collector runs at once.
    if getattr(session.config.option, "numprocesses", None) and not hasattr(session.config, "workerinput"):
        gc.enable()

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import structlog

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (modules, items, strategies) lives to the end: the garbage
    collector need not walk it again and again while the tests run (about half its work)."""
    gc.freeze()

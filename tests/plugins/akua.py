"""pytest plugin: the Akua API double.

``akua`` is a started ``AkuaDouble`` with default switches and the token
``akua_token``; ``make_akua(**switches)`` starts more, with other switches.
Each is stopped at teardown, and a test fails if the double itself hit an
internal error (a bug in the double must not pass for a crawler success).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported where used: the xdist controller loads this plugin and runs no test
    from testkit.akua_double import AkuaDouble

AKUA_TEST_TOKEN = "sk_akua_test_token"  # the double accepts this and nothing else


def _stop_all(doubles: list[AkuaDouble]) -> None:
    for double in doubles:  # every one stops, even when an earlier one failed
        double.stop()
    if errors := [e for double in doubles for e in double.internal_errors]:
        pytest.fail("the Akua double failed internally:\n" + "\n".join(errors))


@pytest.fixture
def akua_token() -> str:
    return AKUA_TEST_TOKEN


@pytest.fixture
def akua(akua_token: str) -> Iterator[AkuaDouble]:
    from testkit.akua_double import AkuaDouble

    double = AkuaDouble(token=akua_token).start()
    try:
        yield double
    finally:
        _stop_all([double])


@pytest.fixture
def make_akua(akua_token: str) -> Iterator[Callable[..., AkuaDouble]]:
    started: list[AkuaDouble] = []

    def make(**switches: Any) -> AkuaDouble:
        from testkit.akua_double import AkuaDouble

        switches.setdefault("token", akua_token)
        double = AkuaDouble(**switches).start()
        started.append(double)
        return double

    try:
        yield make
    finally:
        _stop_all(started)

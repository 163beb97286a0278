"""pytest plugin: no test reads the developer's environment.

Every ``AKUA_CRAWLER_*``, ``AKUA_*``, ``REGISTRY_*``, ``DOCKER_CONFIG``,
``XDG_*``, ``CREDENTIALS_DIRECTORY``/``STATE_DIRECTORY`` and proxy variable is
removed, and ``HOME`` points at an empty temporary folder, so an exported
variable or a ``~/.docker/config.json`` on the machine cannot change a
verdict.  Tests that need a variable set it with ``monkeypatch``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFIXES = ("AKUA_", "REGISTRY_", "XDG_")
_NAMES = frozenset({
    "DOCKER_CONFIG", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "JOB_COMPLETION_INDEX",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "NETRC",
})


def _foreign(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(_PREFIXES) or upper in _NAMES


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if _foreign(name):
            monkeypatch.delenv(name)
    # mkdtemp, not tmp_path_factory.mktemp: that one lists the whole base folder to number
    # the new one, a cost that grows with every test of the session.
    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("HOME", str(home))

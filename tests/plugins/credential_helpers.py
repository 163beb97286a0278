"""pytest plugin: real ``docker-credential-*`` helper scripts on PATH.

``helpers`` is a folder put first on PATH for the test; ``write_helper``
writes an executable ``docker-credential-NAME`` shell script into it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH for docker-credential-* scripts."""
    folder = tmp_path / "credential-helpers"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder


def write_helper(folder: Path, name: str, body: str) -> Path:
    path = folder / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path

"""README command 1: the demo crawls and imports end to end and says so with its exit status."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.plugins.cli import ROOT, child_environment

pytestmark = pytest.mark.slow  # two crawler processes, a registry and the double


def test_the_demo_imports_everything_once_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "testkit.demo", "--log-format", "json"], cwd=ROOT, env=child_environment(),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== exit status 1; writes Akua received: 8" in done.stdout
    assert "== exit status 0; writes Akua received: 0" in done.stdout
    assert "expected 8 versions; duplicates: none" in done.stdout
    assert "team/webapp" in done.stdout  # the package published without annotation

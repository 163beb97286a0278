"""pytest plugin: one way to run the crawler's CLI in tests.

``run_cli(args, env=...)`` runs ``crawler.cli.main`` in process and returns a
``CliResult``: the exit status, stdout, stderr and the JSON log events
parsed from stderr.  ``cli`` is the fixture form, bound to pytest's capture
and monkeypatch so that environment variables set for one call are undone
at teardown.  ``spawn_cli`` builds the argument list and environment for the
same CLI as a child process (kill and signal tests).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOSING_EVENTS = ("run.finished", "run.stopped")


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def closing(self) -> dict[str, Any]:
        """The run's one closing event; fails the test unless there is exactly one."""
        ends = [e for e in self.events if e.get("event") in CLOSING_EVENTS]
        assert len(ends) == 1, self.events[-5:]
        return ends[0]


def json_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_in_process(
    args: Sequence[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: Mapping[str, str] | None = None,
) -> CliResult:
    """``crawler.cli.main(args)`` with ``env`` set (undone at teardown), output captured."""
    # Imported here, not with the plugin: the xdist controller loads the plugins too, and
    # runs no test.
    from crawler.cli import main

    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()  # drop whatever an earlier step printed
    status = main(list(args))
    out, err = capsys.readouterr()
    return CliResult(status, out, err, json_events(err))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli(args, env=None) -> CliResult``."""

    def run(args: Sequence[str], env: Mapping[str, str] | None = None) -> CliResult:
        return run_in_process(args, monkeypatch, capsys, env)

    return run


def child_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "crawler", *args]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's (already isolated) environment, plus the checkout on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env

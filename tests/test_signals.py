"""Stopping: the grace period is a cancel scope's deadline; a second signal cancels at once."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from crawler.signals import make_stop_control

pytestmark = pytest.mark.anyio


async def test_first_signal_stops_taking_work_and_sets_the_deadline() -> None:
    stop = make_stop_control()
    with anyio.fail_after(30):
        with stop.work_scope:
            before = anyio.current_time()
            stop.signalled("SIGTERM", 0)
            assert stop.stopping.is_set()
            assert stop.reason == "SIGTERM"
            assert before <= stop.work_scope.deadline <= anyio.current_time()
            await anyio.sleep_forever()  # the deadline, not a task, ends this
    assert stop.work_scope.cancelled_caught
    assert not stop.cut_short


async def test_a_long_grace_period_is_cut_short_by_a_second_signal() -> None:
    stop = make_stop_control()
    with anyio.fail_after(30):
        with stop.work_scope:
            stop.signalled("SIGINT", 3600)
            assert stop.work_scope.deadline > anyio.current_time() + 3000
            stop.now()
            await anyio.sleep_forever()
    assert stop.work_scope.cancelled_caught
    assert stop.cut_short


def test_the_http_client_does_not_import_the_schema_machinery() -> None:
    code = (
        "import sys, crawler.api.client, crawler.secret\n"
        "loaded = [m for m in ('crawler.config', 'crawler.schema', 'jsonschema') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

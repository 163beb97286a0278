"""Nothing hangs: a registry dripping one byte at a time, the client and the whole process.

The drip server (``testkit.drip``) sends its headers, or its body, one byte
every 50 ms for as long as it runs, so no per-read timeout ever trips.

* The client ends each request at its total deadline and closes the connection.
* The crawler, as a real process stuck on such a registry, exits 143 after
  SIGTERM plus the grace period, or at once on a second SIGTERM, and leaves the
  state lock free, although its registry threads were blocked in a read.

Every wait here is a bounded poll on a real condition (a request arrived, a
log line was written); the bounds only stop a broken build from hanging.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from crawler.registry import Registry, RegistryClient, RegistryEndpoint, RegistryUnavailable
from crawler.retry import RetryPolicy
from testkit.akua_double import AkuaDouble
from testkit.drip import DripServer
from tests.plugins.cli import (
    CLOSING_EVENTS,
    ROOT,
    child_command,
    child_environment,
    json_events,
)

HANG_GUARD_S = 60.0


@pytest.fixture(params=["headers", "body"])
def drip(request: pytest.FixtureRequest) -> Iterator[DripServer]:
    with DripServer(phase=request.param) as server:
        yield server


def test_the_client_ends_a_dripping_request_at_its_total_deadline(drip: DripServer) -> None:
    client = RegistryClient(RegistryEndpoint(host=drip.host, plain_http=True, timeout_s=0.5))
    calls: list[Callable[[], object]] = [
        lambda: client.list_tags("team/app"),
        lambda: client.get_manifest("team/app", "1.0.0"),
        lambda: client.catalog_page(None),
    ]
    if drip.phase == "headers":  # GET /v2/ needs only the status, not the body
        calls.append(client.check_access)
    for call in calls:
        with pytest.raises(RegistryUnavailable, match=r"no complete answer within 0\.5s"):
            call()
    assert drip.requests == len(calls)
    assert drip.closed_by_client.wait(HANG_GUARD_S)
    client.close()


def test_a_cancelled_registry_call_returns_at_once_and_stops_its_thread(drip: DripServer) -> None:
    """The facade abandons the worker thread on cancellation and aborts its socket."""

    async def cancel_a_stuck_call() -> Registry:
        registry = Registry(RegistryEndpoint(host=drip.host, plain_http=True, timeout_s=600.0),
                            policy=RetryPolicy(attempts=1))
        async with anyio.create_task_group() as group:
            group.start_soon(registry.tags, "team/app")
            # The drip server's own event, waited for off the loop (bounded).
            arrived = await anyio.to_thread.run_sync(drip.wait_for_request, HANG_GUARD_S)
            assert arrived
            group.cancel_scope.cancel()
        return registry

    async def guarded() -> Registry:
        with anyio.fail_after(HANG_GUARD_S):
            return await cancel_a_stuck_call()

    registry = anyio.run(guarded)
    # The abandoned thread did not wait for its 600 s deadline: its socket was shut.
    assert drip.closed_by_client.wait(HANG_GUARD_S)
    registry.close()


# -- the whole process -----------------------------------------------------------------


def start_crawler(registry_host: str, akua: AkuaDouble, state: Path, log: Path,
                  *extra: str) -> subprocess.Popen[bytes]:
    command = child_command(["run", "--registry", registry_host, "--plain-http", "--state",
                             str(state), "--api-url", akua.url, "--log-format", "json",
                             "--no-docker-config", *extra])
    env = child_environment({"AKUA_API_TOKEN": akua.switches.token})
    with open(log, "wb") as err:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


def poll(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.01)
    return False


def lock_is_free(state: Path) -> bool:
    with open(state.with_name(state.name + ".lock"), "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """The exit status, or None (and the process killed) if it did not exit in time."""
    try:
        return process.wait(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.mark.slow
@pytest.mark.parametrize("second_signal", [False, True], ids=["grace-period", "second-sigterm"])
def test_sigterm_ends_a_run_stuck_on_a_dripping_registry(
    drip: DripServer, akua: AkuaDouble, tmp_path: Path, second_signal: bool
) -> None:
    state, log = tmp_path / "state.db", tmp_path / "crawler.log"
    # A request deadline far beyond the test: only the signal handling can end this run.
    grace = "600" if second_signal else "0.5"
    process = start_crawler(drip.host, akua, state, log, "--registry-timeout", "600",
                            "--grace-period", grace)
    try:
        assert poll(lambda: drip.requests > 0, process), log.read_text()[-2000:]
        assert not lock_is_free(state)  # the run holds it while stuck
        process.send_signal(signal.SIGTERM)
        if second_signal:
            assert poll(lambda: '"run.stopping"' in log.read_text(), process)
            process.send_signal(signal.SIGTERM)
        status = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert status == 128 + signal.SIGTERM, text[-3000:]
    closing = [e for e in json_events(text) if e["event"] in CLOSING_EVENTS]
    assert [event["exit_status"] for event in closing] == [143] and "Traceback" not in text
    assert lock_is_free(state)
    assert drip.closed_by_client.wait(HANG_GUARD_S)  # the stuck read was aborted, not left
    assert akua.writes() == []


@pytest.mark.slow
def test_a_dripping_registry_aborts_the_run_at_the_request_deadline(
    akua: AkuaDouble, tmp_path: Path
) -> None:
    with DripServer(phase="headers") as drip:
        state, log = tmp_path / "state.db", tmp_path / "crawler.log"
        process = start_crawler(drip.host, akua, state, log, "--registry-timeout", "0.3")
        status = stop(process)
    text = log.read_text()
    assert status == 3, text[-3000:]
    assert "no complete answer within 0.3s" in text and "GET /v2/" in text
    assert drip.requests == 4  # every try of the retry policy, each cut at its deadline
    assert lock_is_free(state)


@pytest.mark.slow
def test_sigterm_ends_a_run_waiting_for_a_hanging_credential_helper(
    akua: AkuaDouble, tmp_path: Path
) -> None:
    """A keyring waiting for an unlock prompt: the helper is killed with its children."""
    helpers, child_pid = tmp_path / "bin", tmp_path / "helper-child.pid"
    helpers.mkdir()
    helper = helpers / "docker-credential-locked"
    helper.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {child_pid}\nwait\n")
    helper.chmod(0o755)
    config = tmp_path / "docker-config"
    config.mkdir()
    with DripServer() as registry:  # never reached: the helper comes first
        (config / "config.json").write_text(json.dumps({"credHelpers": {registry.host: "locked"}}))
        state, log = tmp_path / "state.db", tmp_path / "crawler.log"
        command = child_command(["run", "--registry", registry.host, "--plain-http", "--state",
                                 str(state), "--api-url", akua.url, "--log-format", "json",
                                 "--registry-timeout", "600", "--grace-period", "0.5"])
        env = child_environment({"AKUA_API_TOKEN": akua.switches.token,
                                 "DOCKER_CONFIG": str(config),
                                 "PATH": f"{helpers}{os.pathsep}{os.environ['PATH']}"})
        with open(log, "wb") as err:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
        try:
            assert poll(lambda: child_pid.exists() and child_pid.read_text().strip() != "",
                        process), log.read_text()[-2000:]
            process.send_signal(signal.SIGTERM)
            status = stop(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert registry.requests == 0
    text = log.read_text()
    assert status == 128 + signal.SIGTERM, text[-3000:]
    assert "Traceback" not in text
    assert lock_is_free(state)
    pid = int(child_pid.read_text())
    assert poll(lambda: _gone(pid), process), "the helper's child outlived the run"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True

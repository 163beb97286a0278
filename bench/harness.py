"""Child processes of the benchmark: the crawler, the Akua double, the references.

Every child is started through ``Children`` so that any exit of the
benchmark (an exception, Ctrl-C, SIGTERM) stops each one by its own PID.
On Linux each child also gets ``PR_SET_PDEATHSIG`` so it dies with the
benchmark even if the benchmark itself is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import platform
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import urlsplit

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
TOKEN: Final = "sk_bench_token_0123456789"
STOP_GRACE_S: Final = 5.0
POLL_S: Final = 0.005


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM
    # when the benchmark process goes away, however it goes.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: no stray crawler settings, the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKUA_")}
    env.pop("REGISTRY_PASSWORD", None)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Children:
    """The benchmark's child processes; ``stop_all`` ends each one by PID."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Callable[[], None]] = []

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("cwd", REPO_ROOT)
        kwargs.setdefault("env", child_env())
        if sys.platform == "linux":
            kwargs.setdefault("preexec_fn", _die_with_parent)
        proc = subprocess.Popen(list(args), **kwargs)
        self._procs.append(proc)
        return proc

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Something else to undo at exit (a registry, a proxy), last in first out."""
        self._cleanups.append(cleanup)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def stop_all(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            stop_process(proc)
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                cleanup()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait a little, then SIGKILL; only this one PID."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so every ``finally`` runs."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ------------------------------------------------------------------ timing


@dataclass(slots=True)
class ProcessRun:
    """One finished child: status, wall time, peak RSS (from wait4), its output files."""

    args: list[str]
    status: int
    wall_s: float
    max_rss_kb: int
    user_s: float
    sys_s: float
    stdout: Path
    stderr: Path
    timed_out: bool = False

    @property
    def max_rss_mb(self) -> float:
        return self.max_rss_kb / 1024


def run_timed(
    children: Children,
    args: Sequence[str],
    *,
    stdout: Path,
    stderr: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> ProcessRun:
    """Run a child to its end and reap it with ``wait4`` for its own rusage.

    Polls with WNOHANG (every few milliseconds) so that the timeout is
    enforced; a child past its deadline is killed and reported as timed out.
    """
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = children.popen(args, stdout=out, stderr=err, env=dict(env) if env else child_env())
    deadline = started + timeout_s
    timed_out = False
    reaped: tuple[int, Any, float] | None = None
    try:
        while reaped is None:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                reaped = (wait_status, usage, time.perf_counter() - started)
                break
            if time.perf_counter() > deadline and not timed_out:
                timed_out = True
                proc.kill()
            time.sleep(POLL_S)
    finally:
        if reaped is None:  # interrupted: the child must not outlive us
            stop_process(proc)
        children.forget(proc)
    wait_status, usage, wall = reaped
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    return ProcessRun(
        args=list(args),
        status=proc.returncode,
        wall_s=wall,
        max_rss_kb=usage.ru_maxrss,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
    )


# ----------------------------------------------------------------- crawler


@dataclass(slots=True)
class CrawlerRun:
    process: ProcessRun
    finished: dict[str, Any]  # the run.finished (or run.stopped/aborted) event
    events: dict[str, int] = field(default_factory=dict)  # event name -> how many

    @property
    def duration_s(self) -> float:
        """The crawler's own measure of the run (from its summary), interpreter start excluded."""
        return float(self.finished.get("duration_ms", self.process.wall_s * 1000)) / 1000

    @property
    def ok(self) -> bool:
        return self.process.status == 0 and not self.process.timed_out


def crawler_args(
    mode: str,
    *,
    registry: str,
    api_url: str,
    state: Path,
    concurrency: int = 16,
    rate: float | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = [
        sys.executable, "-m", "crawler", mode,
        "--registry", registry, "--plain-http", "--no-docker-config",
        "--log-format", "json", "--api-url", api_url, "--state", str(state),
        "--concurrency", str(concurrency),
    ]
    if rate is not None:
        args += ["--rate", f"{rate:g}"]
    return args + list(extra)


def run_crawler(
    children: Children,
    args: Sequence[str],
    *,
    workdir: Path,
    name: str,
    timeout_s: float,
) -> CrawlerRun:
    env = child_env({"AKUA_API_TOKEN": TOKEN})
    run = run_timed(
        children, args, stdout=workdir / f"{name}.out", stderr=workdir / f"{name}.log",
        timeout_s=timeout_s, env=env,
    )
    finished: dict[str, Any] = {}
    events: dict[str, int] = {}
    with run.stderr.open("rb") as lines:
        for line in lines:
            if not line.startswith(b"{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            name_ = str(event.get("event"))
            events[name_] = events.get(name_, 0) + 1
            if name_ in ("run.finished", "run.stopped", "run.aborted"):
                finished.update(event)
    return CrawlerRun(process=run, finished=finished, events=events)


def describe_failure(run: CrawlerRun) -> str:
    tail = run.process.stderr.read_text(errors="replace").splitlines()[-5:]
    return (
        f"status {run.process.status}{' (timed out)' if run.process.timed_out else ''}; "
        f"log tail: {' | '.join(tail)}"
    )


# ------------------------------------------------------------ Akua double


class DoubleProcess:
    """``python -m testkit.akua_double`` as a child; driven by its admin endpoints."""

    def __init__(self, children: Children, workdir: Path, *, start_timeout_s: float = 20.0) -> None:
        self._log = (workdir / "akua-double.log").open("wb")
        self.proc = children.popen(
            [sys.executable, "-m", "testkit.akua_double", "--token", TOKEN, "--port", "0"],
            stdout=subprocess.PIPE, stderr=self._log,
        )
        self.url = self._first_line(start_timeout_s)
        parts = urlsplit(self.url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80

    def _first_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError("the Akua double did not print its URL in time")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError("the Akua double closed its stdout before printing its URL")
                data += chunk
        return data.split(b"\n", 1)[0].decode().strip()

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"double admin {method} {path}: HTTP {response.status} {data[:200]!r}")
            result: dict[str, Any] = json.loads(data)
            return result
        finally:
            conn.close()

    def reset(self, **switches: Any) -> None:
        """Forget every package and the request log, then apply ``switches``."""
        self._admin("POST", "/_double/reset", {"switches": True})
        if switches:
            self._admin("POST", "/_double/configure", switches)

    def configure(self, **switches: Any) -> None:
        """Change switches now, keeping packages and the request log (a burst of 429s mid-run)."""
        self._admin("POST", "/_double/configure", switches)

    def state(self, *, log: bool = False) -> dict[str, Any]:
        return self._admin("GET", "/_double/state" + ("?log=1" if log else ""))

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


# -------------------------------------------------------------- machine


def usable_cpus() -> int:
    """The CPUs this process may run on (what ``nproc`` says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": usable_cpus(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        load = os.getloadavg()
        info["load_at_start"] = [round(x, 2) for x in load]
    try:
        out = subprocess.run(
            ["/usr/bin/docker-registry", "--version"], capture_output=True, text=True, timeout=10,
            check=False,
        )
        info["registry"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["registry"] = "unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=REPO_ROOT, check=False,
        )
        info["commit"] = out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = "unknown"
    return info

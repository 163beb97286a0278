"""KCL child processes, on the crawler's side: start, ask, time out, restart.

``KclWorkers.derive(source)`` is blocking and meant for worker threads (the
caller holds a CapacityLimiter slot, so there are never more children than
slots).  Each child (``crawler.kcl_worker``) answers one request at a time;
an idle child is reused, a child that crashed, overran its time or broke
the protocol is killed and the next request starts a fresh one.  A child
runs in an empty temporary directory with its own KCL package path, so
nothing is read from or written to the crawler's directory or ``$HOME``.

Errors::

    KclUnavailable       kcl-lib is not installed: the item is skipped, with the hint
    DerivationFailed     this package.k cannot be turned into a schema: the item is invalid
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

from crawler.kcl_worker import FRAME_HEADER

INSTALL_HINT: Final = "pip install 'akua-crawler[kcl]'"
#: Wall-clock time one derivation may take before its child is killed.
DERIVE_TIMEOUT_S: Final = 10.0
#: Address space of each child (RLIMIT_AS); kcl-lib needs well under 100 MiB.
CHILD_MEMORY_BYTES: Final = 1024 * 1024 * 1024
_START_TIMEOUT_S: Final = 30.0  # interpreter start and the kcl-lib import, on a busy machine
_MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
_STOP_GRACE_S: Final = 2.0


class KclUnavailable(Exception):
    """kcl-lib cannot be imported; ``str()`` says why and how to install it."""


class DerivationFailed(Exception):
    """No schema for this package.k; ``str()`` is the reason."""


class _Broken(Exception):
    """The child can no longer be used (died, timed out, spoke nonsense)."""


class _Child:
    def __init__(self, memory_bytes: int, start_timeout_s: float) -> None:
        self.home = tempfile.mkdtemp(prefix="akua-crawler-kcl-")
        package_root = str(Path(__file__).resolve().parent.parent)
        # The child needs no credential: none of them reaches it.
        environment = {name: value for name, value in os.environ.items() if not _secret_name(name)}
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, environment.get("PYTHONPATH")) if p
        )
        environment["KCL_PKG_PATH"] = self.home
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crawler.kcl_worker", str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.home,
            env=environment,
        )
        try:
            self.hello = self.receive(start_timeout_s)
        except _Broken:
            self.kill()
            raise

    def ask(self, source: bytes, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        self._send(FRAME_HEADER.pack(len(source)) + source, deadline)
        return self.receive(deadline - time.monotonic())

    def _send(self, data: bytes, deadline: float) -> None:
        assert self.process.stdin is not None
        fd = self.process.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while view:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise _Broken("timeout")
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise _Broken("died") from None

    def receive(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        header = self._read(FRAME_HEADER.size, deadline)
        (length,) = FRAME_HEADER.unpack(header)
        if length > _MAX_ANSWER_BYTES:
            raise _Broken("protocol")
        try:
            answer = json.loads(self._read(length, deadline))
        except ValueError:
            raise _Broken("protocol") from None
        if not isinstance(answer, dict):
            raise _Broken("protocol")
        return answer

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        missing = size
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while missing:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise _Broken("timeout")
                chunk = os.read(fd, min(missing, 1024 * 1024))
                if not chunk:
                    raise _Broken("died")
                chunks.append(chunk)
                missing -= len(chunk)
        return b"".join(chunks)

    def how_it_ended(self) -> str:
        """After a failure: what happened to the process (it is killed if still alive)."""
        try:
            status = self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return "alive"
        if status < 0:
            try:
                return f"killed by {signal.Signals(-status).name}"
            except ValueError:
                return f"killed by signal {-status}"
        return f"exited with status {status}"

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # end of input: the child exits by itself
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.stop(grace_s=5.0)


_SECRET_WORDS: Final = ("TOKEN", "PASSWORD", "SECRET", "CREDENTIAL", "AUTH", "KEY")


def _secret_name(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(("AKUA_", "REGISTRY_")) or any(word in upper for word in _SECRET_WORDS)


class KclWorkers:
    """A pool of KCL children; thread-safe; ``close()`` at the end of the run."""

    def __init__(
        self,
        *,
        timeout_s: float = DERIVE_TIMEOUT_S,
        memory_bytes: int = CHILD_MEMORY_BYTES,
        start_timeout_s: float = _START_TIMEOUT_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._unavailable: str | None = None
        self._closed = False
        self.started = 0  # children started, for statistics and tests

    def __repr__(self) -> str:
        return f"KclWorkers(idle={len(self._idle)}, started={self.started})"

    def probe(self) -> None:
        """Make sure kcl-lib can run (starts one child, kept for later); blocking.

        Raises KclUnavailable when it cannot be imported.
        """
        self._give_back(self._take())

    def derive(self, source: str) -> dict[str, Any]:
        """The exported schema of ``source``; blocking.

        Raises KclUnavailable (kcl-lib missing) or DerivationFailed (reason).
        """
        child = self._take()
        try:
            answer = child.ask(source.encode("utf-8", "surrogatepass"), self.timeout_s)
        except _Broken as exc:
            ended = child.how_it_ended()
            child.kill()
            if str(exc) == "timeout":
                raise DerivationFailed(
                    f"deriving the schema took longer than {self.timeout_s:g}s (stopped)"
                ) from None
            raise DerivationFailed(
                f"kcl-lib crashed on this package.k (its process {ended}); the source is "
                "probably nested too deeply or too large for KCL's parser"
            ) from None
        self._give_back(child)
        if "schema" in answer and isinstance(answer["schema"], dict):
            schema: dict[str, Any] = answer["schema"]
            return schema
        raise DerivationFailed(str(answer.get("error", "no schema in the answer")))

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("KclWorkers is closed")
            if self._unavailable is not None:
                raise KclUnavailable(self._unavailable)
            if self._idle:
                return self._idle.pop()
        try:
            child = _Child(self.memory_bytes, self.start_timeout_s)
        except OSError as exc:
            raise DerivationFailed(f"cannot start the KCL process: {exc}") from None
        except _Broken:
            raise DerivationFailed("the KCL process did not start") from None
        with self._lock:
            self.started += 1
        if child.hello.get("ready") is True:
            return child
        child.stop()
        reason = (
            f"kcl-lib is not installed ({child.hello.get('error', 'import failed')}); "
            f"install the extra to derive schemas from package content: {INSTALL_HINT}"
        )
        with self._lock:
            self._unavailable = reason
        raise KclUnavailable(reason)

    def _give_back(self, child: _Child) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        child.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()


__all__ = [
    "CHILD_MEMORY_BYTES",
    "DERIVE_TIMEOUT_S",
    "INSTALL_HINT",
    "DerivationFailed",
    "KclUnavailable",
    "KclWorkers",
]

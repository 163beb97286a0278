"""A registry's worker threads: a fixed, named set that keeps its clients and shares one queue.

``anyio.to_thread.run_sync`` hands each call to an idle worker through that
worker's own queue (a Python-level ``Condition`` to wake it), and wraps it in
a cancel scope and a limiter borrow.  Per manifest that was the largest cost
of a crawl after the HTTP exchange itself: measured here about 120-160 µs of
CPU per call, against 65-85 µs for this lane, where

* calls wait in one C-level queue, so a thread that finishes a call takes the
  next without sleeping while work is queued;
* results go back to the event loop in batches: one ``call_soon_threadsafe``
  wakes the loop for every result ready by then, not one wake-up per call.

At most ``size`` calls run at once (the lane *is* the named limiter: threads
``registry-0`` … ``registry-N``), started as work needs them, daemon threads
as anyio's are.  The queue holds what callers submitted and nothing else:
every caller is a task of the crawl that holds a read-ahead slot or a
lister's turn, so its length is bounded by those sizes.  Each call runs in a
copy of the caller's context (contextvars), as with anyio.

Cancelling a waiting caller abandons the call: ``on_cancel`` runs at once
(it must be harmless once the call finished), to make the thread stop early
(the registry shuts the call's sockets); the thread's late result is dropped.
asyncio only: the crawler runs anyio on asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Job(Generic[T]):
    run: Callable[[], T]
    future: asyncio.Future[T]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class LaneStatistics:
    name: str
    size: int
    threads: int  # started so far
    running: int  # calls on a thread right now
    waiting: int  # calls queued, not started


class ThreadLane:
    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"lane {name}: size must be >= 1")
        self.name = name
        self.size = size
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._waiting = 0  # jobs queued, not taken
        self._running = 0
        self._done: collections.deque[_Job[Any]] = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"ThreadLane({self.name!r}, size={self.size})"

    def statistics(self) -> LaneStatistics:
        with self._lock:
            return LaneStatistics(self.name, self.size, len(self._threads), self._running,
                                  self._waiting)

    async def run(self, call: Callable[[], T], *, on_cancel: Callable[[], None] | None = None) -> T:
        """``call()`` on one of the lane's threads; its result or its exception."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError(f"lane {self.name} is bound to another event loop")
            self._loop = loop
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(call, future)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"lane {self.name} is closed")
            self._waiting += 1
            start = self._waiting > self._idle and len(self._threads) < self.size
            if start:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
        if start:
            thread.start()
        self._jobs.put(job)
        try:
            return await future
        except asyncio.CancelledError:
            # The task's cancellation cancelled ``future`` too; the thread may still be
            # in the call, so ``on_cancel`` (a no-op once the call finished) runs always.
            future.cancel()
            if on_cancel is not None:
                on_cancel()
            raise

    def close(self) -> None:
        """Let every thread end after its current call (threads stuck in one are daemons)."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._jobs.put(None)

    # -- on the lane's threads ---------------------------------------------------

    def _work(self) -> None:
        with self._lock:
            self._idle += 1
        while True:
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                if job is None:
                    return
                self._waiting -= 1
                self._running += 1
            try:
                job.result = job.context.run(job.run)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, whatever it is
                job.error = exc
            loop = job.future.get_loop()
            with self._lock:
                # Idle before the result is handed back: the caller's next call must find
                # this thread (and its client, with its token) instead of starting another.
                self._running -= 1
                self._idle += 1
                if loop.is_closed():  # abandoned by a run that has ended: nobody waits
                    continue
                self._done.append(job)
                if self._wake_pending:
                    continue
                self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # closed meanwhile; the thread goes on serving the lane
                with self._lock:
                    self._wake_pending = False
                    self._done.clear()  # only one loop is ever live: all of these were its

    # -- on the event loop ---------------------------------------------------------

    def _deliver(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._wake_pending = False
        for job in done:
            if job.future.done():  # abandoned by a cancelled caller
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
                job.error = None  # no cycle through the traceback
            else:
                job.future.set_result(job.result)


__all__ = ["LaneStatistics", "ThreadLane"]

"""The thread that writes JSON log lines, so the event loop never waits on standard error.

One JSON line per item, each written and flushed at once, is a system call
on the event loop's thread for every version imported.  A reader that stops
reading (a full pipe to cron or journald) stalls the whole run inside that
call, the handling of SIGTERM included.  (Speed is not the reason: the wait
for the interpreter lock that followed each write, a tenth of the event
loop's time at 300 writes a second, moved to its next system call.)

``LineWriter`` is the stream structlog and the standard logging handler
write to instead.  ``write`` puts the text on a bounded queue; the thread
named ``log-writer`` wakes on the first line, lets ``LINGER_S`` pass for
the lines that follow it (at hundreds of lines a second, waking for each one
made the thread compete with the event loop for the interpreter lock
hundreds of times a second), then takes everything queued, writes it in one
call and flushes; ``close`` cuts the linger short.  Lines keep their order
(one queue, whichever thread logged them).
When the queue is full (the reader fell behind by ``MAX_QUEUED`` lines),
``write`` waits for room, at most ``FULL_WAIT_S``: back-pressure on a slow
reader.  A reader that takes nothing for that long is stuck; from then on a
line that finds the queue full takes the place of the oldest queued line,
which is dropped and counted (no wait, so the run and its SIGTERM handling
go on), until there is room again.  The newest lines, the closing event
among them, are the ones kept.  ``close`` then adds one ``log.dropped`` line
giving the count, after everything else.

``close(timeout_s)`` writes what is queued, flushes and ends the thread,
waiting at most ``timeout_s`` in all: a reader that never reads again cannot
hold the process at exit (what it did not take is then lost).  The crawler
closes the writer at the end of every run, after the closing event.  A
``kill -9`` loses only what was still queued: at most the last ``LINGER_S``
(50 ms) of lines.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Final, TextIO

MAX_QUEUED: Final = 10_000  # lines
FULL_WAIT_S: Final = 5.0  # the longest one line waits for room before the reader counts as stuck
LINGER_S: Final = 0.05  # after the first line of a batch, how long the writer lets more come
_STOP: Final = None


class LineWriter:
    """A write-only text stream whose writes happen on its own thread."""

    def __init__(self, stream: TextIO, name: str = "log-writer") -> None:
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue(MAX_QUEUED)
        self._lock = threading.Lock()  # orders "still queueing?" against close's last drain
        self._done = False
        self._stuck = False  # a line waited FULL_WAIT_S for room: drop instead of waiting
        self._closing = threading.Event()  # ends the writer's linger at once
        self.dropped = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # -- the stream interface structlog's PrintLogger and logging.StreamHandler use

    def write(self, text: str) -> int:
        with self._lock:
            if self._done:  # after close (a late line at exit): written where it stands
                self._direct(text)
                return len(text)
            try:
                self._queue.put_nowait(text)
                self._stuck = False
                return len(text)
            except queue.Full:
                if self._stuck:
                    self._replace_oldest(text)
                    return len(text)
        try:
            self._queue.put(text, timeout=FULL_WAIT_S)  # the reader fell behind: wait for room
        except queue.Full:
            with self._lock:
                self._stuck = True
                self._replace_oldest(text)
            return len(text)
        with self._lock:
            if self._done:  # closed while this line waited: nobody else will write it
                self._write_left()
        return len(text)

    def flush(self) -> None:
        """Nothing to do here: the writer flushes after every batch it writes."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    # -- lifecycle

    def close(self, timeout_s: float) -> bool:
        """Write what is queued and stop, within ``timeout_s`` in all; False if the
        stream did not take it in time (the rest is then lost)."""
        if self._done:
            return True
        deadline = time.monotonic() + timeout_s
        self._closing.set()
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return False
        with self._lock:
            self._done = True
            self._write_left()
            if self.dropped:
                self._direct(json.dumps({
                    "event": "log.dropped", "level": "warning", "lines": self.dropped,
                    "reason": f"the reader of the log took nothing for {FULL_WAIT_S:g} s",
                }) + "\n")
        return True

    def _replace_oldest(self, text: str) -> None:
        """Drop the oldest queued line for ``text`` (call with the lock held)."""
        try:
            oldest = self._queue.get_nowait()
        except queue.Empty:  # the writer took them all meanwhile: there is room
            pass
        else:
            if oldest is _STOP:  # never drop the stop: it goes back, behind the others
                self._queue.put_nowait(oldest)
            else:
                self.dropped += 1
        try:
            self._queue.put_nowait(text)
        except queue.Full:  # a thread waiting for room outside the lock took the place
            self.dropped += 1

    def _write_left(self) -> None:
        """Write what another thread queued after the stop (call with the lock held)."""
        late: list[str] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                late.append(item)
        if late:
            self._direct("".join(late))

    def _direct(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away or the stream was closed: the lines are gone

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first] if first is not _STOP else []
            stop = first is _STOP
            if not stop:
                self._closing.wait(LINGER_S)  # a bounded wait for the rest of the batch
            while not stop:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                else:
                    batch.append(more)
            if batch:
                self._direct("".join(batch))
            if stop:
                return


__all__ = ["FULL_WAIT_S", "LINGER_S", "MAX_QUEUED", "LineWriter"]

"""How many of a source's listers list at once: all, or a quarter while writes wait.

A lister's turn is one repository's start: its state read, its tag listing
and the decisions per tag (``RepositoryJob.start``).  Listing is the run's
admission: each repository listed becomes a package whose versions are read
and written.

* **While no write waits for Akua's rate** (``writes_waiting() == 0``), or in
  ``plan``, every lister lists: packages are what the writes lack (the first
  seconds of a run, a registry far away, repositories of one tag each, a
  re-run where most versions are settled).
* **While writes wait for a rate slot**, more packages cannot be written
  sooner; fewer listers go on, enough that packages keep entering as fast as
  others end (Little's law: packages ending per second x the time of one
  turn, twice over), and never fewer than a quarter of them (at least one).
  The listing then spreads over the run instead of bunching at its start.

Measured on 2 shared cores, R = 300 at 200 ms, 240 repositories of 10 tags:
16 listers at once entered every repository in the first 3.4 s; the tag
listings' CPU (the registry's and the crawler's) left the event loop 40-140
ms late, Akua's limiter lost its slots at the bucket's size, and the first
three seconds gave 150-260 writes a second.  Four listers once writes queue:
296-300 writes a second from the first second on.

Turns are re-checked when a turn ends, and at least every ``RECHECK_S``.
The rate of packages ending is a moving average over about ``AVERAGE_S``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import anyio

#: While writes wait for Akua's rate, at least one lister in this many lists.
FED_SHARE: Final = 4
#: While writes wait, listers for twice the packages ending (x the time of a turn).
FED_HEADROOM: Final = 2.0
#: A waiting lister looks again this often at the latest (the writes' queue may empty).
RECHECK_S: Final = 0.05
#: The time constant of the packages' ending rate, and the weight of a turn's time.
AVERAGE_S: Final = 1.0
TURN_WEIGHT: Final = 0.2


class ListingPace:
    def __init__(
        self,
        listers: int,
        writes_waiting: Callable[[], int] | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listers = max(1, listers)
        self.least = max(1, self.listers // FED_SHARE)
        self._writes_waiting = writes_waiting
        self._clock = clock
        self._listing = 0
        self._ended = anyio.Event()
        self._ends = 0.0  # packages ending per second, as of ``_ends_at``
        self._ends_at = 0.0
        self._turn_s = 0.0  # the time of one turn, a moving average

    def package_ended(self) -> None:
        """One package of this source ended (its last version written or given up)."""
        now = self._clock()
        self._ends = self._ends_per_s(now) + 1.0 / AVERAGE_S
        self._ends_at = now

    def _ends_per_s(self, now: float) -> float:
        return self._ends * math.exp(-max(0.0, now - self._ends_at) / AVERAGE_S)

    @property
    def fed(self) -> int:
        """Listers while writes wait: enough for the packages ending, a quarter at least."""
        keep_up = math.ceil(FED_HEADROOM * self._ends_per_s(self._clock()) * self._turn_s)
        return min(self.listers, max(self.least, keep_up))

    def allowed(self) -> int:
        """Listers that may list right now."""
        if self._writes_waiting is not None and self._writes_waiting() > 0:
            return self.fed
        return self.listers

    @property
    def listing(self) -> int:
        return self._listing

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn to list one repository; hold it while the block runs."""
        while self._listing >= self.allowed():
            with anyio.move_on_after(RECHECK_S):
                await self._ended.wait()
        self._listing += 1
        started = self._clock()
        try:
            yield
        finally:
            self._listing -= 1
            self._turn_s += TURN_WEIGHT * (self._clock() - started - self._turn_s)
            ended, self._ended = self._ended, anyio.Event()
            ended.set()


__all__ = ["FED_HEADROOM", "FED_SHARE", "RECHECK_S", "ListingPace"]

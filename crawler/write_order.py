"""Which package's write gets Akua's next rate slot.

A package's versions are written one after another (ascending SemVer, each
waiting for the answer to the one before), so a package with ``n`` versions
left needs at least ``n`` x latency however fast the rate is.  A run is at
the rate only while enough packages have a write ready; the order decides
whether that still holds at the end:

* **While repositories are still being listed**, the package that entered
  first goes first.  Its writes run at full speed, it ends soon, and its
  package token lets a waiting repository in.  Without an order, every
  package in flight advances alike, they end together, and the next ones
  enter in a wave; the last wave may be too small to hold the rate, and runs
  alone at the end.  A long package that entered early keeps its place, so
  it is never left for last either.
* **Once every repository of the run has entered**, the package with the
  most versions left goes first (its chain of writes is the longest), the
  earlier entry among equals: the packages then end together, at the end of
  the run, with all of them writing until then.

The order is only the order of the queue for slots
(:class:`crawler.ratelimit.AdaptiveRateLimiter`); it never holds a write back
while a slot is free, and it never changes the order of one package's
versions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextvars import ContextVar


class WriteOrder:
    """The run's order; ``on_change`` is told when the keys change meaning.

    :meth:`listings_started` says how many sources list repositories; the order
    turns to most versions left once each has called :meth:`listing_ended`.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.on_change = on_change
        self.balancing = False  # every repository entered: most versions left first
        self._listing = 0
        self._entered = itertools.count()

    def listings_started(self, count: int) -> None:
        self._listing = count
        if count <= 0:
            self._balance()

    def package(self, versions: int) -> PackageRank:
        """The rank of a package entering with ``versions`` versions to end."""
        return PackageRank(self, next(self._entered), versions)

    def listing_ended(self) -> None:
        """One source's repositories have all entered (or it stopped)."""
        self._listing -= 1
        if self._listing <= 0:
            self._balance()

    def _balance(self) -> None:
        if not self.balancing:
            self.balancing = True
            self.on_change()


class PackageRank:
    """One package's place: a :class:`crawler.ratelimit.Priority`."""

    __slots__ = ("_order", "entered", "left")

    def __init__(self, order: WriteOrder, entered: int, left: int) -> None:
        self._order = order
        self.entered = entered
        self.left = left  # versions not ended yet, the one being written included

    def key(self) -> tuple[int, ...]:
        if self._order.balancing:
            return (-self.left, self.entered)
        return (self.entered,)

    def version_ended(self) -> None:
        self.left = max(0, self.left - 1)

    def __repr__(self) -> str:
        return f"PackageRank(entered={self.entered}, left={self.left})"


#: The rank of the package whose work runs in the current task (``RepositoryJob.work``
#: sets it); what Akua's rate limiter orders its queue by.
current_rank: ContextVar[PackageRank | None] = ContextVar("current_rank", default=None)

"""The Akua request budget: one token bucket for the whole run, adaptive.

* ``acquire()`` hands out one request slot at a time at ``rate`` per second,
  with ``burst`` slots saved up at most.  It returns the slot's time: the
  *send time* the caller hands back with the answer.
* **Who gets the next slot.** Waiters are ranked by the ``Priority`` that
  ``priority()`` gives in their task (Akua's limiter: the package's rank from
  ``crawler.write_order``), lowest key first, first come first served among
  equal keys; a request without one goes before every ranked one.  Without
  ``priority`` (the registry's limiter) it is first come first served.  A
  waiter that finds nobody dispatching becomes the *dispatcher*: it sleeps
  until the next slot and hands it to the best waiter at that moment, itself
  included, until its own slot came.  Whenever the dispatcher leaves (its
  slot came, it was cancelled, the limiter closed), and whenever a waiter
  leaves while nobody dispatches, the best waiter left is woken to take over,
  so a queue with waiters always has a dispatcher or one about to be.  A slot
  handed to a waiter cancelled before it could use it is given back.
  ``reorder()`` ranks every waiter again when the keys change meaning.
* ``pause(seconds)`` stops every worker, not one: a 429 with ``Retry-After``
  says the server wants silence from this client.  Each pause is logged when
  it starts, with its length.
* ``succeeded(sent_at)`` (any answer but 429) and ``throttled(sent_at)`` (a
  429) are the evidence; ``throttled`` says whether the 429 was a limit (it
  slowed down) or noise, so that only a limit pauses the whole pool.  Both
  are counted by **send time**, never by
  completion time: under latency completions trail sends, and counting
  completions in the last second (what this module once did) reads low and
  ratchets the rate down with every volley.
* On a 429 for a request sent after the last cut, the limiter looks at the
  requests sent in the ``WINDOW_S`` before it (never before the first grant:
  the time before anything was sent is no evidence), while not paused.  If at most
  ``NOISE_FRACTION`` of them were refused (``NOISE_BELOW_ESTIMATE`` while the
  rate is already under the remembered estimate: a limit would not refuse
  there), the 429 is noise and changes nothing.  A request of the window whose
  answer has not come back yet counts as admitted (429s come back sooner than
  the work a success takes).  Otherwise the server admitted ``admitted / active seconds``:
  that is its estimated capacity, and the rate goes to ``HEADROOM`` times it,
  never less than ``MAX_CUT`` of the current rate.  That is evidence only if the
  client used its budget: if, from the window's first grant to its last, it
  used under ``BUDGET_USED`` of the slots its rate offered (the first writes of
  a run still coming, a lull; slots lost because the dispatcher woke late while
  requests waited are not counted as offered) and at most ``CLEAR_LIMIT_SHARE``
  of the window was refused, the window tells what the client asked for, not
  what the server admits: the 429 came from a bunch of its requests.  Then, as
  with under ``MIN_EVIDENCE_S`` of sending time, the rate steps down by
  ``BLIND_CUT`` and no new estimate is made (in a simulation, one such 429 early
  in a run held the rate at half for 5 s).  Only once in ``MEMORY_S``: 429s
  again after that step are a limit under what the client sends, and are
  estimated as above.  A 429 for a request sent
  before the last cut reflects the old rate and is not counted again, and there
  is at most one cut a second.
* Recovery: while a capacity estimate is remembered (``MEMORY_S`` after the
  last cut) the rate grows 10% a second plus 2% of the configured rate a
  second up to ``HEADROOM`` of the estimate, then only 0.2% a second.  Once
  429s have stopped for ``MEMORY_S`` the estimate is forgotten and the rate
  grows back the fast way to the configured rate: from an eighth of it, 0.9
  of it is reached within 25 seconds.

Time comes from ``clock`` (anyio's by default); tests pass their own.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio
import structlog

log = structlog.get_logger("crawler.rate")

WINDOW_S: Final = 2.0  # sends looked at before a 429
COOLDOWN_S: Final = 1.0  # at most one cut in this time, whatever the send times say
HISTORY_S: Final = 10.0  # sends remembered at most
MIN_EVIDENCE_S: Final = 0.25  # less unpaused time than this in the window proves nothing
NOISE_FRACTION: Final = 0.05  # this share of refusals or less is noise, not a limit
NOISE_BELOW_ESTIMATE: Final = 0.10  # the same, while already under the estimated capacity
MAX_CUT: Final = 0.5  # one cut never more than halves the rate
BLIND_CUT: Final = 0.9  # the step down when there is no evidence of what the server admits
BUDGET_USED: Final = 0.9  # slots used of those the rate offered, at least: evidence of capacity
CLEAR_LIMIT_SHARE: Final = 0.25  # refused more than this: a limit, however little was sent
HEADROOM: Final = 0.95  # run this far under the estimated capacity
MEMORY_S: Final = 5.0  # the capacity estimate is forgotten this long after the last cut
GROWTH_PER_S: Final = 0.10  # relative growth a second, while recovering
GROWTH_OF_CEILING_PER_S: Final = 0.02  # plus this share of the configured rate a second
PROBE_PER_S: Final = 1.002  # growth above the remembered estimate
MIN_RATE_FRACTION: Final = 0.02
LATENCY_SMOOTHING: Final = 0.1  # weight of a new sample in the latency average
_EPSILON: Final = 1e-9


class Priority(Protocol):
    """A rank in the queue for slots: a lower ``key()`` goes first."""

    def key(self) -> tuple[int, ...]: ...


_FIRST: Final[tuple[int, ...]] = ()  # the key of an unranked request: below every other


@dataclass(slots=True, eq=False)
class _Waiter:
    priority: Priority | None
    wake: anyio.Event = field(default_factory=anyio.Event)
    granted: float | None = None  # the slot's time, once handed out
    gone: bool = False  # cancelled or closed: its entry in the queue is skipped

    def key(self) -> tuple[int, ...]:
        return _FIRST if self.priority is None else self.priority.key()


class LimiterClosed(Exception):
    """The service is unavailable for the rest of the run; no slot will be granted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RateStatistics:
    name: str
    rate: float
    ceiling: float
    estimated_capacity: float | None
    granted: int
    throttled: int
    cuts: int
    paused_s: float
    latency_s: float | None
    pauses: int = 0  # times the whole pool was paused (Retry-After)
    paused_for_s: float = 0.0  # how much longer the current pause lasts (0: not paused)
    waiting: int = 0  # requests waiting for a slot now


class AdaptiveRateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        name: str = "akua-api",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        priority: Callable[[], Priority | None] | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.name = name
        self._clock = clock or anyio.current_time
        self._sleep = sleep or anyio.sleep
        self._priority = priority or _unranked
        self._ceiling = rate
        self._rate = rate
        self._floor = rate * MIN_RATE_FRACTION
        self._capacity: float | None = None  # the server's, as estimated at the last cut
        # The burst is a span of time at the current rate: slowing down shrinks it too.
        self._burst_s = burst / rate
        self._tokens = float(burst)
        now = self._clock()
        self._born = now
        self._first_grant: float | None = None  # the evidence window starts here at the earliest
        self._stamp = now
        self._last_cut = -math.inf  # time of the last cut
        self._last_bunch = -math.inf  # time of the last cut for a bunch sent under the rate
        self._paused_until = -math.inf
        self._pause_spans: list[tuple[float, float]] = []  # (start, end), for the evidence window
        self._queue: list[tuple[tuple[int, ...], int, _Waiter]] = []  # a heap; gone entries stay
        self._waiting = 0  # live waiters in the queue
        self._arrivals = itertools.count()
        self._dispatcher: _Waiter | None = None
        self._napping: anyio.CancelScope | None = None  # the dispatcher's sleep, for close()
        self._admitted: list[float] = []  # send times of requests the server answered, sorted
        self._refused: list[float] = []  # send times of requests answered 429, sorted
        self._grants: list[float] = []  # send times of every slot granted, sorted
        self._offered = 0.0  # slots the budget offered so far, outside pauses (used or not)
        self._offered_at: list[float] = []  # ``_offered`` at each grant of ``_grants``
        self._granted = 0
        self._throttled = 0
        self._cuts = 0
        self._paused_total = 0.0
        self._pauses = 0
        self._latency: float | None = None
        self._closed: str | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def ceiling(self) -> float:
        return self._ceiling

    @property
    def latency_s(self) -> float | None:
        """Smoothed time from a grant to its answer: what a connection pool must cover."""
        return self._latency

    async def acquire(self) -> float:
        """Wait for a slot; returns its time, to be passed to ``succeeded``/``throttled``."""
        waiter = _Waiter(self._priority())
        self._enqueue(waiter)
        try:
            while waiter.granted is None:
                if self._closed is not None:
                    raise LimiterClosed(self._closed)
                if self._dispatcher is None:
                    await self._dispatch(waiter)
                    continue
                if waiter.wake.is_set():  # woken to dispatch, but another waiter was quicker
                    waiter.wake = anyio.Event()
                await waiter.wake.wait()
        except BaseException:  # cancelled (or closed) while waiting
            if waiter.granted is not None:
                # Handed a slot while its cancellation was on its way: nothing was sent.
                self._give_back(waiter.granted)
            self._leave(waiter)
            self._hand_over()  # it may have been woken to dispatch
            raise
        return waiter.granted

    def reorder(self) -> None:
        """Rank every waiter again: their priorities' keys changed meaning."""
        self._queue = [(waiter.key(), seq, waiter) for _, seq, waiter in self._queue if not waiter.gone]
        heapq.heapify(self._queue)

    def _enqueue(self, waiter: _Waiter) -> None:
        heapq.heappush(self._queue, (waiter.key(), next(self._arrivals), waiter))
        self._waiting += 1
        if len(self._queue) > 2 * self._waiting + 64:  # cancelled waiters' entries add up
            self.reorder()

    def _best(self) -> _Waiter | None:
        while self._queue and self._queue[0][2].gone:
            heapq.heappop(self._queue)
        return self._queue[0][2] if self._queue else None

    async def _dispatch(self, me: _Waiter) -> None:
        """Hand out slots, each to the best waiter at its time, until ``me`` has one."""
        self._dispatcher = me
        waited = False  # requests waited for a slot since the last refill (``me`` at least)
        try:
            while me.granted is None:
                if self._closed is not None:
                    raise LimiterClosed(self._closed)
                now = self._clock()
                if now < self._paused_until:
                    await self._nap(self._paused_until - now)
                    continue
                self._refill(now, waited=waited)
                waited = False
                if self._tokens >= 1.0 - _EPSILON:  # rounding must not leave a slot unreachable
                    best = self._best()
                    assert best is not None  # ``me`` is waiting
                    heapq.heappop(self._queue)
                    self._grant(best, now)
                    continue
                await self._nap((1.0 - self._tokens) / self._rate)
                waited = True
        finally:
            self._dispatcher = None
            self._leave(me)  # its slot came, or it was cancelled or closed
            self._hand_over()

    async def _nap(self, seconds: float) -> None:
        """The dispatcher's sleep; ``close()`` ends it."""
        try:
            with anyio.CancelScope() as self._napping:
                await self._sleep(seconds)
        finally:
            self._napping = None

    def _leave(self, waiter: _Waiter) -> None:
        """Out of the queue (its entry is skipped when it comes up)."""
        if not waiter.gone:
            waiter.gone = True
            self._waiting -= 1

    def _hand_over(self) -> None:
        """Nobody dispatches: wake the best waiter left, which takes over."""
        if self._dispatcher is None:
            following = self._best()
            if following is not None:
                following.wake.set()

    def _grant(self, waiter: _Waiter, now: float) -> None:
        self._tokens = max(0.0, self._tokens - 1.0)
        self._granted += 1
        self._grants.append(now)
        self._offered_at.append(self._offered)
        if self._first_grant is None:
            self._first_grant = now
        waiter.granted = now
        self._leave(waiter)
        waiter.wake.set()

    def _give_back(self, granted: float) -> None:
        self._granted -= 1
        at = bisect.bisect_left(self._grants, granted)
        if at < len(self._grants) and self._grants[at] == granted:
            del self._grants[at]  # not evidence of anything: it was never sent
            del self._offered_at[at]
        self._tokens = min(self._bucket(), self._tokens + 1.0)

    def _refill(self, now: float, *, waited: bool = False) -> None:
        """Slots earned since the last refill, and growth.  ``waited``: requests waited
        for a slot all along, so slots lost at the bucket's size were the dispatcher
        waking late, not slots the crawler had no use for (``_offered`` leaves them out)."""
        elapsed = max(0.0, now - self._stamp)
        unpaused = elapsed - self._paused_within(self._stamp, now)
        offer = unpaused * self._rate
        # Growth needs time spent sending: not paused, and not right after a cut.
        grow_s = min(unpaused, max(0.0, now - self._last_cut - COOLDOWN_S))
        self._stamp = now
        if self._capacity is not None and now - self._last_cut >= MEMORY_S:
            self._capacity = None  # 429s stopped: what the server admitted then is history
        if self._rate < self._ceiling and grow_s > 0:
            if self._capacity is not None and self._rate >= self._capacity * HEADROOM:
                grown = self._rate * PROBE_PER_S**grow_s
            else:
                grown = self._rate * (1.0 + GROWTH_PER_S) ** grow_s
                grown += self._ceiling * GROWTH_OF_CEILING_PER_S * grow_s
                if self._capacity is not None:
                    grown = min(grown, max(self._rate, self._capacity * HEADROOM))
            self._rate = min(self._ceiling, grown)
        before = self._tokens
        self._tokens = min(self._bucket(), self._tokens + elapsed * self._rate)
        self._offered += min(offer, self._tokens - before) if waited else offer

    def _bucket(self) -> float:
        """Slots saved up at most: the burst, a span of time at the current rate."""
        return max(1.0, self._rate * self._burst_s)

    def succeeded(self, sent_at: float | None = None) -> None:
        """A request was admitted (any answer but 429): evidence of the server's capacity."""
        now = self._clock()
        sent = now if sent_at is None else sent_at
        self._observe_latency(now - sent)
        bisect.insort(self._admitted, sent)
        self._forget(now)

    def throttled(self, sent_at: float | None = None) -> bool:
        """A 429 for the request granted at ``sent_at``: maybe slow down.

        True when it slowed down (the 429 is evidence of a limit: the caller pauses the
        pool for a Retry-After); False for noise, or for a request of the volley already
        cut for (the caller alone waits its Retry-After).
        """
        now = self._clock()
        sent = now if sent_at is None else sent_at
        self._throttled += 1
        self._observe_latency(now - sent)
        bisect.insort(self._refused, sent)
        self._forget(now)
        if sent <= self._last_cut or now - self._last_cut < COOLDOWN_S:
            return False  # sent at the old rate, or the same volley: already cut for it
        self._refill(now)
        start = max(sent - WINDOW_S, self._born if self._first_grant is None else self._first_grant)
        refused_before = _count(self._refused, start, sent)
        # A request of the window still unanswered counts as admitted: a 429 comes back
        # sooner than the work of a success, and counting only the answers already in
        # would read the server's capacity low, and cut again and again.
        admitted = max(_count(self._admitted, start, sent),
                       _count(self._grants, start, sent) - refused_before)
        refused = refused_before + 1  # this one too (sent is the right edge)
        share = refused / (admitted + refused)
        below_estimate = self._capacity is not None and self._rate <= self._capacity * HEADROOM * 1.001
        if share <= NOISE_FRACTION or (below_estimate and share <= NOISE_BELOW_ESTIMATE):
            return False
        active = (sent - start) - self._paused_within(start, sent)
        estimate: float | None = None
        if active < MIN_EVIDENCE_S:  # right after a pause, or the first writes
            basis = "too little sending time"
        elif (self._budget_used(start, sent) < BUDGET_USED and share <= CLEAR_LIMIT_SHARE
              and now - self._last_bunch >= MEMORY_S):
            # Sending under its own rate, the client met a bunch of its requests, not the
            # server's rate: what was admitted is only what was asked for.  Once: 429s
            # again within MEMORY_S are a limit under what it sends.
            basis = "sent under the rate"
            self._last_bunch = now
        else:
            estimate = admitted / active
            basis = "admitted rate"
        if estimate is not None:
            self._capacity = max(estimate, self._rate * MAX_CUT / HEADROOM)
            target = self._capacity * HEADROOM
        else:  # no evidence of what the server admits: a small step down only
            target = self._rate * BLIND_CUT
        self._rate = max(self._floor, min(self._rate, target))
        self._tokens = min(self._tokens, 0.0)
        self._last_cut = now
        self._cuts += 1
        log.info(
            "rate.slowed_down", limiter=self.name, rate=round(self._rate, 2),
            estimated_capacity=None if self._capacity is None else round(self._capacity, 2),
            admitted_per_s=None if estimate is None else round(estimate, 2), basis=basis,
        )
        return True

    def _budget_used(self, start: float, end: float) -> float:
        """The share of the slots offered between the first and the last grant in
        [start, end) that were used: near 1 while requests wait for slots, lower while
        the client has less to send than its rate.  1 without two grants to tell."""
        first = bisect.bisect_left(self._grants, start)
        last = bisect.bisect_left(self._grants, end) - 1
        offered = self._offered_at[last] - self._offered_at[first] if last > first else 0.0
        return (last - first) / offered if offered > 0 else 1.0

    def close(self, reason: str) -> None:
        """No more slots this run: every ``acquire``, waiting or later, raises ``LimiterClosed``."""
        if self._closed is None:
            self._closed = reason
            log.warning("rate.closed", limiter=self.name, reason=reason)
            for _, _, waiter in self._queue:  # each raises LimiterClosed now
                waiter.wake.set()
            if self._napping is not None:  # the dispatcher too
                self._napping.cancel()

    def pause(self, seconds: float, *, reason: str = "Retry-After") -> None:
        """Stop every caller for ``seconds``; logged when a pause starts or grows."""
        now = self._clock()
        until = now + seconds
        if until <= self._paused_until:
            return
        self._paused_total += until - max(now, self._paused_until)
        if now >= self._paused_until:
            self._pause_spans.append((now, until))
            self._pauses += 1
        else:
            start, _ = self._pause_spans[-1]
            self._pause_spans[-1] = (start, until)
        self._paused_until = until
        self._tokens = 0.0
        log.info("rate.paused", limiter=self.name, seconds=round(seconds, 3), reason=reason)

    def _paused_within(self, start: float, end: float) -> float:
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self._pause_spans)

    def _observe_latency(self, sample: float) -> None:
        if sample < 0:
            return
        if self._latency is None:
            self._latency = sample
        else:
            self._latency += LATENCY_SMOOTHING * (sample - self._latency)

    def _forget(self, now: float) -> None:
        horizon = now - HISTORY_S
        for series in (self._admitted, self._refused, self._grants):
            cut = bisect.bisect_left(series, horizon)
            if cut:
                del series[:cut]
        del self._offered_at[:len(self._offered_at) - len(self._grants)]
        while self._pause_spans and self._pause_spans[0][1] < horizon:
            self._pause_spans.pop(0)

    def statistics(self) -> RateStatistics:
        return RateStatistics(
            name=self.name,
            rate=self._rate,
            ceiling=self._ceiling,
            estimated_capacity=self._capacity,
            granted=self._granted,
            throttled=self._throttled,
            cuts=self._cuts,
            paused_s=self._paused_total,
            latency_s=self._latency,
            pauses=self._pauses,
            paused_for_s=max(0.0, self._paused_until - self._clock()),
            waiting=self._waiting,
        )


def _unranked() -> Priority | None:
    return None


def _count(series: list[float], start: float, end: float) -> int:
    """Entries of sorted ``series`` within [start, end)."""
    return bisect.bisect_left(series, end) - bisect.bisect_left(series, start)

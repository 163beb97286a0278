"""The Akua request budget: one token bucket for the whole run, adaptive.

* ``acquire()`` hands out one request slot at a time, first come first
  served (anyio's Lock is fair), at ``rate`` per second with ``burst``
  slots saved up at most.
* ``pause(seconds)`` stops every worker, not one: a 429 with ``Retry-After``
  says the server wants silence from this client.
* ``throttled()`` (a 429) sets the rate just under what the server admitted
  over the last second (the successes counted by ``succeeded()``), but never
  below half the current rate, and remembers that as the server's estimated
  capacity.  At most once per ``COOLDOWN_S``: a volley of 429s from requests
  already in flight counts once.
* Without 429s the rate grows back: quickly (5% a second) while under 95% of
  the estimated capacity, slowly (0.2% a second) above it, never beyond the
  configured rate.  A run configured faster than the server admits therefore
  pays for one or two 429 volleys, then runs just under the server's limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import anyio
import structlog

log = structlog.get_logger("crawler.rate")

COOLDOWN_S: Final = 1.0
MAX_CUT: Final = 0.5  # one 429 never more than halves the rate
BLIND_CUT: Final = 0.9  # the step down when there is no evidence of what the server admits
HEADROOM: Final = 0.95  # run this far under the estimated capacity
FAST_RECOVERY_PER_S: Final = 1.05
SLOW_RECOVERY_PER_S: Final = 1.002
MIN_RATE_FRACTION: Final = 0.02
WINDOW_S: Final = 1.0
MIN_EVIDENCE_S: Final = 0.25  # less unpaused time than this in the window proves nothing


@dataclass(frozen=True, slots=True)
class RateStatistics:
    name: str
    rate: float
    ceiling: float
    estimated_capacity: float | None
    granted: int
    throttled: int
    paused_s: float
    pauses: int = 0  # times the whole pool was paused (Retry-After)
    paused_for_s: float = 0.0  # how much longer the current pause lasts (0: not paused)


class AdaptiveRateLimiter:
    def __init__(self, rate: float, burst: int, *, name: str = "akua-api") -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.name = name
        self._ceiling = rate
        self._rate = rate
        self._floor = rate * MIN_RATE_FRACTION
        self._capacity: float | None = None  # the server's, as estimated at the last 429
        # The burst is a span of time at the current rate: slowing down shrinks it too.
        self._burst_s = burst / rate
        self._tokens = float(burst)
        self._stamp = anyio.current_time()
        self._last_cut = -COOLDOWN_S
        self._paused_until = 0.0
        self._pause_start = 0.0
        self._lock = anyio.Lock()
        self._successes: deque[float] = deque()
        self._granted = 0
        self._throttled = 0
        self._paused_total = 0.0
        self._pauses = 0

    @property
    def rate(self) -> float:
        return self._rate

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = anyio.current_time()
                if now < self._paused_until:
                    await anyio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    self._granted += 1
                    return
                await anyio.sleep((1.0 - self._tokens) / self._rate)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        if self._rate < self._ceiling and now - self._last_cut > COOLDOWN_S:
            fast = self._capacity is None or self._rate < self._capacity * HEADROOM
            growth = FAST_RECOVERY_PER_S if fast else SLOW_RECOVERY_PER_S
            self._rate = min(self._ceiling, self._rate * growth**elapsed)
        burst = max(1.0, self._rate * self._burst_s)
        self._tokens = min(burst, self._tokens + elapsed * self._rate)

    def succeeded(self) -> None:
        """A request was admitted (any answer but 429): evidence of the server's capacity."""
        now = anyio.current_time()
        self._successes.append(now)
        while self._successes and self._successes[0] < now - WINDOW_S:
            self._successes.popleft()

    def pause(self, seconds: float) -> None:
        now = anyio.current_time()
        until = now + seconds
        if until > self._paused_until:
            self._paused_total += until - max(now, self._paused_until)
            if now >= self._paused_until:
                self._pause_start = now
                self._pauses += 1
            self._paused_until = until
            self._tokens = 0.0

    def throttled(self) -> None:
        self._throttled += 1
        now = anyio.current_time()
        if now - self._last_cut < COOLDOWN_S:
            return
        self._last_cut = now
        while self._successes and self._successes[0] < now - WINDOW_S:
            self._successes.popleft()
        # Successes are evidence only for the time the pool was not paused.
        active = WINDOW_S - max(0.0, min(now, self._paused_until) - max(now - WINDOW_S, self._pause_start))
        if active >= MIN_EVIDENCE_S:
            admitted: float | None = len(self._successes) / active
            self._capacity = max(admitted or 0.0, self._rate * MAX_CUT / HEADROOM)
            target = self._capacity * HEADROOM
        else:  # right after a pause: no evidence, so a small step down only
            admitted = None
            target = self._rate * BLIND_CUT
        self._rate = max(self._floor, min(self._rate, target))
        self._tokens = min(self._tokens, 0.0)
        log.info(
            "rate.slowed_down", limiter=self.name, rate=round(self._rate, 2),
            estimated_capacity=None if self._capacity is None else round(self._capacity, 2),
            admitted_per_s=None if admitted is None else round(admitted, 2),
        )

    def statistics(self) -> RateStatistics:
        return RateStatistics(
            name=self.name,
            rate=self._rate,
            ceiling=self._ceiling,
            estimated_capacity=self._capacity,
            granted=self._granted,
            throttled=self._throttled,
            paused_s=self._paused_total,
            pauses=self._pauses,
            paused_for_s=max(0.0, self._paused_until - anyio.current_time()),
        )

"""The Akua request budget: one token bucket for the whole run, adaptive.

* ``acquire()`` hands out one request slot at a time, first come first
  served (anyio's Lock is fair), at ``rate`` per second with ``burst``
  slots saved up at most.
* ``pause(seconds)`` stops every worker, not one: a 429 with ``Retry-After``
  says the server wants silence from this client.
* ``throttled()`` cuts the rate multiplicatively (at most once per
  ``cooldown_s``, so a volley of 429s from requests already in flight counts
  once); while no 429 arrives the rate grows back by ``recovery`` per second
  up to the configured ceiling.  A run configured faster than the server
  admits therefore settles near what the server admits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import anyio

DECREASE_FACTOR: Final = 0.7
RECOVERY_PER_SECOND: Final = 1.05
COOLDOWN_S: Final = 1.0
MIN_RATE_FRACTION: Final = 0.02


@dataclass(frozen=True, slots=True)
class RateStatistics:
    rate: float
    ceiling: float
    granted: int
    throttled: int
    paused_s: float


class AdaptiveRateLimiter:
    def __init__(self, rate: float, burst: int, *, name: str = "akua-api") -> None:
        self.name = name
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._ceiling = rate
        self._rate = rate
        self._floor = rate * MIN_RATE_FRACTION
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = anyio.current_time()
        self._last_cut = -COOLDOWN_S
        self._paused_until = 0.0
        self._lock = anyio.Lock()
        self._granted = 0
        self._throttled = 0
        self._paused_total = 0.0

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
            self._rate = min(self._ceiling, self._rate * RECOVERY_PER_SECOND**elapsed)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)

    def pause(self, seconds: float) -> None:
        now = anyio.current_time()
        until = now + seconds
        if until > self._paused_until:
            self._paused_total += until - max(now, self._paused_until)
            self._paused_until = until
            self._tokens = 0.0

    def throttled(self) -> None:
        self._throttled += 1
        now = anyio.current_time()
        if now - self._last_cut >= COOLDOWN_S:
            self._last_cut = now
            self._rate = max(self._floor, self._rate * DECREASE_FACTOR)
            self._tokens = min(self._tokens, 0.0)

    def statistics(self) -> RateStatistics:
        return RateStatistics(
            rate=self._rate,
            ceiling=self._ceiling,
            granted=self._granted,
            throttled=self._throttled,
            paused_s=self._paused_total,
        )

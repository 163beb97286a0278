"""The one place that retries: shared by the Akua client, the importer and the registry.

Built on ``stamina`` (which runs the loop, counts attempts and has a test
switch), with one backoff hook that decides per failure:

* the caller's ``classify`` says whether a failure is worth another try,
  and whether it is ``throttled`` (429) or ``unavailable`` (5xx, timeouts,
  refused connections); each kind has its own budget;
* a ``Retry-After`` wins over the computed delay.  With a ``pause``
  callback (the Akua rate limiter) and a failure that says the pool is
  over the limit (``Retry.pool_wide``), it pauses the whole pool instead of
  one caller; a 429 the limiter judged noise makes only its caller wait.
  One longer than ``RETRY_AFTER_MAX_S`` means the service is unavailable
  for this run: no silent wait, the call gives up at once;
* otherwise exponential backoff with full jitter (AWS architecture blog's
  "full jitter"): try n waits uniform(0, min(cap, base * 2**n)).

``instant_retries()`` makes every wait zero, for tests: the budgets and the
decisions stay as they are.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final, Literal, TypeVar

import stamina
import stamina.instrumentation
import structlog

T = TypeVar("T")
log = structlog.get_logger("crawler.retry")

#: The longest Retry-After any service gets from this crawler; beyond it the service is
#: treated as unavailable for this run (the items fail and the next run retries them).
RETRY_AFTER_MAX_S: Final = 300.0

Kind = Literal["throttled", "unavailable"]

# The crawler logs its own retries (with the call's name); stamina's default hooks would
# log each one again, at warning level.
stamina.instrumentation.set_on_retry_hooks([])


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 5  # tries in all for unavailable services, the first included
    throttled_attempts: int = 30  # tries in all while answered 429
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        ceiling = min(self.cap_s, self.base_s * (2**attempt))
        return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class Retry:
    """``classify``'s answer for a failure worth another try."""

    kind: Kind
    reason: str
    retry_after: float | None = None  # seconds the server asked for, uncapped
    pool_wide: bool = True  # with a ``pause`` callback, the Retry-After pauses the whole pool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Why the retries stopped, handed to the caller's ``give_up``."""

    verdict: Retry
    tries: int  # of this kind, the last one included
    too_long: bool  # Retry-After beyond RETRY_AFTER_MAX_S


async def retrying(
    once: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy,
    classify: Callable[[Exception], Retry | None],
    give_up: Callable[[Exception, GiveUp], BaseException],
    pause: Callable[[float], None] | None = None,
    event: str = "retry",
) -> T:
    """``await once()`` until it returns, a failure is not retryable, or a budget runs out.

    A failure ``classify`` returns None for propagates unchanged.  When a budget
    runs out, or a Retry-After is too long, ``give_up(last failure, why)`` is raised.
    """
    tries: dict[Kind, int] = {"throttled": 0, "unavailable": 0}
    stopped: list[GiveUp] = []

    def hook(exc: Exception) -> bool | float:
        verdict = classify(exc)
        if verdict is None:
            return False
        tries[verdict.kind] += 1
        n = tries[verdict.kind]
        budget = policy.throttled_attempts if verdict.kind == "throttled" else policy.attempts
        after = verdict.retry_after
        too_long = after is not None and after > RETRY_AFTER_MAX_S
        if n >= budget or too_long:
            stopped.append(GiveUp(verdict, n, too_long))
            return False
        if after is not None and pause is not None and verdict.pool_wide:
            pause(after)  # the whole pool waits; this caller queues behind the pause
            delay = 0.0
        elif after is not None:
            delay = after
            log.info(f"{event}.paused", call=what, seconds=round(after, 3), reason="Retry-After")
        else:
            delay = policy.delay(min(n - 1, 16))
        log.debug(event, call=what, kind=verdict.kind, reason=verdict.reason, attempt=n,
                  delay_s=round(delay, 3))
        return delay

    # The first try runs outside stamina: most calls succeed at once, and setting up
    # the retry loop costs more than the call's own bookkeeping.  A failure enters the
    # loop as its first attempt, so the hook, the budgets and the waits are unchanged.
    try:
        return await once()
    except Exception as exc:  # noqa: BLE001 - judged by the hook, as any later failure
        first: Exception | None = exc

    async def again() -> T:
        nonlocal first
        if first is not None:
            failure, first = first, None
            raise failure
        return await once()

    try:
        async for attempt in stamina.retry_context(on=hook, attempts=None, timeout=None):
            with attempt:
                return await again()
    except Exception as exc:
        if stopped:
            raise give_up(exc, stopped[-1]) from None
        raise
    raise AssertionError("unreachable: stamina returns or raises")


def instant_retries() -> AbstractContextManager[None]:
    """For tests: every retry wait is zero (budgets unchanged). Use as a context manager."""
    return stamina.set_testing(True, attempts=1_000_000, cap=True)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when absent or unreadable.

    Not capped: whether a wait is too long is ``retrying``'s decision.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)

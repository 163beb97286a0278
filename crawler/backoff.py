"""Retry timing shared by the registry and the Akua client.

One retrying layer only: the callers loop, this module only says how long
to wait.  Exponential backoff with full jitter (AWS architecture blog's
"full jitter"): attempt n waits uniform(0, min(cap, base * 2**n)).
A server's ``Retry-After`` (seconds or HTTP date) wins over the computed
delay, capped so a hostile header cannot park the run for hours.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

RETRY_AFTER_CAP_S: Final = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        ceiling = min(self.cap_s, self.base_s * (2**attempt))
        return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when absent or unreadable."""
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
    return max(0.0, min(seconds, RETRY_AFTER_CAP_S))

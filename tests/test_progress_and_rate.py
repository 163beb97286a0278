from __future__ import annotations

import io

import anyio
import pytest

from crawler.outcomes import Outcome
from crawler.progress import ProgressLine
from crawler.ratelimit import MAX_CUT, AdaptiveRateLimiter
from crawler.report import ItemReport


def test_progress_line_counts_and_keeps_logs_above_it() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    for outcome in (Outcome.IMPORTED, Outcome.IMPORTED, Outcome.INVALID):
        line.observe(ItemReport(repository="r", tag="1.0.0", outcome=outcome))
    line.draw()
    assert "imported 2" in out.getvalue() and "invalid 1" in out.getvalue()
    assert "items/s" in out.getvalue()
    line.write("a warning\n")
    assert out.getvalue().endswith("\r\x1b[2Ka warning\n")  # the status line was cleared first
    line.clear()
    assert out.getvalue().endswith("a warning\n")  # nothing shown, nothing to clear


@pytest.mark.anyio
async def test_a_429_cuts_the_rate_once_per_volley_and_at_most_by_half() -> None:
    limiter = AdaptiveRateLimiter(100, 10)
    limiter.throttled()  # nothing admitted yet: the cut is capped at half
    limiter.throttled()  # same volley: counted, not cut again
    stats = limiter.statistics()
    assert stats.throttled == 2
    assert stats.rate == pytest.approx(100 * MAX_CUT)
    assert stats.ceiling == 100


@pytest.mark.anyio
async def test_a_429_sets_the_rate_just_under_what_the_server_admitted() -> None:
    limiter = AdaptiveRateLimiter(200, 10)
    for _ in range(150):  # the server admitted 150 requests within the last second
        limiter.succeeded()
    limiter.throttled()
    stats = limiter.statistics()
    assert stats.estimated_capacity == pytest.approx(150)
    assert stats.rate == pytest.approx(150 * 0.95)


@pytest.mark.anyio
async def test_burst_is_granted_without_waiting_and_pause_blocks_everyone() -> None:
    limiter = AdaptiveRateLimiter(1, 3)
    with anyio.fail_after(5):
        for _ in range(3):
            await limiter.acquire()
    assert limiter.statistics().granted == 3
    limiter.pause(60)
    with anyio.move_on_after(0.05) as scope:
        await limiter.acquire()
    assert scope.cancelled_caught  # paused: nobody gets a slot
    assert limiter.statistics().paused_s >= 59

"""Stopping a run: SIGTERM and SIGINT, the grace period, the stop the pipeline checks.

The first signal sets ``stopping``: the producers and listers take no new
work and each repository finishes the version in hand.  It also gives the
work scope a deadline, ``grace_period`` seconds away; when it passes, anyio
cancels the scope by itself (no task sleeps to do it).  A second signal
cancels the work scope at once.  The state writer runs outside the work
scope, so what Akua confirmed is still recorded.  The exit status is
128 + the signal's number.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog

log = structlog.get_logger("crawler")


@dataclass(slots=True)
class StopControl:
    """Shared by the signal watcher and the pipeline."""

    stopping: anyio.Event = field(default_factory=anyio.Event)
    work_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reason: str | None = None  # the signal's name, once one arrived
    grace_period: float | None = None  # set with the deadline
    cut_short: bool = False  # a second signal cancelled the work at once

    def stop_taking_work(self) -> None:
        """No new versions; the ones in hand finish (also used when the state fails)."""
        self.stopping.set()

    def signalled(self, name: str, grace_period: float) -> None:
        self.reason = name
        self.grace_period = grace_period
        self.stop_taking_work()
        self.work_scope.deadline = anyio.current_time() + grace_period

    def now(self) -> None:
        self.cut_short = True
        self.work_scope.cancel()

    def after_work(self) -> None:
        """Called once the work scope is left: say whether the grace period ran out."""
        if self.reason is not None and not self.cut_short and self.work_scope.cancelled_caught:
            log.warning("run.grace_period_over", grace_period_s=self.grace_period)


def make_stop_control() -> StopControl:
    return StopControl()


async def watch_signals(
    stop: StopControl,
    grace_period: float,
    signals: tuple[signal.Signals, ...],
    on_signal: Callable[[str], None],
) -> None:
    """First signal: stop taking work, cancel after the grace period. Second: cancel now."""
    with anyio.open_signal_receiver(*signals) as received:
        async for signum in received:
            name = signal.Signals(signum).name
            if stop.reason is None:
                stop.signalled(name, grace_period)
                on_signal(name)
            else:
                log.warning("run.stopping_now", signal=name)
                stop.now()

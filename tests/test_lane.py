"""The registry's worker threads (crawler.registry.lane): results, limits, cancellation."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

import anyio
import pytest

from crawler.registry.lane import ThreadLane

GUARD_S = 10.0  # every wait in these tests is bounded by this


class StuckCall:
    """A call that holds its lane thread until released; every wait bounded."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        self.release.wait(GUARD_S)
        self.finished.set()
        return "late"

    async def cancel_once_entered(
        self, lane: ThreadLane, on_cancel: Callable[[], None] | None = None
    ) -> None:
        """Start the call, cancel its caller once the thread is in it."""
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: lane.run(self, on_cancel=on_cancel))
            await anyio.to_thread.run_sync(self.entered.wait, GUARD_S)
            group.cancel_scope.cancel()


def test_results_and_exceptions_come_back_to_their_callers() -> None:
    lane = ThreadLane("registry", 4)

    def fail() -> int:
        raise KeyError("on the thread")

    async def main() -> tuple[list[int], BaseException | None]:
        results: list[int] = []
        caught: BaseException | None = None

        async def one(i: int) -> None:
            results.append(await lane.run(lambda: i * i))

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as group:
                for i in range(200):
                    group.start_soon(one, i)
            try:
                await lane.run(fail)
            except KeyError as exc:
                caught = exc
        return results, caught

    results, caught = anyio.run(main)
    lane.close()
    assert sorted(results) == [i * i for i in range(200)]
    assert isinstance(caught, KeyError) and caught.args == ("on the thread",)


def test_never_more_than_size_calls_at_once_on_named_threads() -> None:
    lane = ThreadLane("registry", 3)
    lock = threading.Lock()
    now = peak = 0
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=GUARD_S)  # proves 3 do run at once

    def call(i: int) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
            names.add(threading.current_thread().name)
        if i < 3:
            barrier.wait()
        with lock:
            now -= 1

    async def main() -> None:
        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as group:
                for i in range(60):
                    group.start_soon(lane.run, lambda i=i: call(i))

    anyio.run(main)
    stats = lane.statistics()
    lane.close()
    assert peak == 3
    assert names <= {"registry-0", "registry-1", "registry-2"}
    assert stats.threads <= 3 and stats.running == 0 and stats.waiting == 0


def test_each_call_runs_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    lane = ThreadLane("registry", 2)

    async def main() -> list[str]:
        seen: list[str] = []

        async def one(value: str) -> None:
            var.set(value)
            seen.append(await lane.run(var.get))

        async with anyio.create_task_group() as group:
            for value in ("a", "b", "c"):
                group.start_soon(one, value)
        return seen

    assert sorted(anyio.run(main)) == ["a", "b", "c"]
    lane.close()


def test_a_cancelled_caller_returns_at_once_and_its_call_is_told() -> None:
    lane = ThreadLane("registry", 1)
    stuck = StuckCall()
    told = threading.Event()

    async def main() -> str:
        with anyio.fail_after(GUARD_S):
            await stuck.cancel_once_entered(lane, on_cancel=told.set)
            assert told.is_set()  # at once, while the thread is still in the call
            stuck.release.set()
            # The late result is dropped; the lane goes on serving.
            return await lane.run(lambda: "next")

    assert anyio.run(main) == "next"
    lane.close()


def test_a_closed_lane_takes_no_calls_and_its_threads_end() -> None:
    lane = ThreadLane("registry", 2)

    async def warm() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(lane.run, lambda: None)

    before = set(threading.enumerate())
    anyio.run(warm)
    threads = [t for t in set(threading.enumerate()) - before if t.name.startswith("registry-")]
    assert threads
    lane.close()
    for thread in threads:
        thread.join(GUARD_S)
        assert not thread.is_alive()

    async def late() -> None:
        await lane.run(lambda: None)

    with pytest.raises(RuntimeError, match="closed"):
        anyio.run(late)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        ThreadLane("registry", 0)


def test_calls_one_after_another_stay_on_one_thread() -> None:
    """A thread's client keeps its token and what it learnt: sequential calls reuse it."""
    lane = ThreadLane("registry", 8)

    async def main() -> set[str]:
        return {await lane.run(lambda: threading.current_thread().name) for _ in range(300)}

    assert anyio.run(main) == {"registry-0"}
    lane.close()


def test_a_call_abandoned_by_an_ended_run_does_not_stop_the_lane() -> None:
    """A call still on its thread when its event loop closed is dropped; the thread serves on."""
    lane = ThreadLane("registry", 1)
    stuck = StuckCall()

    async def first() -> None:
        with anyio.fail_after(GUARD_S):
            await stuck.cancel_once_entered(lane)

    anyio.run(first)  # its loop is closed now, the call still on the thread
    stuck.release.set()
    assert stuck.finished.wait(GUARD_S)

    async def second() -> str:
        with anyio.fail_after(GUARD_S):
            return await lane.run(lambda: "served")

    assert anyio.run(second) == "served"
    lane.close()

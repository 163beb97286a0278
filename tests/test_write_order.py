"""The write order: which waiting request gets the rate limiter's next slot, and why.

The queue and the scheduling model run the real ``AdaptiveRateLimiter`` and
``WriteOrder`` on virtual time: trio's ``MockClock`` jumps to the next timer
whenever every task waits, and anyio runs on trio, so ``anyio.sleep`` and
``anyio.current_time`` (the limiter's defaults) are exact and take no wall time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from crawler.cli import main
from crawler.ratelimit import AdaptiveRateLimiter, LimiterClosed
from crawler.write_order import PackageRank, WriteOrder, current_rank
from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema


def on_virtual_time(scenario: Callable[[], Awaitable[None]]) -> None:
    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


class Rank:
    """A Priority with a key the test sets."""

    def __init__(self, *key: int) -> None:
        self.value = key

    def key(self) -> tuple[int, ...]:
        return self.value


# -- the order's keys ------------------------------------------------------------


def test_entry_order_while_listing_then_most_versions_left() -> None:
    changes: list[bool] = []
    order = WriteOrder(on_change=lambda: changes.append(order.balancing))
    order.listings_started(2)
    first, second = order.package(3), order.package(10)
    assert first.key() < second.key()  # the earlier entry, whatever is left
    first.version_ended()
    assert first.key() < second.key()
    order.listing_ended()
    assert not order.balancing and changes == []  # one source is still listing
    order.listing_ended()
    assert order.balancing and changes == [True]  # told once
    assert second.key() < first.key()  # 10 versions left against 2
    for _ in range(8):
        second.version_ended()
    assert first.key() < second.key()  # 2 left each: the earlier entry
    order.listing_ended()
    assert changes == [True]


def test_no_source_to_list_balances_at_once() -> None:
    order = WriteOrder()
    order.listings_started(0)
    assert order.balancing


def test_a_rank_never_counts_below_zero() -> None:
    rank = WriteOrder().package(1)
    rank.version_ended()
    rank.version_ended()
    assert rank.left == 0 and repr(rank) == "PackageRank(entered=0, left=0)"


# -- the limiter's queue ---------------------------------------------------------


def ranked_limiter(rate: float, burst: int) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(rate, burst, priority=current_rank.get)


async def take(limiter: AdaptiveRateLimiter, rank: Any, name: str, got: list[tuple[str, float]]) -> None:
    current_rank.set(rank)
    got.append((name, await limiter.acquire()))


def test_slots_go_by_rank_then_arrival_and_unranked_first() -> None:
    got: list[tuple[str, float]] = []

    async def scenario() -> None:
        limiter = ranked_limiter(1, 1)
        await limiter.acquire()  # the burst's one slot, at 0
        async with anyio.create_task_group() as group:
            for name, rank in [("late", Rank(5)), ("b", Rank(1)), ("none", None), ("d", Rank(1))]:
                group.start_soon(take, limiter, rank, name, got)
                await anyio.lowlevel.checkpoint()  # each queues in this order, at time 0

    on_virtual_time(scenario)
    assert got == [("none", 1.0), ("b", 2.0), ("d", 3.0), ("late", 4.0)]


def test_without_a_priority_it_is_first_come_first_served() -> None:
    got: list[tuple[str, float]] = []

    async def scenario() -> None:
        limiter = AdaptiveRateLimiter(1, 1)  # the registry's: no priority
        await limiter.acquire()
        async with anyio.create_task_group() as group:
            for name, rank in [("a", Rank(9)), ("b", Rank(1)), ("c", Rank(5))]:
                group.start_soon(take, limiter, rank, name, got)
                await anyio.lowlevel.checkpoint()

    on_virtual_time(scenario)
    assert got == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_reorder_ranks_the_waiters_again() -> None:
    got: list[tuple[str, float]] = []

    async def scenario() -> None:
        limiter = ranked_limiter(1, 1)
        await limiter.acquire()
        early, late = Rank(1), Rank(2)
        async with anyio.create_task_group() as group:
            group.start_soon(take, limiter, early, "early", got)
            await anyio.lowlevel.checkpoint()
            group.start_soon(take, limiter, late, "late", got)
            await anyio.lowlevel.checkpoint()
            early.value, late.value = (3,), (0,)  # as when the order turns to versions left
            limiter.reorder()

    on_virtual_time(scenario)
    assert got == [("late", 1.0), ("early", 2.0)]


def test_a_cancelled_waiter_leaves_the_queue_and_the_others_still_get_slots() -> None:
    got: list[tuple[str, float]] = []
    left: list[float] = []

    async def leaves(limiter: AdaptiveRateLimiter) -> None:
        with anyio.move_on_after(0.5):
            await limiter.acquire()
            got.append(("leaver", anyio.current_time()))
        left.append(anyio.current_time())

    async def scenario() -> None:
        limiter = ranked_limiter(1, 1)
        await limiter.acquire()
        async with anyio.create_task_group() as group:
            group.start_soon(leaves, limiter)  # first in: it dispatches, then is cancelled
            await anyio.lowlevel.checkpoint()
            group.start_soon(take, limiter, Rank(1), "b", got)
            await anyio.lowlevel.checkpoint()
            group.start_soon(take, limiter, Rank(2), "c", got)
        assert limiter.statistics().granted == 3

    on_virtual_time(scenario)
    assert left == [0.5]
    assert got == [("b", 1.0), ("c", 2.0)]


def test_close_ends_every_waiter_at_once() -> None:
    ended: list[tuple[str, float]] = []

    async def waits(limiter: AdaptiveRateLimiter, name: str) -> None:
        with pytest.raises(LimiterClosed, match="gone"):
            await limiter.acquire()
        ended.append((name, anyio.current_time()))

    async def scenario() -> None:
        limiter = ranked_limiter(0.01, 1)  # the next slot in 100 s
        await limiter.acquire()
        async with anyio.create_task_group() as group:
            for name in ("dispatcher", "b", "c"):
                group.start_soon(waits, limiter, name)
                await anyio.lowlevel.checkpoint()
            await anyio.sleep(1)
            limiter.close("gone")
        with pytest.raises(LimiterClosed):
            await limiter.acquire()

    on_virtual_time(scenario)
    # Every one at once, the dispatcher asleep until the next slot in 100 s too.
    assert sorted(ended) == [("b", 1.0), ("c", 1.0), ("dispatcher", 1.0)]


class GateClock:
    """A clock for asyncio whose sleeps end only when the test says: exact orderings."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[anyio.Event] = []  # the sleeps going on

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken = anyio.Event()
        self.sleepers.append(woken)
        try:
            await woken.wait()
        finally:
            if woken in self.sleepers:
                self.sleepers.remove(woken)

    def advance(self, to: float) -> None:
        self.now = to
        for woken in self.sleepers:
            woken.set()
        self.sleepers.clear()


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (the caller bounds the wait)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_the_waiter_woken_to_dispatch_cancelled_too_passes_it_on() -> None:
    """The dispatcher is cancelled and wakes the best waiter to take over; that one is
    cancelled too before it ran.  The last waiter still gets its slot."""
    clock = GateClock()
    limiter = AdaptiveRateLimiter(1, 1, clock=clock, sleep=clock.sleep, priority=current_rank.get)
    await limiter.acquire()
    scopes = {name: anyio.CancelScope() for name in ("dispatcher", "next")}
    got: list[tuple[str, float]] = []

    async def waits(name: str, rank: Rank) -> None:
        current_rank.set(rank)
        with scopes.get(name, anyio.CancelScope()):
            got.append((name, await limiter.acquire()))

    def waiting() -> int:
        return limiter.statistics().waiting

    with anyio.fail_after(10):  # a hang fails here, not the whole run
        async with anyio.create_task_group() as group:
            group.start_soon(waits, "dispatcher", Rank(5))
            await until(lambda: len(clock.sleepers) == 1)  # asleep until the next slot
            group.start_soon(waits, "next", Rank(1))
            group.start_soon(waits, "last", Rank(9))
            await until(lambda: waiting() == 3)
            scopes["dispatcher"].cancel()  # it runs first: it wakes "next" to take over
            scopes["next"].cancel()
            # "last" alone waits, and dispatches: asleep until the next slot.
            await until(lambda: waiting() == 1 and len(clock.sleepers) == 1)
            clock.advance(1.0)
    assert got == [("last", 1.0)]


@pytest.mark.anyio
async def test_a_slot_handed_to_a_waiter_whose_cancellation_is_on_its_way_is_given_back() -> None:
    clock = GateClock()
    limiter = AdaptiveRateLimiter(1, 1, clock=clock, sleep=clock.sleep, priority=current_rank.get)
    await limiter.acquire()
    scope = anyio.CancelScope()
    got: list[tuple[str, float]] = []
    ended: list[str] = []

    async def waits(name: str, rank: Rank, within: anyio.CancelScope) -> None:
        current_rank.set(rank)
        try:
            with within:
                got.append((name, await limiter.acquire()))
        finally:
            ended.append(name)

    with anyio.fail_after(10):  # without the slot back, the dispatcher sleeps on: it fails here
        async with anyio.create_task_group() as group:
            group.start_soon(waits, "dispatcher", Rank(5), anyio.CancelScope())
            await until(lambda: len(clock.sleepers) == 1)
            group.start_soon(waits, "handed", Rank(1), scope)
            await until(lambda: limiter.statistics().waiting == 2)
            clock.advance(1.0)  # the dispatcher runs first: it hands the slot to "handed" ...
            scope.cancel()  # ... whose cancellation was delivered before it could run
            await until(lambda: ended == ["handed"] and len(clock.sleepers) == 1)
            assert got == []  # the dispatcher asleep again: the slot was not its own
            clock.advance(1.0)  # no time passed: only the slot given back can serve it
    assert got == [("dispatcher", 1.0)]
    assert limiter.statistics().granted == 2
    # The slot given back is no send: the slots offered are kept for the grants left only.
    assert len(limiter._offered_at) == len(limiter._grants) == 2


# -- the model: packages written through the limiter on virtual time -------------------


def utilisation(sizes: list[int], *, rate: float, latency: float, in_flight: int,
                order: str) -> float:
    """Writes a second over the writing window, as a share of the best possible.

    As a run does it: ``in_flight`` package tokens taken in listing order, each
    package's versions written one after another through one limiter, each write
    answered ``latency`` later.  ``order``: "write order" (the run's), "entry only"
    (the listing never ends: no balancing), or "none" (first come first served).
    The best possible is every write at the rate, or the longest package's chain,
    plus the first answer's latency (the window starts at the first send).
    """
    done: list[float] = []
    first: list[float] = []

    async def scenario() -> None:
        write_order = WriteOrder()
        limiter = AdaptiveRateLimiter(rate, max(1, int(rate / 20)),
                                      priority=None if order == "none" else current_rank.get)
        write_order.on_change = limiter.reorder
        tokens = anyio.CapacityLimiter(in_flight)

        async def package(rank: PackageRank, versions: int) -> None:
            current_rank.set(rank)
            try:
                for _ in range(versions):
                    sent = await limiter.acquire()
                    first.append(sent)
                    await anyio.sleep(latency)
                    limiter.succeeded(sent)
                    rank.version_ended()
                    done.append(anyio.current_time())
            finally:
                tokens.release_on_behalf_of(rank)

        write_order.listings_started(1)
        async with anyio.create_task_group() as group:
            for versions in sizes:  # one lister: entry order is token order
                rank = write_order.package(versions)
                await tokens.acquire_on_behalf_of(rank)
                group.start_soon(package, rank, versions)
            if order != "entry only":
                write_order.listing_ended()

    on_virtual_time(scenario)
    assert len(done) == sum(sizes)
    floor_s = max(sum(sizes) / rate, max(sizes) * latency) + latency
    return len(done) / (max(done) - min(first)) / (sum(sizes) / floor_s)


# Packages written at 30 writes a second, 200 ms away, over 18 package tokens: 6 packages
# must write at once to hold the rate.  Each shape, and what falls short without a part:
# * "even", 20 x 10: first come first served, all 18 advance alike and end together, and
#   the last 2 enter then and write alone;
# * "even 22", 22 x 10: entry order alone leaves the last 4 to write alone at the end
#   (what balancing once the listing ended is for);
# * "two long first", 40 versions twice, then 60 of 3: first come first served gives the
#   long ones a share of the rate like any other's, and they end long after the rest;
# * "mixed", 40 packages of 1 to 24 versions: entry order alone ends with a few long ones.
SHAPES = {
    "even": ([10] * 20, "none", 0.9),
    "even 22": ([10] * 22, "entry only", 0.9),
    "two long first": ([40, 40] + [3] * 60, "none", 0.8),
    "mixed": ([random.Random(5).randint(1, 24) for _ in range(40)], "entry only", 0.95),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_write_order_holds_the_rate_to_the_end(shape: str) -> None:
    sizes, _, _ = SHAPES[shape]
    got = utilisation(sizes, rate=30.0, latency=0.2, in_flight=18, order="write order")
    assert got >= 0.95, got


@pytest.mark.parametrize("shape", list(SHAPES))
def test_without_each_part_of_the_order_the_same_shape_falls_short(shape: str) -> None:
    """What each part is for (and that the model can fail)."""
    sizes, without, below = SHAPES[shape]
    got = utilisation(sizes, rate=30.0, latency=0.2, in_flight=18, order=without)
    assert got < below, (without, got)


# -- a run: the crawler's writes wait in their package's place --------------------------


def test_a_run_writes_the_package_with_most_versions_left_first(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    """At 5 writes a second every package has a write waiting at each slot after the first
    ones.  Once the listing ended, the package with 8 versions goes before the four with one
    each until it has one left too; first come first served would take turns, and entry
    order alone would serve it last (it is listed last)."""
    for semver in [f"1.{minor}.0" for minor in range(8)]:
        # Listed last: entry order alone would serve it after the others.
        seeder.add_artifact("team/zbig", [semver], annotations=package_annotations(app_schema(semver), None))
    for name in ("a", "c", "d", "e"):
        seeder.add_artifact(f"team/{name}", ["1.0.0"],
                            annotations=package_annotations(app_schema("1.0.0"), None))
    registry = registry_factory()
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    status = main(["run", "--registry", registry.host, "--plain-http", "--state",
                   str(tmp_path / "state.db"), "--log-format", "json", "--api-url", akua.url,
                   "--rate", "5"])
    _, err = capsys.readouterr()
    assert status == 0, err
    names = {p["id"]: p["name"] for p in akua.packages()}
    writers = []
    for write in akua.writes():
        if write.path.endswith("packages:import"):
            writers.append(write.body["name"])
        else:
            writers.append(names[write.path.split("/")[-2]])
    finished = [json.loads(line) for line in err.splitlines() if '"run.finished"' in line]
    assert finished[0]["imported"] == 12
    assert len(writers) == 12
    # At most the first two slots went to whoever was ready first.
    assert writers[:6].count("team/zbig") >= 4, writers

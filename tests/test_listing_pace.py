"""How many listers list at once (crawler.listing_pace): all, or a quarter while writes wait."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from crawler.cli import main
from crawler.listing_pace import FED_HEADROOM, FED_SHARE, ListingPace
from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from testkit.world import app_schema
from tests.gating_proxy import GatingProxy


class Listers:
    """``count`` listers each taking one turn and holding it until ``release`` is set."""

    def __init__(self, pace: ListingPace, count: int) -> None:
        self.pace = pace
        self.count = count
        self.inside = 0
        self.most = 0
        self.entered = 0
        self.release = anyio.Event()
        self.changed = anyio.Event()

    async def one(self) -> None:
        async with self.pace.turn():
            self.inside += 1
            self.entered += 1
            self.most = max(self.most, self.inside)
            self.changed.set()
            await self.release.wait()
            self.inside -= 1

    async def until(self, entered: int) -> None:
        with anyio.fail_after(5):
            while self.entered < entered:
                self.changed = anyio.Event()
                await self.changed.wait()


@pytest.mark.anyio
async def test_every_lister_lists_while_no_write_waits() -> None:
    pace = ListingPace(16, lambda: 0)
    listers = Listers(pace, 16)
    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(listers.one)
        await listers.until(16)
        listers.release.set()
    assert listers.most == 16


@pytest.mark.anyio
async def test_plan_has_no_writes_and_lists_with_every_lister() -> None:
    pace = ListingPace(8, None)
    listers = Listers(pace, 8)
    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(listers.one)
        await listers.until(8)
        listers.release.set()
    assert listers.most == 8
    assert pace.listing == 0


@pytest.mark.anyio
async def test_a_quarter_lists_while_writes_wait_and_all_once_they_stop() -> None:
    waiting = 5
    pace = ListingPace(16, lambda: waiting)
    assert pace.fed == 16 // FED_SHARE == 4
    listers = Listers(pace, 16)
    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(listers.one)
        await listers.until(4)
        await anyio.wait_all_tasks_blocked()
        assert listers.inside == 4  # the other twelve wait for a turn
        # The writes' queue empties; no turn ends: the waiting listers look again on their own.
        waiting = 0
        await listers.until(16)
        listers.release.set()
    assert listers.most == 16
    assert pace.listing == 0


@pytest.mark.anyio
async def test_a_turn_that_ends_lets_the_next_lister_in() -> None:
    pace = ListingPace(8, lambda: 1)  # writes wait all along: two at once (8 // 4)
    order: list[str] = []

    async def lister(name: str, hold: anyio.Event) -> None:
        async with pace.turn():
            order.append(f"{name} in")
            await hold.wait()
        order.append(f"{name} out")

    holds = [anyio.Event() for _ in range(3)]
    async with anyio.create_task_group() as group:
        for index, hold in enumerate(holds):
            group.start_soon(lister, str(index), hold)
            await anyio.wait_all_tasks_blocked()
        assert order == ["0 in", "1 in"]
        holds[0].set()
        await anyio.wait_all_tasks_blocked()
        assert order == ["0 in", "1 in", "0 out", "2 in"]
        holds[1].set()
        holds[2].set()


@pytest.mark.anyio
async def test_a_cancelled_lister_gives_its_turn_back() -> None:
    pace = ListingPace(4, lambda: 1)  # one at a time
    assert pace.fed == 1
    with anyio.CancelScope() as holding:
        async with anyio.create_task_group() as group:

            async def hold() -> None:
                async with pace.turn():
                    await anyio.sleep_forever()

            async def wait_for_turn() -> None:
                async with pace.turn():
                    raise AssertionError("a second turn while writes wait and one is taken")

            group.start_soon(hold)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(wait_for_turn)
            await anyio.wait_all_tasks_blocked()
            assert pace.listing == 1
            holding.cancel()
    assert pace.listing == 0
    async with pace.turn():  # the turn is free again
        assert pace.listing == 1


@pytest.mark.anyio
async def test_while_writes_wait_enough_list_to_keep_up_with_the_packages_ending() -> None:
    now = [0.0]
    pace = ListingPace(16, lambda: 1, clock=lambda: now[0])
    assert pace.fed == 4  # nothing ended yet: a quarter
    for _ in range(40):  # turns of 20 ms
        async with pace.turn():
            now[0] += 0.02
    for _ in range(3000):  # ten seconds of 300 packages ending a second (one tag each)
        now[0] += 1 / 300
        pace.package_ended()
    # 300 a second x 20 ms a turn = 6 listers busy; twice that (the averages round up to 13).
    assert FED_HEADROOM * 300 * 0.02 == 12
    assert pace.fed in (12, 13)
    assert pace.allowed() == pace.fed
    now[0] += 5.0  # no package ended for five seconds: back to a quarter
    assert pace.fed == 4
    many = ListingPace(4, lambda: 1, clock=lambda: now[0])
    for _ in range(2000):
        now[0] += 1 / 1000
        many.package_ended()
    async with many.turn():
        now[0] += 1.0
    assert many.fed == 4  # never more than the listers there are


def test_at_least_one_lister_lists_while_writes_wait() -> None:
    assert ListingPace(1, lambda: 3).fed == 1
    assert ListingPace(3, lambda: 3).allowed() == 1
    assert ListingPace(3, lambda: 0).allowed() == 3


# -- a whole run: the registry sees the pace ------------------------------------------------


REPOSITORIES = 40
LISTERS = 16


def test_a_run_lists_with_a_quarter_of_its_listers_while_writes_wait(
    seeder: Seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    # 40 repositories of one version each, each listing request answered 50 ms late,
    # written at 10 a second: the first 16 listings come at once (no write waits yet);
    # their writes then queue for the rate (1.5 s of them), and the listings after the
    # second wave come 4 at a time (10 packages ending a second x 0.1 s a turn x 2 = 2
    # listers would keep up; a quarter of 16 is more).
    for index in range(REPOSITORIES):
        seeder.add_artifact(f"team/app{index:02d}", ["1.0.0"],
                            annotations=package_annotations(app_schema("1.0.0"), None))
    registry = registry_factory()
    monkeypatch.setenv("AKUA_API_TOKEN", akua.switches.token)
    with GatingProxy(registry.host, tags_delay_s=0.05) as proxy:
        status = main(["run", "--registry", proxy.host, "--plain-http", "--state",
                       str(tmp_path / "state.db"), "--log-format", "json", "--api-url", akua.url,
                       "--rate", "10", "--concurrency", str(LISTERS)])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert len(akua.writes()) == REPOSITORIES
    listings = proxy.tags_in_flight
    assert len(listings) == REPOSITORIES
    assert max(listings[:LISTERS]) > LISTERS // FED_SHARE  # nothing waited: every lister listed
    later = listings[2 * LISTERS:]
    assert later and max(later) <= LISTERS // FED_SHARE, listings

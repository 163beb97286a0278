"""The adaptive rate limiter, on a simulated clock: deterministic, no wall-clock time.

``Simulation`` drives the real ``AdaptiveRateLimiter`` through ``acquire``
with a fake clock whose ``sleep`` advances time.  A server model answers
each request ``latency`` later: 429 when its own token bucket (rate
``capacity``, burst a tenth of it, like the Akua double) is empty or while a
forced burst of 429s lasts, or at random with ``noise`` (seeded).  Every
request is one slot; answers are fed back with their send time, as the
client does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from crawler.ratelimit import HEADROOM, MAX_CUT, AdaptiveRateLimiter

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, late: float = 0.0) -> None:
        self.now = 0.0
        self.late = late  # every sleep ends this much later: a loaded event loop

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # The simulations run one task, so a sleep has nothing to let run: it only moves
        # the clock (a checkpoint here doubled the event loop's turns per request).
        self.now += max(0.0, seconds) + self.late


@dataclass
class Simulation:
    rate: float
    capacity: float
    latency: float
    noise: float = 0.0
    forced: tuple[float, float] | None = None  # every request sent in [start, end) gets a 429
    demand: float | None = None  # the client has at most this many requests a second to send
    seed: int = 7
    clock: FakeClock = field(default_factory=FakeClock)
    sends: list[tuple[float, bool]] = field(default_factory=list)  # (sent_at, admitted)
    rates: list[tuple[float, float]] = field(default_factory=list)  # (time, limiter rate)

    def __post_init__(self) -> None:
        self.limiter = AdaptiveRateLimiter(self.rate, max(1, int(self.rate / 20)),
                                           clock=self.clock, sleep=self.clock.sleep)
        self._rng = random.Random(self.seed)
        self._bucket = self.capacity / 10
        self._stamp = 0.0
        self._due: list[tuple[float, float, bool]] = []  # (answer time, sent_at, admitted)

    def _server_admits(self, at: float) -> bool:
        burst = max(1.0, self.capacity / 10)
        self._bucket = min(burst, self._bucket + (at - self._stamp) * self.capacity)
        self._stamp = at
        if self.forced and self.forced[0] <= at < self.forced[1]:
            return False
        if self.noise and self._rng.random() < self.noise:
            return False
        if self._bucket >= 1.0:
            self._bucket -= 1.0
            return True
        return False

    def _answer_until(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            at, sent, admitted = heapq.heappop(self._due)
            self.clock.now = max(self.clock.now, at)
            if admitted:
                self.limiter.succeeded(sent)
            else:
                self.limiter.throttled(sent)

    async def run(self, seconds: float) -> None:
        while self.clock.now < seconds:
            sent = await self.limiter.acquire()
            saved = self.clock.now
            self._answer_until(sent)
            self.clock.now = saved
            admitted = self._server_admits(sent)
            self.sends.append((sent, admitted))
            heapq.heappush(self._due, (sent + self._answer_after(admitted), sent, admitted))
            self.rates.append((sent, self.limiter.rate))
            if self.demand is not None:  # the next request is ready only then
                self.clock.now = max(self.clock.now, sent + 1 / self.demand)

    def _answer_after(self, admitted: bool) -> float:
        """Seconds from the send to its answer: one latency, whatever the answer."""
        return self.latency

    def admitted_per_s(self, start: float, end: float) -> float:
        return sum(1 for at, ok in self.sends if start <= at < end and ok) / (end - start)

    def refused_share(self, start: float, end: float) -> float:
        window = [ok for at, ok in self.sends if start <= at < end]
        return window.count(False) / max(1, len(window))


@pytest.mark.parametrize("latency", [0.0, 0.05, 0.2])
async def test_at_the_server_limit_the_rate_stays_near_it(latency: float) -> None:
    sim = Simulation(rate=100, capacity=100, latency=latency)
    await sim.run(120)
    assert sim.admitted_per_s(30, 120) >= 0.95 * 100
    assert sim.refused_share(0, 120) <= 0.01


@pytest.mark.parametrize("latency", [0.0, 0.05, 0.2])
async def test_configured_above_the_server_limit_it_settles_under_it_without_ratcheting(
    latency: float,
) -> None:
    """Counting by send time: latency does not drag the estimate (and so the rate) down."""
    sim = Simulation(rate=200, capacity=100, latency=latency)
    await sim.run(180)
    assert sim.admitted_per_s(60, 180) >= 0.85 * 100
    late = [rate for at, rate in sim.rates if at >= 60]
    assert min(late) >= 0.8 * 100, "the rate ratcheted down"
    assert sim.refused_share(30, 180) <= 0.10


async def test_occasional_429s_do_not_slow_a_run_at_the_limit_under_latency() -> None:
    sim = Simulation(rate=100, capacity=1000, latency=0.2, noise=0.005)
    await sim.run(120)
    assert sim.admitted_per_s(10, 120) >= 0.95 * 100
    assert sim.limiter.statistics().throttled > 0  # the noise was there


@pytest.mark.parametrize("latency", [0.0, 0.2])
async def test_after_a_burst_of_429s_the_rate_is_back_within_30_seconds(latency: float) -> None:
    sim = Simulation(rate=100, capacity=1000, latency=latency, forced=(20.0, 23.0))
    await sim.run(80)
    assert min(rate for _, rate in sim.rates) < 0.5 * 100  # the burst did slow it down
    back = next(at for at, rate in sim.rates if at > 23.0 and rate >= 0.9 * 100)
    assert back - 23.0 <= 30.0
    assert sim.admitted_per_s(60, 80) >= 0.95 * 100


@pytest.mark.parametrize("latency", [0.0, 0.5, 1.5])
async def test_the_first_estimate_is_what_the_server_admitted_whatever_the_latency(
    latency: float,
) -> None:
    """Sent at 300/s to a server admitting 100/s: the first cut estimates about 100/s.

    Counted by completion time in the last second, the answers trailing the sends
    by up to 1.5 s would make this anything from 0 to 100.
    """
    sim = Simulation(rate=300, capacity=100, latency=latency)
    with capture_logs() as logs:
        await sim.run(10)
    # (A cut in the first quarter second has no evidence yet and is a blind 10% step.)
    cuts = [e for e in logs if e["event"] == "rate.slowed_down" and e["admitted_per_s"] is not None]
    assert cuts, "no 429 made the limiter slow down"
    assert 90 <= cuts[0]["admitted_per_s"] <= 130
    # One cut at most halves the rate; the estimate is what the next cuts converge on.
    assert cuts[0]["rate"] == pytest.approx(cuts[0]["estimated_capacity"] * HEADROOM, abs=0.01)
    assert 90 <= cuts[-1]["admitted_per_s"] <= 130


async def test_a_429_for_a_request_sent_before_the_cut_does_not_cut_again() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    for i in range(10):  # the server admitted 5 a second
        limiter.succeeded(i / 5)
    clock.now = 2.0
    limiter.throttled(1.99)
    first = limiter.rate
    assert first == pytest.approx(100 * MAX_CUT)  # a real limit: cut, at most by half
    clock.now = 3.5  # past the cooldown, but the request was sent before the cut
    limiter.throttled(1.995)
    assert limiter.rate == first and limiter.statistics().cuts == 1


async def test_a_lone_429_among_many_admitted_is_noise() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    for i in range(200):
        limiter.succeeded(i / 100)
    clock.now = 2.0
    limiter.throttled(2.0)
    assert limiter.rate == 100 and limiter.statistics().cuts == 0


async def test_burst_is_granted_without_waiting_and_pause_blocks_everyone_and_is_logged() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(1, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert await limiter.acquire() == 0.0
    with capture_logs() as logs:
        limiter.pause(60)
    assert [e for e in logs if e["event"] == "rate.paused"] == [
        {"event": "rate.paused", "log_level": "info", "limiter": "akua-api", "seconds": 60,
         "reason": "Retry-After"}
    ]
    granted = await limiter.acquire()
    assert granted >= 60.0  # nobody got a slot during the pause
    assert limiter.statistics().paused_s == 60


async def test_throttled_says_whether_the_429_was_a_limit_or_noise() -> None:
    """Only a limit pauses the whole pool: the client asks ``throttled`` which it was."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    for i in range(200):
        limiter.succeeded(i / 100)
    clock.now = 2.0
    assert limiter.throttled(2.0) is False  # one in 200: noise
    for i in range(10):
        limiter.succeeded(2.0 + i / 100)
    clock.now = 2.2
    for i in range(15):
        limiter.throttled(2.1 + i / 1000)
    assert limiter.statistics().cuts == 1  # 16 in about 200: a limit, cut once ...
    clock.now = 2.3
    assert limiter.throttled(2.11) is False  # ... and the rest of that volley does not cut again


async def test_the_first_cut_is_a_limit_and_says_so() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    for i in range(10):
        limiter.succeeded(i / 5)
    clock.now = 2.0
    assert limiter.throttled(1.99) is True


async def _send_for(limiter: AdaptiveRateLimiter, clock: FakeClock, seconds: float) -> list[float]:
    """Acquire at the limiter's pace for ``seconds`` of simulated time; the send times."""
    sent: list[float] = []
    end = clock.now + seconds
    while clock.now < end:
        sent.append(await limiter.acquire())
        clock.now += 0.001  # each send takes a moment; acquire's sleep paces the rest
    return sent


async def test_the_evidence_window_starts_at_the_first_send_not_at_the_limiter_s_birth() -> None:
    """A run lists tags and reads manifests before its first write: that idle time is no
    evidence of what the server admits (counted, it read as a quarter of the rate)."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    clock.now = 10.0  # ten seconds of crawling before the first write
    sent = await _send_for(limiter, clock, 0.5)
    for at in sent[:-3]:
        limiter.succeeded(at)
    with capture_logs() as logs:
        for at in sent[-3:]:
            limiter.throttled(at)
    cuts = [e for e in logs if e["event"] == "rate.slowed_down"]
    assert cuts and 90 <= cuts[0]["admitted_per_s"] <= 110
    assert limiter.rate >= 0.9 * 100


async def test_requests_not_answered_yet_count_as_admitted() -> None:
    """429s come back sooner than successes (the server works on those): the sends of the
    window still waiting for their answer are not evidence of a lower capacity."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    sent = await _send_for(limiter, clock, 2.0)
    answered = [at for at in sent if at < 1.5]  # the last half second still being worked on
    for at in answered:
        limiter.succeeded(at)
    with capture_logs() as logs:
        for at in sent[-15:]:
            limiter.throttled(at)
    cuts = [e for e in logs if e["event"] == "rate.slowed_down"]
    assert cuts and cuts[0]["admitted_per_s"] >= 90  # counting answers only: about 75
    assert limiter.rate >= 0.9 * 100


async def test_occasional_429s_with_slow_successes_do_not_ratchet_the_rate() -> None:
    """The server model answers 429s at once and successes after 300 ms (its work)."""
    sim = SlowSuccesses(rate=100, capacity=1000, latency=0.3, noise=0.005, seed=3)
    await sim.run(120)
    assert sim.admitted_per_s(10, 120) >= 0.95 * 100
    assert min(rate for at, rate in sim.rates if at >= 10) >= 0.9 * 100


@dataclass
class SlowSuccesses(Simulation):
    """Like ``Simulation``, but a 429 is answered at once, a success ``latency`` later."""

    def _answer_after(self, admitted: bool) -> float:
        return self.latency if admitted else 0.0


async def test_a_429_while_sending_under_the_rate_is_a_bunch_not_what_the_server_admits() -> None:
    """Sending 50 a second of a budget of 100, 5% refused: the server admitted what it was
    asked for. Taken as its capacity, that estimate held the rate at half for 5 s."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    sent = []
    while clock.now < 1.9:  # a request ready every 20 ms
        sent.append(await limiter.acquire())
        clock.now = sent[-1] + 1 / 50
    for at in sent[:-6]:
        limiter.succeeded(at)
    with capture_logs() as logs:
        said = [limiter.throttled(at) for at in sent[-6:]]
    assert said == [False] * 4 + [True, False]  # the fifth is over 5%: a cut, one
    cuts = [e for e in logs if e["event"] == "rate.slowed_down"]
    assert [(e["rate"], e["estimated_capacity"], e["basis"]) for e in cuts] == [
        (90.0, None, "sent under the rate")]
    await _send_for(limiter, clock, 2.5)  # 1 s of cooldown, then growth
    assert limiter.rate == 100


async def test_a_refusing_server_under_the_client_s_demand_is_found_at_the_next_429() -> None:
    """Sending 50 a second to a server admitting 20: the first cut is blind (a 429 in the
    first 0.1 s), the next one, a second later, sees 60% of a window sent under the rate
    refused: that is a limit, and it counts what was admitted (about 20 a second; the
    rate still goes down at most by half a cut, to 20 by the fourth)."""
    sim = Simulation(rate=100, capacity=20, latency=0.05, demand=50)
    with capture_logs() as logs:
        await sim.run(30)
    cuts = [e for e in logs if e["event"] == "rate.slowed_down"]
    assert [e["basis"] for e in cuts[:2]] == ["too little sending time", "admitted rate"]
    assert cuts[1]["admitted_per_s"] == pytest.approx(20, rel=0.1)
    assert sim.admitted_per_s(10, 30) >= 0.9 * 20
    assert sim.refused_share(10, 30) <= 0.05


async def test_one_early_bunch_of_429s_costs_a_run_little() -> None:
    """A run's first request (a package lookup) at 0 s, its writes from 0.3 s, and two of
    them refused at 0.5 s (bunched on the way). The window from the first request holds
    0.2 s of nothing sent: read as capacity, it held the rate at 0.5 of it for 5 s."""
    sim = Simulation(rate=100, capacity=1000, latency=0.05, forced=(0.5, 0.52))
    sim.limiter.succeeded(await sim.limiter.acquire())
    sim.clock.now = 0.3
    await sim.run(10)
    assert sim.limiter.statistics().cuts == 1
    assert sim.admitted_per_s(2.5, 10) >= 0.97 * 100


def _bases(logs: list[dict[str, object]]) -> list[object]:
    return [e["basis"] for e in logs if e["event"] == "rate.slowed_down"]


async def test_a_limit_just_under_what_the_crawler_sends_is_estimated_at_the_next_429() -> None:
    """Sending 50 a second of a budget of 100 to a server admitting 40 (a fifth refused):
    one blind step, then the 429s a second later are a limit. Blind steps each second
    took 7 cuts and 6.7 s to find it, with 16% refused."""
    sim = Simulation(rate=100, capacity=40, latency=0.05, demand=50)
    with capture_logs() as logs:
        await sim.run(20)
    assert _bases(logs).count("sent under the rate") <= 1
    assert sim.refused_share(0, 10) <= 0.07
    assert sim.admitted_per_s(5, 20) >= 0.9 * 40


async def test_slots_lost_to_a_late_event_loop_are_not_budget_left_unused() -> None:
    """Every sleep 10 ms late, at 20 a second (a bucket of one slot): the crawler is busy
    all along, so a 429 is what the server admits. Counted as offered, the lost slots
    read as a crawler sending under its rate, and cut blind again and again."""
    sim = Simulation(rate=20, capacity=12, latency=0.05, clock=FakeClock(late=0.01))
    with capture_logs() as logs:
        await sim.run(30)
    assert _bases(logs).count("sent under the rate") == 0
    assert sim.refused_share(5, 30) <= 0.03


async def _volley(limiter: AdaptiveRateLimiter, clock: FakeClock, sent: list[float]) -> list[object]:
    """Answer ``sent``: all admitted but the last fifth, refused; the cuts' bases."""
    cut = len(sent) - len(sent) // 5
    for at in sent[:cut]:
        limiter.succeeded(at)
    with capture_logs() as logs:
        for at in sent[cut:]:
            limiter.throttled(at)
    return _bases(logs)


async def test_budget_used_is_counted_over_the_window_after_ten_seconds_of_history() -> None:
    """Past ``HISTORY_S`` old sends are forgotten: the slots offered must be forgotten with
    them, or the window is measured against the wrong stretch of time."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    history = await _send_for(limiter, clock, 3.0)  # at the rate
    while clock.now < 10.0:  # then 10 a second: a lull
        history.append(await limiter.acquire())
        clock.now = history[-1] + 0.1
    for at in history:
        limiter.succeeded(at)
    sent = await _send_for(limiter, clock, 3.0)  # at the rate again, then a 429 volley
    assert await _volley(limiter, clock, sent) == ["admitted rate"]


async def test_time_paused_is_not_budget_left_unused() -> None:
    """Sending at the rate, with a Retry-After pause in the window: no slot was offered
    while paused, so the crawler used its whole budget."""
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(100, 5, clock=clock, sleep=clock.sleep)
    sent = await _send_for(limiter, clock, 0.8)
    limiter.pause(0.5)
    sent += await _send_for(limiter, clock, 0.8)
    assert await _volley(limiter, clock, sent) == ["admitted rate"]

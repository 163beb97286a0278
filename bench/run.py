"""``python -m bench [--quick]``: measure the crawler against its targets.

Everything runs on loopback and is built here: docker-registry over seeded
storage (/dev/shm when it has room), the Akua double as a subprocess
(reconfigured through its admin endpoints between scenarios), and the
crawler as a subprocess, reaped with ``wait4`` for its peak RSS.  Figures
are ratios of runs made seconds apart in the same benchmark (the crawler
and its reference interleaved), so load from other processes on a shared
machine cancels as far as it can; the absolute times are recorded too.

Writes ``bench/out/results.json`` and prints a table; a full run (not
``--quick``) also rewrites the generated block of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.harness import (
    REPO_ROOT,
    Children,
    CrawlerRun,
    DoubleProcess,
    crawler_args,
    describe_failure,
    machine,
    run_crawler,
    run_timed,
    signals_raise,
    usable_cpus,
)
from bench.proxy import CountingProxy
from bench.worlds import World, make_world, storage_base

OUT_DIR: Final = REPO_ROOT / "bench" / "out"
RESULTS_MD: Final = REPO_ROOT / "bench" / "RESULTS.md"
MD_START: Final = "<!-- bench:generated:start -->"
MD_END: Final = "<!-- bench:generated:end -->"

RATE: Final = 100.0  # R of the burst scenario
UTILISATION_MIN: Final = 0.95  # import at >= 0.95 R ...
SHARE_429_MAX: Final = 0.01  # ... with at most 1% of writes answered 429
RECOVERY_S_MAX: Final = 30.0  # back to >= 0.9 R this soon after a burst of 429s
SCALING_SLACK: Final = 1.15  # "linear or better": per-1000 time may grow by noise only
RERUN_SLACK: Final = 2  # the "small constant" of registry requests a re-run may add
MEMORY_RATIO_MAX: Final = 1.3  # run with imports, 5,000 vs 500 artifacts
PLAN_RSS_RATIO_MAX: Final = 1.2  # plan, 50,000 vs 5,000 artifacts
MEMORY_MB_MAX: Final = 150.0
PARTS: Final = ("crawl", "scaling", "imports", "reruns", "memory")


@dataclass(frozen=True, slots=True)
class Sizes:
    crawl: tuple[int, int]  # repositories x tags for target 1 (every schema distinct)
    crawl_reps: int  # interleaved rounds of crawler plan and raw reference
    oras_reps: int
    deep: tuple[int, int]  # one repository with many tags (target 1f)
    deep_delays_s: tuple[float, ...]  # the registry that far away, through a delaying proxy
    deep_reps: int
    scaling: tuple[tuple[int, int], ...]
    scaling_reps: int  # for the points below 10,000 artifacts
    import_rates: tuple[float, ...]  # R: writes per second the double admits
    import_latencies_s: tuple[float, ...]
    import_seconds: float  # each import scenario writes about R x this many versions
    import_reps: int
    import_concurrency: int
    burst: tuple[int, int]  # 60 packages at 200 ms with occasional 429s, then a burst
    rerun: tuple[int, int]
    memory: tuple[tuple[int, int], tuple[int, int]]


FULL: Final = Sizes(
    crawl=(100, 50), crawl_reps=3, oras_reps=1,
    deep=(1, 2000), deep_delays_s=(0.01, 0.05), deep_reps=3,
    scaling=((10, 50), (100, 50), (1000, 50)), scaling_reps=3,
    import_rates=(100.0, 300.0, 1000.0), import_latencies_s=(0.0, 0.05, 0.2), import_seconds=8.0,
    import_reps=3, import_concurrency=16,
    burst=(60, 80),  # 4,800 versions: about 50 s at R, long enough to see the recovery
    rerun=(50, 10),
    memory=((10, 50), (100, 50)),
)
QUICK: Final = Sizes(
    crawl=(20, 50), crawl_reps=1, oras_reps=1,
    deep=(1, 500), deep_delays_s=(0.01,), deep_reps=1,
    scaling=((10, 50), (100, 50)), scaling_reps=1,
    import_rates=(100.0, 300.0), import_latencies_s=(0.0, 0.2), import_seconds=4.0,
    import_reps=1, import_concurrency=16,
    burst=(60, 20),
    rerun=(20, 10),
    memory=((10, 50), (100, 50)),
)


@dataclass(slots=True)
class Verdict:
    target: str
    measured: str
    goal: str
    met: bool | None  # None: could not be measured (see error)
    figure: float | None = None
    error: str | None = None
    info: bool = False  # a diagnostic figure, not a target


@dataclass(slots=True)
class Results:
    mode: str
    machine: dict[str, Any]
    sizes: dict[str, Any]
    started: str
    verdicts: list[Verdict] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    world_seconds: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0


class BenchError(RuntimeError):
    pass


def _cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a running process (to show how busy the registry was)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int, int] | None:
    """(busy, total, steal) clock ticks of every core since boot, from /proc/stat."""
    try:
        # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = sum(fields[3:5]) + sum(fields[7:8])  # idle, iowait, and steal: not ours to use
    return sum(fields) - idle, sum(fields), fields[7]


#: Fields of a ``_machine_ticks`` reading that ``_tick_share`` can measure.
BUSY, STEAL = 0, 2


def _tick_share(
    before: tuple[int, int, int] | None, after: tuple[int, int, int] | None, field: int
) -> float | None:
    """The share of the cores' time between two readings that went to ``field``: ``BUSY``
    (spent by this machine) or ``STEAL`` (the hypervisor ran someone else: CPU this
    machine was promised and did not get)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[field] - before[field]) / (after[1] - before[1])


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, children: Children, results: Results) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.children = children
        self.results = results
        imports = int(max(sizes.import_rates) * sizes.import_seconds)
        largest = max(imports, *(r * t for r, t in (*sizes.scaling, sizes.crawl, sizes.deep)))
        self.storage = storage_base(largest + 20_000)
        children.on_exit(lambda: shutil.rmtree(self.storage, ignore_errors=True))
        self.worlds: dict[str, World] = {}
        self.double = DoubleProcess(children, workdir)
        children.on_exit(self.double.stop)
        self._runs = 0
        # Plan runs per world shape, shared by target 1 and target 6.
        self._scaling_runs: dict[tuple[int, int], list[dict[str, Any]]] = {}

    # -- plumbing -----------------------------------------------------------

    def world(self, repos: int, tags: int, schemas: str = "unique") -> World:
        """The seeded, started world of that shape (made once, shared by scenarios)."""
        name = f"w{repos}x{tags}" + ("-shared" if schemas == "per-repository" else "")
        world = self.worlds.get(name)
        if world is None:
            print(f"  seeding {repos} x {tags} = {repos * tags} artifacts ({schemas} schemas) ...",
                  flush=True)
            world = make_world(self.storage, name, repos, tags, schemas)
            self.results.world_seconds[name] = round(world.seed_s, 2)
            self.worlds[name] = world
            self.children.on_exit(world.stop)
        return world.start(self.workdir)

    def drop_world(self, world: World) -> None:
        """Stop a world's registry and free its storage (the big one is ~1 GB of tmpfs)."""
        self.worlds.pop(world.name, None)
        if world is not None:
            world.stop()
            shutil.rmtree(world.root, ignore_errors=True)

    def _name(self, what: str) -> str:
        self._runs += 1
        return f"{self._runs:02d}-{what}"

    def crawler(
        self, mode: str, world: World | str, what: str, *, state: Path | None = None,
        rate: float | None = None, concurrency: int = 16, extra: tuple[str, ...] = (),
        timeout_s: float = 300.0, expect_ok: bool = True, registry_pid: int | None = None,
    ) -> tuple[CrawlerRun, dict[str, Any]]:
        name = self._name(what)
        host = world if isinstance(world, str) else world.host
        if registry_pid is None and isinstance(world, World) and world.registry is not None:
            registry_pid = world.registry.pid
        state = state or self.workdir / f"{name}.db"
        args = crawler_args(
            mode, registry=host, api_url=self.double.url, state=state, concurrency=concurrency,
            rate=rate, extra=extra,
        )
        registry_cpu = _cpu_seconds(registry_pid)
        double_cpu = _cpu_seconds(self.double.proc.pid)
        ticks = _machine_ticks()
        run = run_crawler(self.children, args, workdir=self.workdir, name=name, timeout_s=timeout_s)
        if expect_ok and not run.ok:
            raise BenchError(f"crawler {mode} ({what}) failed: {describe_failure(run)}")
        info = {
            "name": name,
            "status": run.process.status,
            "duration_s": round(run.duration_s, 3),
            "wall_s": round(run.process.wall_s, 3),
            "cpu_s": round(run.process.user_s + run.process.sys_s, 2),
            "max_rss_mb": round(run.process.max_rss_mb, 1),
            "items": run.finished.get("items"),
            "crawler_counts": run.finished.get("requests"),
            "outcomes": {k: run.finished.get(k) for k in ("imported", "exists", "skipped", "invalid",
                                                          "rejected", "failed") if run.finished.get(k)},
        }
        ticks_after = _machine_ticks()
        busy = _tick_share(ticks, ticks_after, BUSY)
        if busy is not None:
            info["machine_busy"] = round(busy, 3)
        steal = _tick_share(ticks, ticks_after, STEAL)
        if steal is not None:
            info["machine_steal"] = round(steal, 4)
        after = _cpu_seconds(registry_pid)
        if registry_cpu is not None and after is not None:
            info["registry_cpu_s"] = round(after - registry_cpu, 2)
        after = _cpu_seconds(self.double.proc.pid)
        if double_cpu is not None and after is not None:
            info["double_cpu_s"] = round(after - double_cpu, 2)
        return run, info

    def reference(
        self, kind: str, world: World, *, host: str | None = None, timeout_s: float = 600.0
    ) -> dict[str, Any]:
        name = self._name(f"ref-{kind}")
        registry_cpu = _cpu_seconds(world.registry.pid if world.registry else None)
        run = run_timed(
            self.children,
            [sys.executable, "-m", "bench.reference", kind, "--registry", host or world.host],
            stdout=self.workdir / f"{name}.out", stderr=self.workdir / f"{name}.log",
            timeout_s=timeout_s,
        )
        if run.status != 0 or run.timed_out:
            tail = run.stderr.read_text(errors="replace")[-400:]
            raise BenchError(f"reference {kind} failed (status {run.status}): {tail}")
        result: dict[str, Any] = json.loads(run.stdout.read_text().strip().splitlines()[-1])
        result["wall_s"] = round(run.wall_s, 3)
        result["seconds"] = round(result["seconds"], 3)
        result["cpu_s"] = round(run.user_s + run.sys_s, 2)
        after = _cpu_seconds(world.registry.pid if world.registry else None)
        if registry_cpu is not None and after is not None:
            result["registry_cpu_s"] = round(after - registry_cpu, 2)
        return result

    def verdict(self, v: Verdict) -> None:
        self.results.verdicts.append(v)
        mark = "info" if v.info else {True: "met", False: "NOT MET", None: "error"}[v.met]
        print(f"  -> {v.target}: {v.measured} (goal {v.goal}): {mark}", flush=True)

    # -- target 1: crawl speed ------------------------------------------------

    def crawl_speed(self) -> None:
        repos, tags = self.sizes.crawl
        world = self.world(repos, tags)  # every version with a schema of its own
        plans, raws = _interleaved(
            lambda: self._plan(world), lambda: self.reference("raw", world), self.sizes.crawl_reps
        )
        orases = [self.reference("oras", world) for _ in range(self.sizes.oras_reps)]
        # Diagnostic: the same shape with one schema per repository (the verdict cache's best case).
        shared = self._plan(self.world(repos, tags, "per-repository"))
        plan_s = _median([p["duration_s"] for p in plans])
        raw_s = _median([r["seconds"] for r in raws])
        oras_s = _median([o["seconds"] for o in orases])
        artifacts = repos * tags
        ratios = [_ratio(p["duration_s"], r["seconds"]) for p, r in zip(plans, raws, strict=True)]
        plan_cpu = [p["cpu_s"] / artifacts * 1000 for p in plans]
        raw_cpu = [r["cpu_s"] / artifacts * 1000 for r in raws]
        cpu_ratios = [_ratio(p, r) for p, r in zip(plan_cpu, raw_cpu, strict=True)]
        self.results.measurements["crawl_speed"] = {
            "repositories": repos, "tags": tags, "artifacts": artifacts, "schemas": "unique",
            "plan": plans, "raw_reference": raws, "oras_sequential": orases,
            "plan_shared_schemas": shared,
            "plan_s": plan_s, "raw_s": raw_s, "oras_s": oras_s, "time_ratios": ratios,
            "plan_cpu_ms_per_artifact": plan_cpu, "raw_cpu_ms_per_artifact": raw_cpu,
            "oras_cpu_ms_per_artifact": round(_median([o["cpu_s"] for o in orases]) / artifacts * 1000, 3),
        }
        ratio = _median(ratios)
        self.verdict(Verdict(
            "1a plan time / raw reference (16 threads), distinct schemas",
            f"{_spread(ratios)} ({plan_s:.1f}s vs {raw_s:.1f}s)", "<= 1.0x", ratio <= 1.0, ratio,
        ))
        cpu_ratio = _median(cpu_ratios)
        self.verdict(Verdict(
            "1b plan CPU / raw reference CPU",
            f"{_spread(cpu_ratios)} ({_median(plan_cpu):.2f} vs {_median(raw_cpu):.2f} ms per artifact)",
            "<= 1.0x", cpu_ratio <= 1.0, cpu_ratio,
        ))
        speedup = _ratio(oras_s, plan_s)
        self.verdict(Verdict(
            "1c speed-up over sequential oras-py",
            f"{speedup:.2f}x ({oras_s:.1f}s vs {plan_s:.1f}s); raw reference: {_ratio(oras_s, raw_s):.2f}x",
            "(context)", None, speedup, info=True,
        ))
        shared_ratio = _ratio(shared["duration_s"], raw_s)
        self.verdict(Verdict(
            "1d plan / raw with one schema per repository",
            f"{shared_ratio:.2f}x ({shared['duration_s']:.1f}s, {shared['cpu_s'] / artifacts * 1000:.2f} ms "
            "CPU per artifact)", "(the verdict cache's best case)", None, shared_ratio, info=True,
        ))
        if (repos, tags) in self.sizes.scaling:
            self._scaling_runs.setdefault((repos, tags), []).extend(plans)
        self._deep_repository()

    def _deep_repository(self) -> None:
        """Target 1f: one repository with many tags, the registry 10 and 50 ms away."""
        repos, tags = self.sizes.deep
        world = self.world(repos, tags)
        found: dict[str, Any] = {}
        for delay in self.sizes.deep_delays_s:
            with CountingProxy(world.host, delay_s=delay) as proxy:
                host = proxy.host
                plans, raws = _interleaved(
                    functools.partial(self._plan, world, host=host),
                    functools.partial(self.reference, "raw", world, host=host),
                    self.sizes.deep_reps,
                )
            ratios = [_ratio(p["duration_s"], r["seconds"]) for p, r in zip(plans, raws, strict=True)]
            found[f"{delay * 1000:g}ms"] = {"plan": plans, "raw_reference": raws, "time_ratios": ratios}
            ratio = _median(ratios)
            self.verdict(Verdict(
                f"1f plan / raw, {repos} x {tags}, registry {delay * 1000:g} ms away",
                f"{_spread(ratios)} ({_median([p['duration_s'] for p in plans]):.1f}s vs "
                f"{_median([r['seconds'] for r in raws]):.1f}s)",
                "<= 1.2x", ratio <= 1.2, ratio,
            ))
        self.results.measurements["deep_repository"] = {"repositories": repos, "tags": tags, **found}

    def _plan(self, world: World, *, host: str | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
        run, info = self.crawler(
            "plan", host or world, f"plan-{world.name}", timeout_s=timeout_s,
            registry_pid=world.registry.pid if world.registry else None,
        )
        if run.finished.get("items") != world.artifacts:
            raise BenchError(f"plan over {world.name} saw {run.finished.get('items')} items, "
                             f"expected {world.artifacts}")
        return info

    # -- targets 2 and 3: importing at the server's limit ------------------------

    def imports(self) -> None:
        """Targets 2: utilisation of an API admitting R writes/s, at R x latency, default settings."""
        scenarios = [(rate, latency) for rate in self.sizes.import_rates
                     for latency in self.sizes.import_latencies_s]
        worlds = {rate: self.world(max(1, int(rate * self.sizes.import_seconds / 10)), 10)
                  for rate in self.sizes.import_rates}
        runs: dict[tuple[float, float], list[dict[str, Any]]] = {key: [] for key in scenarios}
        errors: dict[tuple[float, float], str] = {}
        for _round in range(self.sizes.import_reps):  # rounds outside, so scenarios interleave
            for rate, latency in scenarios:
                if (rate, latency) in errors:
                    continue
                try:
                    runs[(rate, latency)].append(self._import_run(worlds[rate], rate, rate, latency))
                except BenchError as exc:
                    errors[(rate, latency)] = str(exc)
        found: dict[str, Any] = {}
        for rate, latency in scenarios:
            title = f"2 import at R = {rate:g}, API latency {latency * 1000:g} ms"
            done = runs[(rate, latency)]
            if not done:
                self.verdict(Verdict(title, "-", "-", None, error=errors.get((rate, latency))))
                continue
            found[f"R{rate:g}-l{latency * 1000:g}ms"] = done
            fractions = [m["versions_per_s"] / rate for m in done]
            shares = [m["share_429"] for m in done]
            per_version = _cpu_per_version(done)
            busy = [m["machine_busy"] for m in done if m.get("machine_busy") is not None]
            # The crawler's CPU seconds per second of its run, all its threads together.
            cores = _median([m["cpu_s"] / m["wall_s"] for m in done if m.get("wall_s")])
            measured = (f"{_spread(fractions)} R, 429s {max(shares):.1%} at most; CPU per version: "
                        f"crawler {per_version['crawler']:.1f} ms, "
                        f"registry {per_version['registry']:.1f} ms, "
                        f"double {per_version['double']:.1f} ms; crawler busy {cores:.2f} core, machine "
                        f"{_median(busy) if busy else math.nan:.0%} busy"
                        f"{_per_round(fractions, done)}; "
                        f"{_needed_at_goal(rate, per_version)}")
            target = rate <= 300
            ok = (min(fractions) >= UTILISATION_MIN * 0.97 and _median(fractions) >= UTILISATION_MIN
                  and max(shares) <= SHARE_429_MAX)
            goal = f">= {UTILISATION_MIN} R, 429s <= {SHARE_429_MAX:.0%}" if target else "(report the limit)"
            self.verdict(Verdict(title, measured, goal, ok if target else None, _median(fractions),
                                 info=not target))
        self.results.measurements["imports"] = found
        self._burst()

    def _burst(self) -> None:
        """2d/2e: 60 packages at 200 ms with occasional 429s; then a burst of 429s and the recovery."""
        repos, tags = self.sizes.burst
        world = self.world(repos, tags)
        steady = self._import_run(world, RATE, RATE, 0.2, force_429_rate=0.005)
        fraction = steady["versions_per_s"] / RATE
        self.verdict(Verdict(
            f"2d {repos} packages, 200 ms latency, 0.5% random 429s",
            f"{fraction:.2f} R, {steady['share_429']:.1%} 429s", f">= {UTILISATION_MIN} R",
            fraction >= UTILISATION_MIN, fraction,
        ))
        burst_at, burst_s = 5.0, 3.0
        timeline = self._import_run(world, RATE, RATE, 0.2, burst=(burst_at, burst_s))
        recovery = _recovery_seconds(timeline["writes_per_second"], burst_at + burst_s, 0.9 * RATE)
        self.results.measurements["burst"] = {"steady": steady, "burst": timeline,
                                              "recovery_s": recovery}
        self.verdict(Verdict(
            f"2e back to >= 0.9 R after {burst_s:g} s of 429s",
            "never recovered" if recovery is None else f"{recovery:.0f} s after the burst ended",
            f"<= {RECOVERY_S_MAX:g} s", recovery is not None and recovery <= RECOVERY_S_MAX,
            recovery,
        ))

    def _import_run(
        self, world: World, server_rate: float | None, crawler_rate: float | None, latency: float,
        *, force_429_rate: float = 0.0, burst: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """One ``run`` into a fresh double; ``crawler_rate`` None means the crawler's default."""
        self.double.reset(write_rate_limit=server_rate, latency_s=latency, force_429_rate=force_429_rate)
        rate = server_rate or RATE
        timer = None
        if burst is not None:
            at, length = burst
            timer = _Burst(self.double, at, length, force_429_rate)
            timer.start()
        try:
            run, info = self.crawler(
                "run", world, f"import-r{server_rate or 0:g}-l{latency:g}", rate=crawler_rate,
                concurrency=self.sizes.import_concurrency,
                timeout_s=max(120.0, world.artifacts / rate * 6),
            )
        finally:
            if timer is not None:
                timer.cancel()
        received = self.double.state(log=True)["received"]
        posts = [r for r in received if r["method"] == "POST"]
        created = sorted(r["at"] for r in posts if r["created_id"])
        throttled = sum(1 for r in posts if r["status"] == 429)
        start = min((r["at"] for r in posts), default=0.0)
        per_second = [0] * (int(created[-1] - start) + 1 if created else 0)
        for at in created:
            per_second[int(at - start)] += 1
        if len(created) != world.artifacts:
            raise BenchError(f"import into {world.name} created {len(created)} of {world.artifacts} versions")
        # Utilisation over the writing window: from the first POST to the last version created.
        window = created[-1] - start if created else 0.0
        return {
            **info,
            "crawler_rate": crawler_rate, "server_rate": server_rate, "latency_s": latency,
            "versions": len(created), "posts": len(posts), "throttled": throttled,
            "share_429": throttled / len(posts) if posts else 0.0,
            "gets": sum(1 for r in received if r["method"] == "GET"),
            "versions_per_s": round(len(created) / window, 2) if window > 0 else 0.0,
            "run_versions_per_s": round(len(created) / run.duration_s, 2),
            "writes_per_second": per_second,  # from the first POST, whole seconds
            "throttled_at_s": [round(r["at"] - start, 3) for r in posts if r["status"] == 429],
        }

    # -- target 4: re-runs -------------------------------------------------------

    def reruns(self) -> None:
        repos, tags = self.sizes.rerun
        world = self.world(repos, tags)
        versions = repos * tags
        # Each listing ends with one last= request past its final page (README:
        # "Listings and registry quirks"): one for the catalog, one per tag listing.
        catalog_pages = max(1, math.ceil(repos / 1000)) + 1
        self.double.reset(write_rate_limit=None, latency_s=0.0)
        state = self.workdir / f"rerun-{repos}x{tags}.db"
        measured: dict[str, Any] = {"repositories": repos, "tags": tags}
        with CountingProxy(world.host) as proxy:
            steps = [("first", ()), ("rerun", ()), ("recheck", ("--recheck-digests",))]
            for what, extra in steps:
                before = self.double.state(log=False)["counts"]
                proxy.take()
                _run, info = self.crawler(
                    "run", proxy.host, f"rerun-{what}", state=state, rate=10_000, extra=extra,
                    registry_pid=world.registry.pid if world.registry else None,
                )
                registry = proxy.take()
                after = self.double.state(log=True)
                received = after["received"][before["total"]:]
                measured[what] = {
                    **info,
                    "registry_requests": registry,
                    "akua_requests": len(received),
                    "akua_writes": sum(1 for r in received if r["method"] == "POST"),
                }
        self.results.measurements["reruns"] = measured
        first = measured["first"]
        if first["akua_writes"] < versions:
            self.verdict(Verdict("4 re-runs", "-", "-", None,
                                 error=f"the first run wrote only {first['akua_writes']} of {versions}"))
            return
        rerun = measured["rerun"]
        reg = rerun["registry_requests"]
        allowed = catalog_pages + 2 * repos + RERUN_SLACK
        total = sum(reg.values())
        ok = (rerun["akua_writes"] == 0 and reg.get("catalog", 0) == catalog_pages
              and reg.get("tags", 0) == 2 * repos and total <= allowed)
        self.verdict(Verdict(
            "4a re-run, nothing new",
            f"{rerun['akua_writes']} Akua writes ({rerun['akua_requests']} requests); registry "
            f"{total} requests ({_kinds(reg)}) for {repos} repos",
            f"0 writes; <= {allowed} registry requests (catalog + tag lists, each with its "
            f"last= request, + {RERUN_SLACK})",
            ok, float(total),
        ))
        recheck = measured["recheck"]
        reg = recheck["registry_requests"]
        ok = (recheck["akua_writes"] == 0 and reg.get("manifest_get", 0) == 0
              and reg.get("manifest_head", 0) == versions)
        self.verdict(Verdict(
            "4b re-run --recheck-digests",
            f"{reg.get('manifest_head', 0)} HEAD, {reg.get('manifest_get', 0)} GET of manifests "
            f"for {versions} versions; {recheck['akua_writes']} Akua writes",
            f"HEADs only ({versions}), 0 GET, 0 writes", ok, float(reg.get("manifest_get", 0)),
        ))

    # -- target 5: memory --------------------------------------------------------

    def memory(self) -> None:
        points = []
        for repos, tags in self.sizes.memory:
            world = self.world(repos, tags)
            self.double.reset(write_rate_limit=None, latency_s=0.0)
            state = self.workdir / f"memory-{repos}x{tags}.db"
            run, info = self.crawler(
                "run", world, f"memory-{world.name}", state=state, rate=10_000,
                timeout_s=max(120.0, world.artifacts / 20),
            )
            if run.finished.get("imported") != world.artifacts:
                raise BenchError(f"memory run over {world.name} imported {run.finished.get('imported')}")
            state_bytes = sum(
                p.stat().st_size for p in (state, state.with_name(state.name + "-wal")) if p.exists()
            )
            info.update(artifacts=world.artifacts, state_bytes=state_bytes,
                        state_bytes_per_item=round(state_bytes / world.artifacts, 1))
            points.append(info)
        small, large = points
        ratio = _ratio(large["max_rss_mb"], small["max_rss_mb"])
        self.results.measurements["memory"] = {"points": points, "rss_ratio": round(ratio, 3)}
        self.verdict(Verdict(
            "5a peak RSS, run 5,000 vs 500" if large["artifacts"] == 5000 else "5a peak RSS ratio",
            f"{ratio:.2f}x ({small['max_rss_mb']:.0f} MB at {small['artifacts']}, "
            f"{large['max_rss_mb']:.0f} MB at {large['artifacts']})",
            f"<= {MEMORY_RATIO_MAX}x", ratio <= MEMORY_RATIO_MAX, ratio,
        ))
        peak = max(p["max_rss_mb"] for p in points)
        self.verdict(Verdict(
            "5b peak RSS", f"{peak:.0f} MB", f"<= {MEMORY_MB_MAX:.0f} MB", peak <= MEMORY_MB_MAX, peak,
        ))
        per_item = large["state_bytes_per_item"]
        self.verdict(Verdict(
            "5c state store per item", f"{per_item:.0f} B/item ({large['state_bytes']} B for "
            f"{large['artifacts']})", "(reported)", None, per_item, info=True,
        ))

    # -- target 6: scaling -------------------------------------------------------

    def scaling(self) -> None:
        rows = []
        for repos, tags in self.sizes.scaling:
            runs = self._scaling_runs.setdefault((repos, tags), [])
            world = self.world(repos, tags)
            reps = self.sizes.scaling_reps if repos * tags < 10_000 else 1
            while len(runs) < reps:
                runs.append(self._plan(world, timeout_s=max(300.0, world.artifacts / 60)))
            duration = _median([r["duration_s"] for r in runs])
            wall = _median([r["wall_s"] for r in runs])
            artifacts = repos * tags
            rows.append({
                "artifacts": artifacts, "repositories": repos, "tags": tags, "runs": runs,
                "duration_s": duration, "wall_s": wall,
                "s_per_1000": round(duration / artifacts * 1000, 3),
                "wall_s_per_1000": round(wall / artifacts * 1000, 3),
                "max_rss_mb": max(r["max_rss_mb"] for r in runs),
                # CPU moves less than wall time with the machine's load: is the time real?
                "cpu_s_per_1000": round(_median([r["cpu_s"] for r in runs]) / artifacts * 1000, 3),
            })
            if artifacts >= 50_000:
                self.drop_world(world)
        self.results.measurements["scaling"] = rows
        growth = [_ratio(b["s_per_1000"], a["s_per_1000"]) for a, b in itertools.pairwise(rows)]
        if len(rows) >= 2 and rows[-1]["artifacts"] >= 10 * rows[-2]["artifacts"]:
            big, small = rows[-1], rows[-2]
            rss_ratio = _ratio(big["max_rss_mb"], small["max_rss_mb"])
            self.verdict(Verdict(
                f"5d plan peak RSS, {big['artifacts']:,} vs {small['artifacts']:,} artifacts",
                f"{rss_ratio:.2f}x ({small['max_rss_mb']:.0f} MB, {big['max_rss_mb']:.0f} MB)",
                f"<= {PLAN_RSS_RATIO_MAX}x", rss_ratio <= PLAN_RSS_RATIO_MAX, rss_ratio,
            ))
        ok = all(g <= SCALING_SLACK for g in growth)
        measured = ", ".join(f"{r['s_per_1000']:.2f}s at {r['artifacts']}" for r in rows)
        rss = "/".join(f"{r['max_rss_mb']:.0f}" for r in rows)
        cpu = "/".join(f"{r['cpu_s_per_1000']:.2f}" for r in rows)
        self.verdict(Verdict(
            "6 plan time per 1,000 artifacts",
            measured + f" (step growth {', '.join(f'{g:.2f}x' for g in growth)}; CPU per 1,000 "
            f"{cpu} s, process start included; plan peak RSS {rss} MB)",
            f"linear or better (each step <= {SCALING_SLACK}x)", ok, max(growth) if growth else None,
        ))


def _interleaved(
    first: Callable[[], dict[str, Any]], second: Callable[[], dict[str, Any]], rounds: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``rounds`` runs of each, alternating which goes first, so machine drift hits both alike."""
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    for round_ in range(rounds):
        if round_ % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
    return a, b


def _spread(values: list[float]) -> str:
    """``median [min-max] xN``: three or more interleaved rounds show how much the machine moved."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{_median(values):.2f} [{min(values):.2f}-{max(values):.2f}] x{len(values)}"


def _cpu_per_version(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU milliseconds per version created, for the crawler, the registry and the double."""
    out = {}
    for key, field_ in (("crawler", "cpu_s"), ("registry", "registry_cpu_s"), ("double", "double_cpu_s")):
        values = [r[field_] / r["versions"] * 1000 for r in runs
                  if r.get(field_) is not None and r["versions"]]
        out[key] = _median(values) if values else math.nan
    return out


def _per_round(fractions: list[float], runs: list[dict[str, Any]]) -> str:
    """Each round's utilisation beside its CPU per version (the crawler's and the
    registry's) and the hypervisor's steal: a round that falls short on a slower host
    shows it in the registry's figure too, whose code is the same in every round."""
    rounds = []
    for fraction, m in zip(fractions, runs, strict=True):
        if m.get("machine_steal") is None:
            continue
        parts = []
        if m["versions"]:
            parts.append(f"crawler {m['cpu_s'] / m['versions'] * 1000:.1f} ms")
            if m.get("registry_cpu_s"):
                parts.append(f"registry {m['registry_cpu_s'] / m['versions'] * 1000:.1f} ms")
        parts.append(f"steal {m['machine_steal']:.1%}")
        rounds.append(f"{fraction:.2f} R: {', '.join(parts)}")
    return f"; per round: {'; '.join(rounds)}" if rounds else ""


def _needed_at_goal(rate: float, per_version: dict[str, float]) -> str:
    """The CPU the goal asks for, from the CPU per version measured: what proves a limit."""
    versions_per_s = UTILISATION_MIN * rate
    crawler = versions_per_s * per_version["crawler"] / 1000
    every = versions_per_s * sum(per_version.values()) / 1000
    return (f"{UTILISATION_MIN} R needs {crawler:.2f} core of the crawler (one interpreter) and "
            f"{every:.2f} of the machine's {usable_cpus()}")


def _recovery_seconds(per_second: list[int], burst_end_s: float, floor: float) -> float | None:
    """Seconds from the burst's end to the first two whole seconds in a row at >= floor writes."""
    first = math.ceil(burst_end_s)
    for second in range(first, len(per_second) - 1):
        if per_second[second] >= floor and per_second[second + 1] >= floor:
            return float(second - burst_end_s) if second > burst_end_s else 0.0
    return None


class _Burst:
    """After ``at`` seconds, every write is answered 429 for ``length`` seconds, then as before."""

    def __init__(self, double: DoubleProcess, at: float, length: float, base_rate: float) -> None:
        self._double = double
        self._at = at
        self._length = length
        self._base = base_rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-burst", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        if self._stop.wait(self._at):
            return
        self._double.configure(force_429_rate=1.0)
        self._stop.wait(self._length)
        self._double.configure(force_429_rate=self._base)


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


# ------------------------------------------------------------------ output


def table(results: Results) -> str:
    rows = [("target", "measured", "goal", "verdict")]
    for v in sorted(results.verdicts, key=lambda v: v.target.split()[0]):  # "1a" ... "6"
        verdict = "info" if v.info else {True: "met", False: "NOT MET", None: "error"}[v.met]
        if v.error:
            verdict += f": {v.error[:120]}"
        rows.append((v.target, v.measured, v.goal, verdict))
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info.get('nproc')} CPUs ({info.get('cpu', '?')}), {info.get('memory_gb')} GB RAM, "
        f"Python {info.get('python')}, {info.get('registry')}, load average at start "
        f"{info.get('load_at_start')}, commit {info.get('commit')}"
    )


def update_results_md(results: Results, path: Path = RESULTS_MD) -> None:
    block = "\n".join([
        MD_START,
        f"Measured {results.started} with `python -m bench` ({results.mode}, {results.total_s:.0f} s).",
        "",
        f"Machine: {machine_line(results.machine)}.",
        "",
        table(results),
        "",
        "Raw figures: `bench/out/results.json` (not committed).",
        MD_END,
    ])
    text = path.read_text() if path.exists() else "# Benchmark results\n\n" + MD_START + "\n" + MD_END + "\n"
    if MD_START in text and MD_END in text:
        head, rest = text.split(MD_START, 1)
        _, tail = rest.split(MD_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# -------------------------------------------------------------------- main


@contextlib.contextmanager
def _step(bench: Bench, name: str) -> Iterator[None]:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
    started = time.perf_counter()
    try:
        yield
    except BenchError as exc:
        bench.verdict(Verdict(name, "-", "-", None, error=str(exc)))
    except Exception as exc:
        traceback.print_exc()
        bench.verdict(Verdict(name, "-", "-", None, error=f"{type(exc).__name__}: {exc}"))
    finally:
        bench.results.measurements.setdefault("steps", {})[name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller worlds, one repetition (< 3 min)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only these parts (repeatable)")
    parser.add_argument("--results-md", choices=["auto", "yes", "no"], default="auto",
                        help="rewrite the generated block of bench/RESULTS.md (auto: full runs only)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, state files)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    parts = args.only or list(PARTS)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="akua-bench-work-"))
    results = Results(
        mode="quick" if args.quick else "full", machine=machine(), sizes=asdict(sizes),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    print(f"akua-crawler benchmark ({results.mode}); machine: {machine_line(results.machine)}")
    print(f"work directory: {workdir}", flush=True)
    started = time.perf_counter()
    children = Children()
    try:
        with signals_raise():
            bench = Bench(sizes, workdir, children, results)
            steps = {
                "crawl": ("target 1: crawl speed", bench.crawl_speed),
                "scaling": ("target 6: scaling", bench.scaling),
                "imports": ("targets 2, 3: import at the limit", bench.imports),
                "reruns": ("target 4: re-runs", bench.reruns),
                "memory": ("target 5: memory", bench.memory),
            }
            for part in PARTS:
                if part in parts:
                    title, call = steps[part]
                    with _step(bench, title):
                        call()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every child process", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        results.total_s = time.perf_counter() - started
        (OUT_DIR / "results.json").write_text(json.dumps(asdict(results), indent=2, default=str) + "\n")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    print(f"\nmachine: {machine_line(results.machine)}")
    print(f"total {results.total_s:.0f} s; figures in {OUT_DIR / 'results.json'}")
    if args.results_md == "yes" or (args.results_md == "auto" and not args.quick and not args.only):
        update_results_md(results)
        print(f"updated {RESULTS_MD}")
    # Missed targets are results, not failures: only a measurement that broke fails the run.
    return 1 if any(v.met is None and not v.info for v in results.verdicts) else 0

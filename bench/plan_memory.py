"""Plan peak RSS at two registry sizes: does the plan's memory grow with the registry?

``python -m bench.plan_memory [--small 5000] [--large 20000] [--tags 50] [--max-ratio 1.2]``

A quicker check than the full benchmark's row 5d (5,000 against 50,000
artifacts, a few minutes of seeding and a four-minute plan): seeds two worlds
of ``--small`` and ``--large`` artifacts (``--tags`` per repository, every
schema distinct), runs ``akua-crawler plan`` over each as a child process
and reads its peak RSS from ``wait4``.  Prints one JSON line per world and a
summary; exits 1 when the large world's peak is over ``--max-ratio`` times the
small one's, 2 when a plan failed.  Also checks that each plan printed one
line per artifact plus its ``TOTAL``.  Below about 100 repositories of 50 tags
a plan ends before its read-ahead pool is full, so keep ``--small`` at 5,000 or more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.harness import Children, DoubleProcess, crawler_args, describe_failure, run_crawler
from bench.worlds import make_world, storage_base


def plan_peak(children: Children, double: DoubleProcess, base: Path, work: Path,
              artifacts: int, tags: int) -> dict[str, Any]:
    repos = max(1, artifacts // tags)
    world = make_world(base, f"w{repos}x{tags}", repos, tags, "unique").start(work)
    try:
        name = f"plan-{repos}x{tags}"
        args = crawler_args("plan", registry=world.host, api_url=double.url,
                            state=work / f"{name}.db")
        run = run_crawler(children, args, workdir=work, name=name,
                          timeout_s=max(300.0, world.artifacts / 30))
        if not run.ok:
            raise RuntimeError(f"plan over {world.name} failed: {describe_failure(run)}")
        with (work / f"{name}.out").open("rb") as out:
            printed = sum(1 for _ in out)
        if printed != world.artifacts + 1 or run.finished.get("items") != world.artifacts:
            raise RuntimeError(f"plan over {world.name}: {printed} lines, "
                               f"{run.finished.get('items')} items for {world.artifacts} artifacts")
        return {
            "artifacts": world.artifacts, "max_rss_mb": round(run.process.max_rss_mb, 1),
            "duration_s": round(run.duration_s, 2), "cpu_s": round(run.process.user_s
                                                                   + run.process.sys_s, 2),
        }
    finally:
        world.stop()
        shutil.rmtree(world.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--max-ratio", type=float, default=1.2)
    args = parser.parse_args()
    base = storage_base(args.large)
    work = base / "work"
    work.mkdir()
    children = Children()
    try:
        double = DoubleProcess(children, work)
        points = []
        for artifacts in (args.small, args.large):
            point = plan_peak(children, double, base, work, artifacts, args.tags)
            print(json.dumps(point), flush=True)
            points.append(point)
    except RuntimeError as exc:
        print(f"bench.plan_memory: {exc}", file=sys.stderr)
        return 2
    finally:
        children.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    small, large = points
    ratio = large["max_rss_mb"] / small["max_rss_mb"]
    met = ratio <= args.max_ratio
    print(json.dumps({"rss_ratio": round(ratio, 3), "goal": f"<= {args.max_ratio}x", "met": met,
                      "cpu_ms_per_artifact": [round(p["cpu_s"] / p["artifacts"] * 1000, 2)
                                              for p in points]}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Client CPU per manifest: the crawler's registry layer against a plain requests loop.

``python -m bench.registry_cpu [--artifacts 2000] [--rounds 3] [--concurrency 16]``

Starts a local docker-registry seeded with ``--artifacts`` manifests (20
repositories, distinct annotations each), then, interleaved per round:

* ``raw``: ``--concurrency`` threads, one ``requests.Session`` each, GET every
  manifest with the OCI Accept type, read the body, sha256 it, json.loads it;
* ``crawler``: ``crawler.registry.Registry`` (max_in_flight = concurrency),
  that many anyio tasks calling ``manifest()`` for every tag.

Reports this process's CPU time (user + system, ``time.process_time``) per
manifest for each, and the ratio.  The registry's own CPU is not counted: it
is the same work for both.  Prints one JSON line per round and a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import requests

from crawler.registry import Registry, RegistryEndpoint
from testkit.registry import LocalRegistry, Seeder, package_annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join((OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"))
REPOSITORIES = 20


def seed(root: Path, artifacts: int) -> list[tuple[str, str]]:
    seeder = Seeder(root)
    targets = []
    for i in range(artifacts):
        repo = f"cpu/r{i % REPOSITORIES:02d}"
        tag = f"1.{i // REPOSITORIES}.0"
        schema = {"type": "object", "title": f"v{i}", "properties": {"n": {"type": "integer"}}}
        seeder.add_artifact(repo, [tag], annotations=package_annotations(schema, f"artifact {i}"))
        targets.append((repo, tag))
    return targets


def raw(host: str, targets: list[tuple[str, str]], concurrency: int) -> float:
    local = threading.local()

    def one(target: tuple[str, str]) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        repo, tag = target
        response = session.get(f"http://{host}/v2/{repo}/manifests/{tag}",
                               headers={"Accept": ACCEPT}, timeout=30)
        response.raise_for_status()
        body = response.content
        hashlib.sha256(body).hexdigest()
        json.loads(body)

    started = time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, targets))
    return time.process_time() - started


def crawler(host: str, targets: list[tuple[str, str]], concurrency: int) -> float:
    async def go() -> float:
        endpoint = RegistryEndpoint(host=host, plain_http=True, timeout_s=30)
        async with Registry(endpoint, max_in_flight=concurrency) as registry:
            send, receive = anyio.create_memory_object_stream[tuple[str, str]](concurrency)

            async def worker(mine: Any) -> None:
                async with mine:
                    async for repo, tag in mine:
                        await registry.manifest(repo, tag)

            started = time.process_time()
            async with anyio.create_task_group() as group:
                with receive:
                    for _ in range(concurrency):
                        group.start_soon(worker, receive.clone())
                async with send:
                    for target in targets:
                        await send.send(target)
            return time.process_time() - started

    return anyio.run(go)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-cpu-") as tmp:
        targets = seed(Path(tmp) / "storage", args.artifacts)
        with LocalRegistry(Path(tmp) / "storage", workdir=Path(tmp) / "work") as registry:
            crawler(registry.host, targets[:50], args.concurrency)  # warm up imports, caches
            raw(registry.host, targets[:50], args.concurrency)
            ratios: list[float] = []
            rows: list[dict[str, Any]] = []
            for number in range(args.rounds):
                order = (raw, crawler) if number % 2 == 0 else (crawler, raw)
                cpu = {fn.__name__: fn(registry.host, targets, args.concurrency) for fn in order}
                row = {name: round(seconds / len(targets) * 1e6, 1) for name, seconds in cpu.items()}
                row["ratio"] = round(cpu["crawler"] / cpu["raw"], 3)
                ratios.append(row["ratio"])
                rows.append(row)
                print(json.dumps({"round": number, "us_per_manifest": row}), flush=True)
    print(json.dumps({
        "artifacts": args.artifacts, "concurrency": args.concurrency,
        "raw_us_median": statistics.median(r["raw"] for r in rows),
        "crawler_us_median": statistics.median(r["crawler"] for r in rows),
        "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
    }))


if __name__ == "__main__":
    main()

"""Reference crawls the crawler's ``plan`` is compared with; run as a subprocess.

``python -m bench.reference raw --registry HOST [--threads 16]``
    the same requests as the crawler's plan (catalog page(s), one tag list per
    repository, one manifest GET per tag with the OCI Accept type), sent with
    plain ``requests`` from a pool of threads, one session per thread; each
    manifest body is read and parsed as JSON, nothing else.

``python -m bench.reference oras --registry HOST``
    the naive way: oras-py, sequential, ``get_tags`` then ``get_manifest``
    for every tag (the catalog through a raw request, oras has none).

Prints one JSON line: the seconds spent after imports, and request counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import urljoin

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT_S = 30.0


def catalog(session: requests.Session, base: str) -> tuple[list[str], int]:
    """Every repository, following ``Link: rel=next``; returns (names, pages)."""
    url: str | None = f"{base}/v2/_catalog?n=1000"
    names: list[str] = []
    pages = 0
    for _ in range(10_000):  # bounded: a registry that loops cannot hold us
        if url is None:
            break
        response = session.get(url, timeout=TIMEOUT_S)
        response.raise_for_status()
        pages += 1
        names.extend(response.json().get("repositories") or [])
        link = response.links.get("next", {}).get("url")
        url = urljoin(url, link) if link else None
    return names, pages


def raw(host: str, threads: int) -> dict[str, Any]:
    base = f"http://{host}"
    local = threading.local()
    counts = {"catalog": 0, "tags": 0, "manifest_get": 0}
    lock = threading.Lock()

    def session() -> requests.Session:
        s: requests.Session | None = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
        return s

    def count(kind: str) -> None:
        with lock:
            counts[kind] += 1

    def tags(repo: str) -> tuple[str, list[str]]:
        found: list[str] = []
        url: str | None = f"{base}/v2/{repo}/tags/list?n=1000"
        for _ in range(1000):
            if url is None:
                break
            response = session().get(url, timeout=TIMEOUT_S)
            response.raise_for_status()
            count("tags")
            found.extend(response.json().get("tags") or [])
            link = response.links.get("next", {}).get("url")
            url = urljoin(url, link) if link else None
        return repo, found

    def manifest(repo: str, tag: str) -> int:
        response = session().get(
            f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT_S
        )
        response.raise_for_status()
        count("manifest_get")
        return len(json.loads(response.content))

    started = time.perf_counter()
    with requests.Session() as first:
        repos, pages = catalog(first, base)
    counts["catalog"] = pages
    with ThreadPoolExecutor(max_workers=threads) as pool:
        listings = [pool.submit(tags, repo) for repo in repos]
        manifests: list[Future[int]] = []
        for done in as_completed(listings):
            repo, names = done.result()
            manifests.extend(pool.submit(manifest, repo, tag) for tag in names)
        for future in manifests:
            future.result()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "repositories": len(repos), "requests": counts}


def oras_sequential(host: str) -> dict[str, Any]:
    import oras.provider  # imported here: the raw reference must not pay for it

    started = time.perf_counter()
    with requests.Session() as first:
        repos, pages = catalog(first, f"http://{host}")
    registry = oras.provider.Registry(hostname=host, insecure=True)
    manifests = 0
    listings = 0
    for repo in repos:
        tags = registry.get_tags(f"{host}/{repo}")
        listings += 1
        for tag in tags:
            registry.get_manifest(f"{host}/{repo}:{tag}")
            manifests += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "repositories": len(repos),
        "requests": {"catalog": pages, "tags": listings, "manifest_get": manifests},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("kind", choices=["raw", "oras"])
    parser.add_argument("--registry", required=True, help="HOST:PORT, plain HTTP")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    result = raw(args.registry, args.threads) if args.kind == "raw" else oras_sequential(args.registry)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

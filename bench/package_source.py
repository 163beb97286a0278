"""What the package schema source costs next to the annotation source.

    python -m bench.package_source [--repositories N] [--versions M] [--layers L] [--rounds R]

Builds one real registry on loopback with the same N x M versions twice:

* ``annotation``: each manifest carries the exported schema as its annotation;
* ``package``: laid out as ``akua publish`` writes it (no annotation), each
  repository's M versions spread over L distinct content layers (a release
  that changes only its tag reuses the layer), so the cache can hit
  (M - L) / M of the time.

For each, every version goes through what the crawler does per version up
to a checked schema: the manifest GET, then the annotation check, or the
content layer, the blob GET, reading package.k and the KCL derivation (once
per layer per run).  Reported: milliseconds per version (median of R rounds,
with the spread), the package path's cost per fetched layer, the cache hit
rate and the KCL processes started.  Each round is a fresh run (an empty
cache), interleaved between the two sources so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.worlds import storage_base
from crawler.package_content import content_layer
from crawler.package_schema import PackageSchemas, PackageSchemaStatistics
from crawler.registry import Registry, RegistryEndpoint
from crawler.schema import extract_input_schema
from testkit.akua_package import package_files, package_tarball, seed_published
from testkit.registry import INPUT_SCHEMA_ANNOTATION, LocalRegistry, Seeder, package_annotations

IN_FLIGHT = 16


def package_k(repository: int, layer: int) -> str:
    """A realistic Input: a dozen attributes, docstrings, @ui, a nested schema."""
    return f'''\
import akua.ctx

schema Resources:
    """Requests for one container."""
    cpu: str = "250m"
    memory: str = "256Mi"

schema Input:
    """Inputs of bench package {repository} (content {layer})."""

    @ui(order=10, group="Identity")
    name: str = "app-{repository}"
    """Resource name prefix."""

    @ui(order=20, widget="slider", min=1, max=20)
    replicas: int = 2
    """Replica count."""

    image: str
    """Container image."""

    tag?: str = "latest"
    port: int = 8080
    public: bool = False
    ratio?: float = 0.5
    mode: "blue" | "green" = "blue"
    env?: {{str:str}}
    args?: [str]
    resources?: Resources

input: Input = ctx.input()
'''


@dataclass
class World:
    versions: list[tuple[str, str]]  # (repository, tag)


def seed(seeder: Seeder, source: str, repositories: int, versions: int, layers: int,
         schemas: dict[tuple[int, int], dict[str, Any]]) -> World:
    found = []
    for r in range(repositories):
        repo = f"bench-{source}/pkg-{r:03d}"
        for v in range(versions):
            tag = f"1.{v}.0"
            layer_index = v % layers
            text = package_k(r, layer_index)
            if source == "package":
                # Versions sharing content share the layer (and so the manifest: a re-tag).
                layer = package_tarball(package_files(text))
                seed_published(seeder, repo, [tag], layer=layer)
            else:
                annotations = package_annotations(schemas[(r, layer_index)], None)
                annotations["org.opencontainers.image.version"] = tag
                seeder.add_artifact(repo, [tag], annotations=annotations)
            found.append((repo, tag))
    return World(found)


async def crawl(host: str, world: World, source: str) -> tuple[float, PackageSchemaStatistics | None]:
    endpoint = RegistryEndpoint(host=host, plain_http=True, timeout_s=30.0)
    async with Registry(endpoint, max_in_flight=IN_FLIGHT) as registry:
        schemas = PackageSchemas(registry) if source == "package" else None
        started = time.perf_counter()
        try:
            limit = anyio.CapacityLimiter(IN_FLIGHT)

            async def one(repository: str, tag: str) -> None:
                async with limit:
                    manifest, found = await registry.manifest_then(
                        repository, tag,
                        lambda m: extract_input_schema(m.document.get("annotations"),
                                                       [INPUT_SCHEMA_ANNOTATION]),
                    )
                    if found is not None:
                        return
                    layer = content_layer(manifest.document)
                    assert layer is not None and schemas is not None
                    await schemas.schema(repository, layer)

            async with anyio.create_task_group() as group:
                for repository, tag in world.versions:
                    group.start_soon(one, repository, tag)
            elapsed = time.perf_counter() - started
        finally:
            if schemas is not None:
                schemas.close()
        return elapsed, schemas.statistics() if schemas is not None else None


def exported_schemas(repositories: int, layers: int) -> dict[tuple[int, int], dict[str, Any]]:
    """The annotation world carries exactly what the package world derives."""
    from crawler.kcl_pool import KclWorkers

    workers = KclWorkers()
    try:
        return {
            (r, layer): workers.derive(package_k(r, layer))
            for r in range(repositories) for layer in range(layers)
        }
    finally:
        workers.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.package_source", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--repositories", type=int, default=20)
    parser.add_argument("--versions", type=int, default=25)
    parser.add_argument("--layers", type=int, default=5, help="distinct content layers per repository")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    n, m, layers = options.repositories, options.versions, options.layers
    root = storage_base(2 * n * m)
    try:
        seeder = Seeder(root)
        schemas = exported_schemas(n, layers)
        worlds = {source: seed(seeder, source, n, m, layers, schemas) for source in ("annotation", "package")}
        timings: dict[str, list[float]] = {"annotation": [], "package": []}
        last: PackageSchemaStatistics | None = None
        with LocalRegistry(root) as registry:
            for source in ("annotation", "package"):  # warm the registry's page cache once
                anyio.run(crawl, registry.host, worlds[source], source)
            for _ in range(options.rounds):
                for source in ("annotation", "package"):
                    elapsed, stats = anyio.run(crawl, registry.host, worlds[source], source)
                    timings[source].append(elapsed)
                    last = stats or last
        assert last is not None
        versions = n * m
        per_version = {s: 1000 * statistics.median(t) / versions for s, t in timings.items()}
        spread = {s: f"{1000 * min(t) / versions:.2f}..{1000 * max(t) / versions:.2f}"
                  for s, t in timings.items()}
        report = {
            "versions": versions,
            "layers": n * layers,
            "ms_per_version": {s: round(v, 2) for s, v in per_version.items()},
            "ms_per_version_spread": spread,
            "package_over_annotation": round(per_version["package"] / per_version["annotation"], 2),
            "cache_hit_rate": round(last.hit_rate, 3),
            "blobs_fetched": last.fetched,
            "derivations": last.derived,
            "ms_per_derivation": round(1000 * last.derive_seconds / max(1, last.derived), 1),
            "ms_per_blob_fetch_and_read": round(1000 * last.fetch_seconds / max(1, last.fetched), 1),
            "kcl_processes": last.kcl_processes,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

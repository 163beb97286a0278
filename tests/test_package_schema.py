"""The package schema source against a real registry and real KCL: once per layer per run."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import pytest

from crawler.errors import InvalidArtifact
from crawler.package_content import content_layer
from crawler.package_schema import PackageSchemas, PackageSchemaStatistics
from crawler.registry import Registry, RegistryClient, RegistryEndpoint
from testkit.akua_package import gzip_bomb, package_files, package_tarball, seed_published
from testkit.registry import LocalRegistry, Seeder

T = TypeVar("T")
SOURCE = 'schema Input:\n    """Inputs."""\n    name: str = "x"\n'
EXPECTED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Input",
    "type": "object",
    "description": "Inputs.",
    "properties": {"name": {"type": "string", "default": "x"}},
    "required": ["name"],
}


def _layer(registry: LocalRegistry, repo: str, tag: str) -> Any:
    client = RegistryClient(RegistryEndpoint(host=registry.host, plain_http=True, timeout_s=5.0))
    return content_layer(client.get_manifest(repo, tag).document)


def _with_schemas(
    registry: LocalRegistry, body: Callable[[PackageSchemas], Coroutine[Any, Any, T]]
) -> tuple[T, PackageSchemaStatistics, dict[str, int]]:
    async def main() -> tuple[T, PackageSchemaStatistics, dict[str, int]]:
        endpoint = RegistryEndpoint(host=registry.host, plain_http=True, timeout_s=5.0)
        async with Registry(endpoint, max_in_flight=4) as facade:
            schemas = PackageSchemas(facade)
            try:
                result = await body(schemas)
            finally:
                schemas.close()
            return result, schemas.statistics(), dict(facade.statistics().requests)

    return anyio.run(main)


def test_one_fetch_and_one_derivation_per_layer(seeder: Seeder, local_registry: LocalRegistry) -> None:
    layer_bytes = package_tarball(package_files(SOURCE))
    for repo in ("team/a", "team/b"):
        seed_published(seeder, repo, ["1.0.0", "1.1.0", "2.0.0"], layer=layer_bytes)
    layer = _layer(local_registry, "team/a", "1.0.0")

    async def body(schemas: PackageSchemas) -> list[dict[str, Any]]:
        found = []
        # Sequential lookups from two repositories, then six at once.
        for repo in ("team/a", "team/b"):
            found.append(await schemas.schema(repo, layer))
        async with anyio.create_task_group() as group:
            for _ in range(6):
                async def one() -> None:
                    found.append(await schemas.schema("team/a", layer))
                group.start_soon(one)
        return found

    found, stats, requests = _with_schemas(local_registry, body)
    assert found == [EXPECTED] * 8
    assert found[0] is not found[1]  # each version gets its own copy
    assert (stats.lookups, stats.hits, stats.fetched, stats.derived) == (8, 7, 1, 1)
    assert requests["blob_get"] == 1
    assert stats.kcl_processes == 1
    assert stats.hit_rate == pytest.approx(7 / 8)


def test_concurrent_first_lookups_share_one_fetch(seeder: Seeder, local_registry: LocalRegistry) -> None:
    seed_published(seeder, "team/a", ["1.0.0"], package_k=SOURCE)
    layer = _layer(local_registry, "team/a", "1.0.0")

    async def body(schemas: PackageSchemas) -> int:
        results: list[dict[str, Any]] = []
        async with anyio.create_task_group() as group:
            for _ in range(5):
                async def one() -> None:
                    results.append(await schemas.schema("team/a", layer))
                group.start_soon(one)
        return len(results)

    count, stats, requests = _with_schemas(local_registry, body)
    assert count == 5
    assert (stats.fetched, stats.derived, stats.hits, requests["blob_get"]) == (1, 1, 4, 1)


@pytest.mark.parametrize(
    ("layer_bytes", "reason"),
    [  # each layer made when its test runs (the bomb takes a second to compress), not at collection
        (lambda: package_tarball({"akua.toml": "x"}), "no package.k at the package root"),
        (lambda: gzip_bomb(100 * 1024 * 1024), "decompresses to more than 67108864 bytes"),
        (lambda: package_tarball(package_files("schema Input:\n    a: =\n")),
         "package.k does not parse: line 2"),
        (lambda: package_tarball(package_files("schema Other:\n    a: int\n")),
         "declares no `schema Input`"),
    ],
    ids=["no-package-k", "gzip-bomb", "syntax-error", "no-schema-input"],
)
def test_invalid_content_is_remembered_for_the_run(
    seeder: Seeder, local_registry: LocalRegistry, layer_bytes: Callable[[], bytes], reason: str
) -> None:
    seed_published(seeder, "team/a", ["1.0.0"], layer=layer_bytes())
    layer = _layer(local_registry, "team/a", "1.0.0")

    async def body(schemas: PackageSchemas) -> list[str]:
        reasons = []
        for _ in range(2):
            with pytest.raises(InvalidArtifact) as caught:
                await schemas.schema("team/a", layer)
            reasons.append(caught.value.reason)
        return reasons

    reasons, stats, requests = _with_schemas(local_registry, body)
    assert reason in reasons[0] and reasons[0] == reasons[1]
    assert layer.digest in reasons[0]
    assert requests["blob_get"] == 1 and stats.hits == 1

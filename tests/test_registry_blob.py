"""Blob GETs against a real docker-registry: by digest, verified, capped, counted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest

from crawler.registry import (
    BadBlob,
    Registry,
    RegistryClient,
    RegistryEndpoint,
    RegistryNotFound,
)
from testkit.akua_package import package_files, package_tarball, seed_published
from testkit.registry import LocalRegistry, Seeder


def _client(registry: LocalRegistry) -> RegistryClient:
    return RegistryClient(RegistryEndpoint(host=registry.host, plain_http=True, timeout_s=5.0))


def _layer_digest(client: RegistryClient, repo: str, tag: str) -> str:
    document = client.get_manifest(repo, tag).document
    digest: str = document["layers"][0]["digest"]
    return digest


def test_a_layer_blob_is_fetched_and_verified(seeder: Seeder, local_registry: LocalRegistry) -> None:
    layer = package_tarball(package_files("schema Input:\n    a: int\n"))
    seed_published(seeder, "team/app", ["1.0.0"], layer=layer)
    client = _client(local_registry)
    digest = _layer_digest(client, "team/app", "1.0.0")
    assert digest == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert client.get_blob("team/app", digest, 1024 * 1024) == layer


def test_a_blob_over_the_cap_is_refused_by_its_length(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    layer = package_tarball(package_files("schema Input:\n    a: int\n", extra={"pad": b"x" * 5000}))
    seed_published(seeder, "team/app", ["1.0.0"], layer=layer)
    client = _client(local_registry)
    digest = _layer_digest(client, "team/app", "1.0.0")
    with pytest.raises(BadBlob, match=rf"blob is {len(layer)} bytes, over the limit of 100 bytes"):
        client.get_blob("team/app", digest, 100)


def test_bytes_that_do_not_match_the_digest_are_refused(
    seeder: Seeder, local_registry: LocalRegistry, registry_root: Path
) -> None:
    layer = package_tarball(package_files("schema Input:\n    a: int\n"))
    seed_published(seeder, "team/app", ["1.0.0"], layer=layer)
    client = _client(local_registry)
    digest = _layer_digest(client, "team/app", "1.0.0")
    hexdigest = digest.removeprefix("sha256:")
    # The registry serves what its storage holds; swap the stored bytes.
    data = registry_root / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    data.write_bytes(b"tampered" + layer[8:])
    with pytest.raises(BadBlob, match=rf"the {len(layer)} bytes received hash to sha256:"):
        client.get_blob("team/app", digest, 1024 * 1024)


def test_an_unknown_blob_is_not_found(seeder: Seeder, local_registry: LocalRegistry) -> None:
    seed_published(seeder, "team/app", ["1.0.0"], package_k="schema Input:\n    a: int\n")
    with pytest.raises(RegistryNotFound) as caught:
        _client(local_registry).get_blob("team/app", "sha256:" + "0" * 64, 1024)
    assert caught.value.code == "BLOB_UNKNOWN"
    with pytest.raises(BadBlob, match="not a sha256 digest"):
        _client(local_registry).get_blob("team/app", "sha512:" + "0" * 128, 1024)


def test_the_facade_runs_the_follow_up_on_the_fetching_thread_and_counts(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    layer = package_tarball(package_files("schema Input:\n    a: int\n"))
    seed_published(seeder, "team/app", ["1.0.0"], layer=layer)
    digest = _layer_digest(_client(local_registry), "team/app", "1.0.0")

    async def fetch() -> tuple[int, dict[str, int]]:
        endpoint = RegistryEndpoint(host=local_registry.host, plain_http=True, timeout_s=5.0)
        async with Registry(endpoint, max_in_flight=2) as registry:
            size = await registry.blob_then("team/app", digest, 1024 * 1024, len)
            return size, dict(registry.statistics().requests)

    size, requests = anyio.run(fetch)
    assert size == len(layer)
    assert requests["blob_get"] == 1
    assert json.loads(_client(local_registry).get_manifest("team/app", "1.0.0").raw)["layers"][0][
        "size"
    ] == len(layer)

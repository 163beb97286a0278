"""Every manifest kind has a defined outcome: image manifests, image indexes,
Docker manifest lists, Docker schema2, and manifests without ``mediaType``.

Against a real docker-registry (children stored untagged, fetched by digest);
the served-as-application/json case, which distribution never produces, with
a loopback fake.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from crawler.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BadManifest,
    Manifest,
    Registry,
    RegistryEndpoint,
)
from crawler.registry.manifests import (
    DOCKER_SCHEMA2_NO_SCHEMA,
    MULTI_PLATFORM_SCHEMA,
    NO_SCHEMA,
    SCHEMA_ANNOTATION,
)
from testkit.registry import (
    AKUA_CONFIG,
    ATTESTATION_ANNOTATIONS,
    DEFAULT_CONFIG,
    DEFAULT_LAYER,
    Seeder,
    build_manifest,
    package_annotations,
    sha256_digest,
)
from tests.test_registry import FakeRegistry, manifest_reply
from tests.test_registry import fake_registry as fake_registry  # a fixture

SCHEMA = {"type": "object", "properties": {"port": {"type": "integer"}}}
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
UNKNOWN = {"os": "unknown", "architecture": "unknown"}


def image(annotations: dict[str, str] | None = None, *, media_type: str = OCI_MANIFEST,
          salt: str = "") -> bytes:
    # ``salt`` gives otherwise equal children distinct bytes (and digests).
    notes = dict(annotations or {})
    if salt:
        notes["test.salt"] = salt
    return build_manifest(config=DEFAULT_CONFIG, config_media_type=AKUA_CONFIG,
                          layer=DEFAULT_LAYER, annotations=notes, media_type=media_type)


def attestation(salt: str) -> bytes:
    return image({"in-toto": "provenance"}, salt=salt)


def fetch(host: str, repository: str, tag: str) -> tuple[Manifest, dict[str, int]]:
    async def go() -> tuple[Manifest, dict[str, int]]:
        endpoint = RegistryEndpoint(host=host, plain_http=True, timeout_s=5.0)
        async with Registry(endpoint) as registry:
            manifest = await registry.manifest(repository, tag)
            return manifest, dict(registry.statistics().requests)

    return anyio.run(go)


def refused(host: str, repository: str, tag: str) -> BadManifest:
    with pytest.raises(BadManifest) as caught:
        fetch(host, repository, tag)
    return caught.value


def test_index_with_the_schema_on_it_is_the_artifact(seeder: Seeder, registry_factory) -> None:
    notes = package_annotations(SCHEMA, "multi-arch package")
    digest = seeder.add_index(
        "kinds/index-schema", ["1.0.0"],
        [(image(salt="a"), {"platform": AMD64}), (image(salt="b"), {"platform": ARM64})],
        annotations=notes,
    )
    manifest, requests = fetch(registry_factory().host, "kinds/index-schema", "1.0.0")
    assert (manifest.digest, manifest.tag_digest, manifest.media_type) == (digest, digest, OCI_INDEX)
    assert manifest.annotations == notes
    assert requests["manifest_get"] == 1  # the index decides alone: no child fetched


def test_buildx_layout_one_platform_plus_attestations(seeder: Seeder, registry_factory) -> None:
    platform = image({SCHEMA_ANNOTATION: json.dumps(SCHEMA)})
    index_digest = seeder.add_index(
        "kinds/buildx", ["1.0.0"],
        [
            (platform, {"platform": AMD64}),
            (attestation("1"), {"platform": UNKNOWN, "annotations": {
                **ATTESTATION_ANNOTATIONS, "vnd.docker.reference.digest": sha256_digest(platform)}}),
        ],
        annotations={"org.opencontainers.image.description": "from the index",
                     SCHEMA_ANNOTATION + ".unrelated": "x"},
    )
    manifest, requests = fetch(registry_factory().host, "kinds/buildx", "1.0.0")
    assert manifest.digest == sha256_digest(platform)  # the version's ref
    assert manifest.tag_digest == index_digest  # what the state records and HEAD answers
    assert manifest.media_type == OCI_MANIFEST
    # The platform manifest's annotations, falling back to the index's key by key.
    assert manifest.annotations[SCHEMA_ANNOTATION] == json.dumps(SCHEMA)
    assert manifest.annotations["org.opencontainers.image.description"] == "from the index"
    assert requests["manifest_get"] == 2  # the index and its one platform manifest


def test_platform_annotations_win_over_the_index(seeder: Seeder, registry_factory) -> None:
    platform = image(package_annotations(SCHEMA, "from the platform manifest"))
    seeder.add_index("kinds/override", ["1"], [(platform, {"platform": AMD64})],
                     annotations={"org.opencontainers.image.description": "from the index"})
    manifest, _ = fetch(registry_factory().host, "kinds/override", "1")
    assert manifest.annotations["org.opencontainers.image.description"] == (
        "from the platform manifest")


def test_one_platform_descriptor_annotations_are_the_fallback(
    seeder: Seeder, registry_factory
) -> None:
    # `buildah manifest add --annotation` writes the annotation on the child's
    # descriptor in the index (buildah 1.28 cannot annotate the index itself).
    platform = image({"org.opencontainers.image.description": "from the platform manifest"})
    index_digest = seeder.add_index(
        "kinds/descriptor", ["1.0.0"],
        [(platform, {"platform": AMD64, "annotations": {
            SCHEMA_ANNOTATION: json.dumps(SCHEMA),
            "org.opencontainers.image.description": "from the descriptor",
            "test.only-on-descriptor": "d"}})],
        annotations={"org.opencontainers.image.description": "from the index",
                     "test.only-on-descriptor": "i", "test.only-on-index": "i"},
    )
    manifest, _ = fetch(registry_factory().host, "kinds/descriptor", "1.0.0")
    assert (manifest.digest, manifest.tag_digest) == (sha256_digest(platform), index_digest)
    assert manifest.annotations[SCHEMA_ANNOTATION] == json.dumps(SCHEMA)
    # The manifest's own, then the descriptor's, then the index's, key by key.
    assert manifest.annotations["org.opencontainers.image.description"] == (
        "from the platform manifest")
    assert manifest.annotations["test.only-on-descriptor"] == "d"
    assert manifest.annotations["test.only-on-index"] == "i"


def test_multi_platform_without_any_schema_is_not_a_package(
    seeder: Seeder, registry_factory
) -> None:
    digest = seeder.add_index(
        "kinds/multi-plain", ["1.0.0"],
        [(image(salt="a"), {"platform": AMD64}), (image(salt="b"), {"platform": ARM64}),
         (attestation("x"), {"annotations": ATTESTATION_ANNOTATIONS})],
    )
    manifest, requests = fetch(registry_factory().host, "kinds/multi-plain", "1.0.0")
    assert (manifest.digest, manifest.tag_digest) == (digest, digest)
    assert SCHEMA_ANNOTATION not in manifest.annotations
    assert manifest.no_schema_reason == (
        "multi-platform index (2 platform manifests) without an input schema")
    assert requests["manifest_get"] == 3  # both platform children looked into, not the attestation


def test_multi_platform_with_a_schema_on_a_child_names_the_fix(
    seeder: Seeder, registry_factory
) -> None:
    with_schema = image({SCHEMA_ANNOTATION: json.dumps(SCHEMA)})
    digest = seeder.add_index(
        "kinds/multi-schema", ["1.0.0"],
        [(image(salt="a"), {"platform": AMD64}), (with_schema, {"platform": ARM64})],
    )
    registry = registry_factory()
    problem = refused(registry.host, "kinds/multi-schema", "1.0.0")
    assert MULTI_PLATFORM_SCHEMA == "multi-platform index: put the schema annotation on the index"
    assert str(problem) == (
        f"{registry.host}/kinds/multi-schema:1.0.0: {MULTI_PLATFORM_SCHEMA} "
        f"(2 platform manifests; {sha256_digest(with_schema)} carries one)")
    assert problem.digest == digest  # recorded against the index, which a HEAD answers


def test_a_schema_on_a_child_descriptor_is_seen_without_fetching(
    seeder: Seeder, registry_factory
) -> None:
    seeder.add_index(
        "kinds/descriptor", ["1"],
        [(image(salt="a"), {"platform": AMD64, "annotations": {SCHEMA_ANNOTATION: "{}"}}),
         (image(salt="b"), {"platform": ARM64})],
    )
    problem = refused(registry_factory().host, "kinds/descriptor", "1")
    assert MULTI_PLATFORM_SCHEMA in str(problem)


def test_index_of_attestations_only(seeder: Seeder, registry_factory) -> None:
    seeder.add_index("kinds/attest-only", ["1"],
                     [(attestation("1"), {"annotations": ATTESTATION_ANNOTATIONS})])
    manifest, requests = fetch(registry_factory().host, "kinds/attest-only", "1")
    assert manifest.no_schema_reason == "index without a platform manifest and no input schema"
    assert requests["manifest_get"] == 1


def test_docker_schema2_and_manifest_list_say_why_they_carry_no_schema(
    seeder: Seeder, registry_factory
) -> None:
    docker = image(media_type=DOCKER_MANIFEST)
    docker_digest = seeder.add_artifact("kinds/docker", ["1"], manifest_bytes=docker)
    list_digest = seeder.add_index(
        "kinds/docker", ["2"], [(docker, {"media_type": DOCKER_MANIFEST, "platform": AMD64})],
        media_type=DOCKER_MANIFEST_LIST,
    )
    host = registry_factory().host
    plain, _ = fetch(host, "kinds/docker", "1")
    assert (plain.digest, plain.media_type) == (docker_digest, DOCKER_MANIFEST)
    assert plain.no_schema_reason == DOCKER_SCHEMA2_NO_SCHEMA == (
        "Docker schema2 manifest: no annotations; push with --format oci")
    listed, _ = fetch(host, "kinds/docker", "2")
    assert (listed.digest, listed.tag_digest) == (docker_digest, list_digest)
    assert listed.no_schema_reason == DOCKER_SCHEMA2_NO_SCHEMA


def test_an_oci_image_without_a_schema_keeps_the_plain_reason(
    seeder: Seeder, registry_factory
) -> None:
    seeder.add_artifact("kinds/plain", ["1"])
    manifest, _ = fetch(registry_factory().host, "kinds/plain", "1")
    assert manifest.no_schema_reason == NO_SCHEMA == "no input schema"


def test_broken_indexes_are_invalid_against_the_index_digest(
    seeder: Seeder, registry_factory
) -> None:
    missing_child = image(salt="never stored")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256_digest(missing_child),
         "size": len(missing_child)}]}).encode()
    missing = seeder.add_artifact("kinds/broken", ["missing"], manifest_bytes=index)
    child = image(salt="c")
    wrong_size = seeder.add_index("kinds/broken", ["size"], [(child, {"platform": AMD64})])
    # Rewrite the size claim: the index is re-stored with a wrong size for its child.
    document = json.loads(seeder.root.joinpath(
        "docker/registry/v2/blobs/sha256", wrong_size[7:9], wrong_size[7:], "data").read_bytes())
    document["manifests"][0]["size"] += 1
    lying = seeder.add_artifact("kinds/broken", ["size"],
                                manifest_bytes=json.dumps(document).encode())
    host = registry_factory().host
    problem = refused(host, "kinds/broken", "missing")
    assert "which the registry does not have" in str(problem) and problem.digest == missing
    problem = refused(host, "kinds/broken", "size")
    assert f"has {len(child) + 1} bytes, the registry served {len(child)}" in str(problem)
    assert problem.digest == lying


# -- served as application/json without mediaType (umoci): recognised by shape


def _body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_manifest_without_media_type_is_recognised_by_its_shape(
    fake_registry: FakeRegistry,
) -> None:
    child = _body({"schemaVersion": 2, "config": {"mediaType": AKUA_CONFIG, "digest":
                   sha256_digest(b"{}"), "size": 2}, "layers": [],
                   "annotations": {SCHEMA_ANNOTATION: "{}"}})
    index = _body({"schemaVersion": 2, "manifests": [
        {"digest": sha256_digest(child), "size": len(child)}]})
    odd = _body({"schemaVersion": 2, "layers": []})
    json_type = {"Content-Type": "application/json"}
    fake_registry.routes["/v2/r/manifests/image"] = manifest_reply(child, **json_type)
    fake_registry.routes[f"/v2/r/manifests/{sha256_digest(child)}"] = manifest_reply(
        child, **json_type)
    fake_registry.routes["/v2/r/manifests/index"] = manifest_reply(index, **json_type)
    fake_registry.routes["/v2/r/manifests/odd"] = manifest_reply(odd, **json_type)

    plain, _ = fetch(fake_registry.host, "r", "image")
    assert (plain.media_type, plain.annotations) == (OCI_MANIFEST, {SCHEMA_ANNOTATION: "{}"})
    resolved, _ = fetch(fake_registry.host, "r", "index")
    assert (resolved.digest, resolved.tag_digest) == (sha256_digest(child), sha256_digest(index))
    problem = refused(fake_registry.host, "r", "odd")
    assert "unexpected media type (none): not a package manifest" in str(problem)


def test_annotations_that_are_not_an_object(fake_registry: FakeRegistry) -> None:
    body = _body({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [],
                  "annotations": ["not", "an", "object"]})
    fake_registry.routes["/v2/r/manifests/1"] = manifest_reply(body)
    problem = refused(fake_registry.host, "r", "1")
    assert str(problem).endswith("r:1: manifest annotations are not a JSON object")
    assert problem.digest == sha256_digest(body)


# -- through the pipeline: the ref Akua gets, the digest the state keeps


def test_run_imports_index_artifacts_and_a_rerun_keeps_them_settled(
    seeder: Seeder, registry_factory, akua, tmp_path, monkeypatch, capsys
) -> None:
    from tests.test_end_to_end import crawl

    schema = json.dumps(SCHEMA)
    platform = image({SCHEMA_ANNOTATION: schema})
    buildx = seeder.add_index(
        "idx/buildx", ["1.0.0"],
        [(platform, {"platform": AMD64}),
         (attestation("1"), {"platform": UNKNOWN, "annotations": ATTESTATION_ANNOTATIONS})])
    # The same SemVer under a second tag: the HEAD of "v1.0.0" answers the index digest,
    # which must agree with what the first tag resolved from.
    seeder.tag("idx/buildx", "v1.0.0", buildx)
    on_index = seeder.add_index(
        "idx/on-index", ["2.0.0"],
        [(image(salt="a"), {"platform": AMD64}), (image(salt="b"), {"platform": ARM64})],
        annotations={SCHEMA_ANNOTATION: schema})
    seeder.add_index("idx/misplaced", ["1.0.0"],
                     [(image(salt="c"), {"platform": AMD64}), (platform, {"platform": ARM64})])
    seeder.add_artifact("idx/docker", ["1.0.0"], media_type=DOCKER_MANIFEST)
    registry = registry_factory()
    state = tmp_path / "state.db"

    status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys)
    assert status == 1  # idx/misplaced is invalid
    refs = {body["name"]: body["version"]["ref"] for path, body in
            ((r.path, r.body) for r in akua.writes()) if path.endswith("packages:import")}
    assert refs == {"idx/buildx": sha256_digest(platform), "idx/on-index": on_index}
    items = {e["repository"]: e for e in events if e["event"].startswith("item.")}
    assert items["idx/buildx"]["digest"] == buildx  # what the tag points at
    assert items["idx/misplaced"]["outcome"] == "invalid"
    assert MULTI_PLATFORM_SCHEMA in items["idx/misplaced"]["reason"]
    assert (items["idx/docker"]["outcome"], items["idx/docker"]["reason"]) == (
        "skipped", DOCKER_SCHEMA2_NO_SCHEMA)

    before = len(akua.received)
    status, events, _ = crawl("run", registry, akua, state, monkeypatch, capsys,
                              "--recheck-digests", "--log-level", "debug")
    assert status == 0  # idx/misplaced is still invalid, but known since the first run
    assert akua.received[before:] == []
    outcomes = {e["repository"]: e["outcome"] for e in events if e["event"].startswith("item.")}
    assert outcomes == {"idx/buildx": "exists", "idx/on-index": "exists",
                        "idx/misplaced": "invalid", "idx/docker": "skipped"}

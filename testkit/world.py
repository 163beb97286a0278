"""A registry mixing everything a crawler meets, for the end-to-end tests and the demo.

``seed_mixed_registry`` writes it and returns what a correct crawl must
import: per repository, the versions in ascending SemVer order with their
digest and exact schema, and the artifacts that must end invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from testkit.registry import Seeder, package_annotations

DRAFT_07 = "http://json-schema.org/draft-07/schema#"


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    repository: str
    semver: str
    digest: str
    schema: dict[str, Any]


@dataclass(slots=True)
class MixedWorld:
    versions: list[ExpectedVersion] = field(default_factory=list)  # in the order they must be written
    invalid: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> reason part
    skipped_tags: set[tuple[str, str]] = field(default_factory=set)
    no_schema: set[tuple[str, str]] = field(default_factory=set)
    empty_repositories: set[str] = field(default_factory=set)

    @property
    def repositories(self) -> set[str]:
        return {v.repository for v in self.versions}


def app_schema(version: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"team/app {version} inputs",
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "minimum": 1, "default": 2},
            "hostname": {"type": "string", "format": "hostname"},
        },
        "required": ["hostname"],
    }


def seed_mixed_registry(seeder: Seeder) -> MixedWorld:
    world = MixedWorld()

    def package(repo: str, tags: list[str], schema: dict[str, Any] | str | None,
                description: str | None = None) -> str:
        return seeder.add_artifact(repo, tags, annotations=package_annotations(schema, description))

    # team/app: plain, v-prefixed, Helm "_" build, prerelease, latest, a cosign signature.
    app: list[tuple[str, list[str]]] = [
        ("1.0.0", ["1.0.0"]),
        ("1.1.0", ["1.1.0"]),
        ("1.2.0", ["v1.2.0", "latest"]),
        ("1.3.0+build.5", ["1.3.0_build.5"]),
        ("2.0.0-rc.1", ["2.0.0-rc.1"]),
    ]
    for index, (semver, tags) in enumerate(app):
        schema = app_schema(semver)
        digest = package("team/app", tags, schema, "The team's app." if index == 0 else None)
        world.versions.append(ExpectedVersion("team/app", semver, digest, schema))
    world.skipped_tags.add(("team/app", "latest"))
    signature_tag = "sha256-" + world.versions[0].digest.removeprefix("sha256:") + ".sig"
    seeder.add_artifact(
        "team/app", [signature_tag], config_media_type="application/vnd.dev.cosign.simplesigning.v1+json"
    )
    world.skipped_tags.add(("team/app", signature_tag))

    # team/drafty: a draft-07 schema.
    drafty = {"$schema": DRAFT_07, "type": "object", "properties": {"size": {"enum": ["s", "m"]}}}
    digest = package("team/drafty", ["0.1.0"], drafty)
    world.versions.append(ExpectedVersion("team/drafty", "0.1.0", digest, drafty))

    # team/broken: broken JSON, a schema failing its metaschema, then one good version.
    package("team/broken", ["1.0.0"], '{"type": "object", "properties": {')
    world.invalid[("team/broken", "1.0.0")] = "is not JSON: Expecting property name"
    package("team/broken", ["1.1.0"], {"type": "object", "properties": {"port": {"type": "strin"}}})
    world.invalid[("team/broken", "1.1.0")] = "$.properties.port.type"
    good = {"type": "object", "properties": {"port": {"type": "integer"}}}
    digest = package("team/broken", ["1.2.0"], good)
    world.versions.append(ExpectedVersion("team/broken", "1.2.0", digest, good))

    # tools/image: a plain artifact with a SemVer tag but no schema annotation: not a package.
    seeder.add_artifact("tools/image", ["1.0.0"], annotations={"org.opencontainers.image.title": "x"})
    world.no_schema.add(("tools/image", "1.0.0"))

    seeder.add_empty_repository("team/empty")
    world.empty_repositories.add("team/empty")
    return world


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)

"""The benchmark's registries: N repositories x M SemVer tags of Akua packages.

Storage goes to /dev/shm when it has room (the seeder writes ~2000
artifacts/s there, and the registry reads from memory), else to the
temporary directory.

Every manifest (and so every digest) is distinct: each carries its version
in ``org.opencontainers.image.version``.  The input schema is small and, as
in real registries where a package's inputs rarely change, the same for
all versions of one repository (``schemas="per-repository"``); with
``schemas="unique"`` every artifact has a schema of its own, the crawler's
worst case (its metaschema check cannot be reused).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testkit.memory_folder import memory_folder
from testkit.registry import LocalRegistry, Seeder, package_annotations

# tmpfs spends a page per small file: 4 files per artifact, with headroom.
BYTES_PER_ARTIFACT: Final = 32 * 1024


def storage_base(artifacts: int) -> Path:
    """A fresh directory on /dev/shm if it can hold ``artifacts``, else under the temp dir."""
    shm = memory_folder(artifacts * BYTES_PER_ARTIFACT + 256 * 1024 * 1024)
    return Path(tempfile.mkdtemp(prefix="akua-bench-", dir=shm))


VERSION_ANNOTATION: Final = "org.opencontainers.image.version"


def small_schema(title: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "minimum": 1, "default": 1},
            "hostname": {"type": "string"},
        },
        "required": ["hostname"],
    }


def repo_name(index: int) -> str:
    return f"bench/pkg-{index:04d}"


def tag_name(index: int) -> str:
    return f"1.{index}.0"


@dataclass(slots=True)
class World:
    name: str
    repos: int
    tags: int
    root: Path
    schemas: str = "per-repository"  # or "unique"
    seed_s: float = 0.0
    registry: LocalRegistry | None = None

    @property
    def artifacts(self) -> int:
        return self.repos * self.tags

    @property
    def host(self) -> str:
        assert self.registry is not None, "start() the world first"
        return self.registry.host

    def seed(self) -> World:
        started = time.perf_counter()
        seeder = Seeder(self.root)
        unique = self.schemas == "unique"
        for r in range(self.repos):
            repo = repo_name(r)
            shared = package_annotations(small_schema(f"{repo} inputs"), None)
            for t in range(self.tags):
                tag = tag_name(t)
                if unique:
                    annotations = package_annotations(small_schema(f"{repo} {tag} inputs"), None)
                else:
                    annotations = dict(shared)
                annotations[VERSION_ANNOTATION] = tag
                seeder.add_artifact(repo, [tag], annotations=annotations)
        self.seed_s = time.perf_counter() - started
        return self

    def start(self, workdir: Path) -> World:
        if self.registry is None:
            self.registry = LocalRegistry(self.root, workdir=workdir / f"registry-{self.name}").start()
        return self

    def stop(self) -> None:
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.stop(cleanup=False)


def make_world(base: Path, name: str, repos: int, tags: int, schemas: str = "per-repository") -> World:
    root = base / name
    root.mkdir(parents=True)
    return World(name=name, repos=repos, tags=tags, root=root, schemas=schemas).seed()

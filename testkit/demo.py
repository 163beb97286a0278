"""A real crawl and import on this machine, end to end: ``python -m testkit.demo``.

It starts Debian's docker-registry on a free loopback port over a seeded
temporary storage (valid packages, a v-prefixed tag, a prerelease, a Helm
build tag, ``latest``, a cosign signature, an artifact without schema,
broken annotations, an empty repository, and a package exactly as ``akua publish``
writes it, without annotation), starts the Akua API double, runs
``akua-crawler run`` against both twice, and shows what Akua received.
Nothing leaves loopback; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from testkit.akua_double import AkuaDouble
from testkit.akua_package import seed_published
from testkit.registry import LocalRegistry, Seeder
from testkit.world import seed_mixed_registry

DEMO_TOKEN = "sk_akua_demo_token"
# A package exactly as `akua publish` pushes it: no annotation; the schema is derived from package.k.
PUBLISHED_PACKAGE_K = '''schema Input:
    """Inputs of the demo web app.

    Attributes
    ----------
    hostname : str
        Where the app is served.
    replicas : int
        How many pods run it.
    """
    hostname: str
    replicas: int = 2
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="akua-crawler-demo-") as work:
        root = Path(work) / "registry"
        root.mkdir()
        seeder = Seeder(root)
        world = seed_mixed_registry(seeder)
        seed_published(seeder, "team/webapp", ["1.0.0"], package_k=PUBLISHED_PACKAGE_K)
        expected = len(world.versions) + 1
        with LocalRegistry(root, workdir=Path(work) / "registry-run") as registry, \
                AkuaDouble(token=DEMO_TOKEN) as akua:
            print(f"registry: {registry.url} (docker-registry, pid {registry.pid})")
            print(f"akua api: {akua.url} (local double)\n")
            command = [
                sys.executable, "-m", "crawler", "run",
                "--registry", registry.host, "--plain-http",
                "--api-url", akua.url,
                "--state", str(Path(work) / "state.db"),
                "--log-format", args.log_format,
            ]
            env = {**os.environ, "AKUA_API_TOKEN": DEMO_TOKEN}
            statuses = []
            for attempt in ("first run", "second run (nothing new)"):
                print(f"== {attempt}: {' '.join(command[1:])}")
                before = len(akua.writes())
                statuses.append(subprocess.run(command, env=env, check=False).returncode)
                print(f"== exit status {statuses[-1]}; writes Akua received: "
                      f"{len(akua.writes()) - before}\n")
            print("Akua now holds:")
            for package in akua.packages():
                versions = sorted(v["semver"] for v in akua.versions(package["id"]))
                print(f"  {package['name']:<14} {package['id']}  versions: {', '.join(versions)}")
            print(f"\nexpected {expected} versions; duplicates: "
                  f"{'none' if not akua.find_duplicates() else akua.find_duplicates()}")
    # The mix holds two invalid artifacts on purpose: the first run exits 1 (new problems),
    # the second 0 (they are known now, and --fail-on new is the default).
    return 0 if statuses == [1, 0] else 1


if __name__ == "__main__":
    raise SystemExit(main())

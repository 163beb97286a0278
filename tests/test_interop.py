"""The crawler agrees with artifacts that real OCI clients make.

Each test builds images FROM SCRATCH with a real client (nothing is pulled or
downloaded), pushes them to a real docker-registry over loopback, then runs
``plan`` and ``run`` through the CLI against the Akua double and checks each
outcome and exactly what Akua received: the version's ``ref`` (the digest the
client pushed, or the platform manifest's digest inside an index) and its
``input_schema`` (exactly the annotation).

Clients (Debian packages, installed by scripts/setup): umoci + skopeo,
buildah, podman.  A missing client fails the test with the install hint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.akua_double import AkuaDouble
from testkit.registry import LocalRegistry
from tests.plugins.cli import CliResult

# Several client processes per artifact, and two crawler runs per test.
pytestmark = pytest.mark.slow

SCHEMA_KEY = "dev.akua.package.input-schema"
DESCRIPTION_KEY = "org.opencontainers.image.description"
NO_SCHEMA = "no input schema"
DOCKER_NO_SCHEMA = "Docker schema2 manifest: no annotations; push with --format oci"
MULTI_NO_SCHEMA = "multi-platform index (2 platform manifests) without an input schema"
MULTI_SCHEMA = "multi-platform index: put the schema annotation on the index"
COMMAND_TIMEOUT_S = 180
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
#: The command each client is run as, and the Debian package that has it.
PACKAGES = {"umoci": "umoci", "skopeo": "skopeo", "buildah": "buildah", "podman": "podman"}


def schema(title: str) -> dict[str, Any]:
    """A small input schema of our own; ``title`` makes each version's bytes distinct.

    Quotes, commas, an ``=``, a pattern and nesting, so a client that mangles
    annotation values (CSV or ``key=value`` splitting, escaping) shows up as a
    wrong schema.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {
            "image": {"type": "string", "pattern": "^[a-z0-9./:=-]+$"},
            "replicas": {"type": "integer", "minimum": 1, "default": 2},
            "ports": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["image"],
        "additionalProperties": False,
    }


def schema_text(title: str) -> str:
    return json.dumps(schema(title), separators=(",", ":"))


def need(command: str) -> str:
    """The client's path, or fail (never skip) with the install hint."""
    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} not found: install it with `apt-get install -y "
                    f"{PACKAGES[command]}` (scripts/setup does)", pytrace=False)
    return path


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(str(a) for a in args)}` exited {done.returncode}:\n"
                    f"{done.stderr[-3000:]}", pytrace=False)
    return done.stdout


def served(registry: LocalRegistry, repository: str, tag: str) -> tuple[str, dict[str, Any]]:
    """What the registry serves for ``tag``: its digest and the parsed document."""
    request = urllib.request.Request(f"{registry.url}/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["Docker-Content-Digest"], json.loads(answer.read())


def only_child(registry: LocalRegistry, repository: str, tag: str) -> str:
    _, index = served(registry, repository, tag)
    assert len(index["manifests"]) == 1, index
    digest: str = index["manifests"][0]["digest"]
    return digest


def digest_file(path: Path) -> str:
    return path.read_text().strip()


def csv_field(text: str) -> str:
    """One CSV field: `buildah/podman manifest add --annotation` split their values as CSV."""
    return '"' + text.replace('"', '""') + '"'


@dataclass(frozen=True)
class Expected:
    """One tag: what plan says, what run ends with, and what Akua gets for it."""

    repository: str
    tag: str
    semver: str
    digest: str  # what the tag points at (plan, state, item events)
    plan: str  # the plan's action
    ref: str | None = None  # the version's ref, for imports
    title: str | None = None  # the schema's title, for imports
    reason: str | None = None  # a fragment of the reason, for skipped and invalid

    @property
    def run(self) -> str:
        return "imported" if self.plan in ("IMPORT", "CREATE-VERSION") else self.plan.lower()


def crawl(cli: Callable[..., CliResult], command: str, registry: LocalRegistry,
          akua: AkuaDouble, state: Path, *extra: str) -> CliResult:
    args = [command, "--registry", registry.host, "--plain-http", "--state", str(state),
            "--log-format", "json", "--concurrency", "2", "--rate", "500", *extra]
    env = {}
    if command == "run":
        env["AKUA_API_TOKEN"] = akua.switches.token
        args += ["--api-url", akua.url]
    return cli(args, env=env)


def check(cli: Callable[..., CliResult], registry: LocalRegistry, akua: AkuaDouble,
          tmp_path: Path, expected: Sequence[Expected], descriptions: dict[str, str]) -> Path:
    """Plan, run, run again and re-check digests; return the state's path."""
    state = tmp_path / "state.db"
    problems = any(e.plan == "INVALID" for e in expected)

    plan = crawl(cli, "plan", registry, akua, state, "-o", "json")
    assert plan.status == (1 if problems else 0), plan.stderr[-2000:]
    lines = [json.loads(line) for line in plan.stdout.splitlines()]
    planned = {(p["repository"], p["tag"]): p for p in lines if "totals" not in p}
    assert set(planned) == {(e.repository, e.tag) for e in expected}
    for e in expected:
        line = planned[(e.repository, e.tag)]
        assert (line["action"], line["semver"], line["digest"]) == (e.plan, e.semver, e.digest), (
            e, line)
        if e.reason is not None:
            assert e.reason in line["reason"], (e, line)

    done = crawl(cli, "run", registry, akua, state)
    assert done.status == (1 if problems else 0), done.stderr[-2000:]
    items = {(i["repository"], i["tag"]): i for i in done.events if i["event"].startswith("item.")}
    for e in expected:
        item = items[(e.repository, e.tag)]
        assert (item["outcome"], item["digest"]) == (e.run, e.digest), (e, item)
        if e.reason is not None:
            assert e.reason in item["reason"], (e, item)
    assert done.closing["imported"] == sum(e.run == "imported" for e in expected)

    # Akua got exactly the imports: per package, each SemVer with the right ref and schema.
    packages = {p["name"]: p for p in akua.packages()}
    imports = [e for e in expected if e.run == "imported"]
    assert set(packages) == {e.repository for e in imports}
    for name, package in packages.items():
        assert package["source"]["oci_ref"] == f"oci://{registry.host}/{name}"
        assert package["description"] == descriptions.get(name), name
        got = {(v["semver"], v["ref"], json.dumps(v["input_schema"], sort_keys=True))
               for v in akua.versions(package["id"])}
        want = {(e.semver, e.ref, json.dumps(schema(e.title or ""), sort_keys=True))
                for e in imports if e.repository == name}
        assert got == want, name
    assert not akua.find_duplicates()

    # A second run sends nothing and ends every import as exists.
    before = len(akua.received)
    again = crawl(cli, "run", registry, akua, state)
    assert again.status == 0, again.stderr[-2000:]
    assert akua.received[before:] == []
    assert again.closing["exists"] == len(imports)
    assert again.closing["imported"] == 0
    # No manifest read for what was imported or skipped; one HEAD per invalid tag.
    assert again.closing["requests"]["registry_manifest_head"] == sum(
        e.plan == "INVALID" for e in expected)
    assert again.closing["requests"]["registry_manifest_get"] == 0

    # Re-checking every imported tag's digest (a HEAD each, indexes included) finds none moved.
    recheck = crawl(cli, "run", registry, akua, state, "--recheck-digests")
    assert recheck.status == 0, recheck.stderr[-2000:]
    assert akua.received[before:] == []
    assert (recheck.closing["exists"], recheck.closing["rejected"]) == (len(imports), 0)
    # One HEAD per SemVer tag.
    assert recheck.closing["requests"]["registry_manifest_head"] == len(expected)
    return state


# ---------------------------------------------------------------- umoci + skopeo


class Umoci:
    """Images made with umoci in an OCI layout, copied to the registry with skopeo."""

    def __init__(self, tmp_path: Path, registry: LocalRegistry) -> None:
        need("umoci")
        need("skopeo")
        self.layout = tmp_path / "layout"
        self.work = tmp_path / "umoci"
        self.work.mkdir()
        self.registry = registry
        sh("umoci", "init", "--layout", self.layout)

    def image(self, name: str, annotations: dict[str, str]) -> str:
        image = f"{self.layout}:{name}"
        sh("umoci", "new", "--image", image)
        content = self.work / f"{name}.txt"
        content.write_text(f"content of {name}\n")
        sh("umoci", "insert", "--image", image, content, f"/{name}.txt")
        notes = [arg for key, value in annotations.items()
                 for arg in ("--manifest.annotation", f"{key}={value}")]
        sh("umoci", "config", "--image", image, "--config.label", f"interop.name={name}", *notes)
        return image

    def push(self, image: str, repository: str, tag: str, *, docker: bool = False) -> str:
        digest = self.work / f"{repository.replace('/', '_')}-{tag}.digest"
        sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digest,
           "--format", "v2s2" if docker else "oci",
           f"oci:{image}", f"docker://{self.registry.host}/{repository}:{tag}")
        return digest_file(digest)


def test_umoci_and_skopeo(registry_factory, akua: AkuaDouble, tmp_path: Path, cli) -> None:
    registry = registry_factory()
    umoci = Umoci(tmp_path, registry)
    expected: list[Expected] = []

    def package(name: str, tag: str, semver: str, title: str, plan: str) -> None:
        image = umoci.image(name, {SCHEMA_KEY: schema_text(title),
                                   DESCRIPTION_KEY: "Made with umoci."})
        digest = umoci.push(image, "umoci/app", tag)
        expected.append(Expected("umoci/app", tag, semver, digest, plan, ref=digest, title=title))

    package("one", "1.0.0", "1.0.0", "umoci 1.0.0", "IMPORT")
    package("two", "v1.1.0", "1.1.0", "umoci v1.1.0", "CREATE-VERSION")
    package("three", "1.2.0_build.5", "1.2.0+build.5", "umoci helm tag", "CREATE-VERSION")

    plain = umoci.image("plain", {})
    digest = umoci.push(plain, "umoci/plain", "1.0.0")
    expected.append(Expected("umoci/plain", "1.0.0", "1.0.0", digest, "SKIPPED", reason=NO_SCHEMA))

    # The same annotated image as Docker schema2: skopeo drops the annotations.
    annotated = umoci.image("docker", {SCHEMA_KEY: schema_text("umoci docker")})
    digest = umoci.push(annotated, "umoci/docker", "1.0.0", docker=True)
    assert served(registry, "umoci/docker", "1.0.0")[1]["mediaType"] == (
        "application/vnd.docker.distribution.manifest.v2+json")
    expected.append(Expected("umoci/docker", "1.0.0", "1.0.0", digest, "SKIPPED",
                             reason=DOCKER_NO_SCHEMA))

    state = check(cli, registry, akua, tmp_path, expected, {"umoci/app": "Made with umoci."})

    # Re-pushing an imported tag with other content: Akua's version cannot follow.
    first = expected[0]
    moved = umoci.push(umoci.image("moved", {SCHEMA_KEY: schema_text("moved")}), "umoci/app",
                       first.tag)
    before = len(akua.received)
    done = crawl(cli, "run", registry, akua, state, "--recheck-digests")
    assert done.status == 1, done.stderr[-2000:]
    items = [i for i in done.events if i["event"] == "item.rejected"]
    assert [(i["tag"], i["digest"]) for i in items] == [(first.tag, moved)]
    assert f"tag moved from {first.digest} to {moved}" in items[0]["reason"]
    assert akua.received[before:] == []


# ---------------------------------------------------------------- buildah, podman


class Containers:
    """buildah or podman with its own storage under tmp_path (vfs, no daemon)."""

    def __init__(self, command: str, tmp_path: Path, registry: LocalRegistry,
                 runroot: Path | None = None) -> None:
        need(command)
        self.command = command
        self.work = tmp_path / command
        self.work.mkdir()
        self.registry = registry
        self.options = ["--root", str(self.work / "root"), "--runroot", str(runroot or self.work / "run"),
                        "--storage-driver", "vfs"]
        if command == "podman":
            self.options += ["--events-backend", "none", "--cgroup-manager", "cgroupfs",
                             "--tmpdir", str(self.work / "tmp")]

    def __call__(self, *args: str | Path) -> str:
        return sh(self.command, *self.options, *args)

    def digest_of_push(self, source: str, repository: str, tag: str, *, docker: bool = False,
                       index: bool = False) -> str:
        digest = self.work / f"{repository.replace('/', '_')}-{tag}.digest"
        verb = ["manifest", "push", "--all"] if index else ["push"]
        self(*verb, "--quiet", "--tls-verify=false", "--digestfile", digest,
             "--format", "v2s2" if docker else "oci",
             source, f"docker://{self.registry.host}/{repository}:{tag}")
        return digest_file(digest)


class Buildah(Containers):
    def __init__(self, tmp_path: Path, registry: LocalRegistry) -> None:
        super().__init__("buildah", tmp_path, registry)

    def image(self, name: str, annotations: dict[str, str], *, arch: str = "amd64") -> str:
        container = self("from", "--quiet", "scratch").strip()
        content = self.work / f"{name}.txt"
        content.write_text(f"content of {name}\n")
        self("copy", container, content, f"/{name}.txt")
        notes = [arg for key, value in annotations.items()
                 for arg in ("--annotation", f"{key}={value}")]
        self("config", "--os", "linux", "--arch", arch, "--label", f"interop.name={name}",
             *notes, container)
        reference = f"localhost/interop/{name}:latest"
        self("commit", "--quiet", "--format", "oci", container, reference)
        self("rm", container)
        return reference

    def index(self, name: str, images: Sequence[str],
              descriptor_annotations: dict[str, str] | None = None) -> str:
        reference = f"localhost/interop/{name}:list"
        self("manifest", "create", reference)
        notes = [arg for key, value in (descriptor_annotations or {}).items()
                 for arg in ("--annotation", csv_field(f"{key}={value}"))]
        for image in images:
            self("manifest", "add", *notes, reference, f"containers-storage:{image}")
        return reference


def test_buildah(registry_factory, akua: AkuaDouble, tmp_path: Path, cli) -> None:
    registry = registry_factory()
    buildah = Buildah(tmp_path, registry)
    expected: list[Expected] = []
    described = {DESCRIPTION_KEY: "Made with buildah."}

    for tag, semver, plan in (("1.0.0", "1.0.0", "IMPORT"),
                              ("v1.1.0", "1.1.0", "CREATE-VERSION"),
                              ("1.2.0_build.5", "1.2.0+build.5", "CREATE-VERSION")):
        title = f"buildah {tag}"
        image = buildah.image(f"app-{tag}", {SCHEMA_KEY: schema_text(title), **described})
        digest = buildah.digest_of_push(image, "buildah/app", tag)
        expected.append(Expected("buildah/app", tag, semver, digest, plan, ref=digest, title=title))

    plain = buildah.image("plain", {})
    expected.append(Expected("buildah/plain", "1.0.0", "1.0.0",
                             buildah.digest_of_push(plain, "buildah/plain", "1.0.0"),
                             "SKIPPED", reason=NO_SCHEMA))

    annotated = buildah.image("docker", {SCHEMA_KEY: schema_text("buildah docker")})
    expected.append(Expected("buildah/docker", "1.0.0", "1.0.0",
                             buildah.digest_of_push(annotated, "buildah/docker", "1.0.0",
                                                    docker=True),
                             "SKIPPED", reason=DOCKER_NO_SCHEMA))

    # An index with one platform manifest carrying the schema: that manifest is the version.
    child = buildah.image("one-amd64", {SCHEMA_KEY: schema_text("buildah one"), **described})
    index = buildah.digest_of_push(buildah.index("one", [child]), "buildah/one", "1.0.0",
                                   index=True)
    expected.append(Expected("buildah/one", "1.0.0", "1.0.0", index, "IMPORT",
                             ref=only_child(registry, "buildah/one", "1.0.0"), title="buildah one"))

    # The same index through an OCI layout, copied with `skopeo copy --all`: same bytes.
    need("skopeo")
    layout = tmp_path / "layout"
    buildah("manifest", "push", "--quiet", "--all", "--format", "oci", buildah.index("copied", [child]),
            f"oci:{layout}:one")
    digest = tmp_path / "copied.digest"
    sh("skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", "--digestfile", digest,
       f"oci:{layout}:one", f"docker://{registry.host}/skopeo/one:1.0.0")
    assert digest_file(digest) == index
    expected.append(Expected("skopeo/one", "1.0.0", "1.0.0", index, "IMPORT",
                             ref=only_child(registry, "buildah/one", "1.0.0"), title="buildah one"))

    # buildah 1.28 cannot annotate the index itself; `manifest add --annotation` writes
    # the schema on the child's descriptor in the index.
    bare = buildah.image("descriptor-amd64", {})
    index = buildah.digest_of_push(
        buildah.index("descriptor", [bare], {SCHEMA_KEY: schema_text("buildah descriptor"),
                                             **described}),
        "buildah/descriptor", "1.0.0", index=True)
    _, document = served(registry, "buildah/descriptor", "1.0.0")
    assert json.loads(document["manifests"][0]["annotations"][SCHEMA_KEY]) == schema(
        "buildah descriptor")
    expected.append(Expected("buildah/descriptor", "1.0.0", "1.0.0", index, "IMPORT",
                             ref=only_child(registry, "buildah/descriptor", "1.0.0"),
                             title="buildah descriptor"))

    # Two platforms, no schema anywhere: not a package.
    amd64, arm64 = (buildah.image(f"multi-{a}", {}, arch=a) for a in ("amd64", "arm64"))
    index = buildah.digest_of_push(buildah.index("multi", [amd64, arm64]), "buildah/multi",
                                   "1.0.0", index=True)
    expected.append(Expected("buildah/multi", "1.0.0", "1.0.0", index, "SKIPPED",
                             reason=MULTI_NO_SCHEMA))

    # The same two platforms with the schema on their descriptors: the same mistake.
    index = buildah.digest_of_push(
        buildah.index("wrong-descriptor", [amd64, arm64], {SCHEMA_KEY: schema_text("multi")}),
        "buildah/wrong-descriptor", "1.0.0", index=True)
    expected.append(Expected("buildah/wrong-descriptor", "1.0.0", "1.0.0", index, "INVALID",
                             reason=MULTI_SCHEMA))

    # Two platforms whose manifests carry the schema: the precise mistake.
    amd64, arm64 = (buildah.image(f"wrong-{a}", {SCHEMA_KEY: schema_text(a)}, arch=a)
                    for a in ("amd64", "arm64"))
    index = buildah.digest_of_push(buildah.index("wrong", [amd64, arm64]), "buildah/wrong",
                                   "1.0.0", index=True)
    expected.append(Expected("buildah/wrong", "1.0.0", "1.0.0", index, "INVALID",
                             reason=MULTI_SCHEMA))

    # The one-platform index as a Docker manifest list: the child is schema2, no annotations.
    child = buildah.image("list-amd64", {SCHEMA_KEY: schema_text("buildah list")})
    index = buildah.digest_of_push(buildah.index("list", [child]), "buildah/list", "1.0.0",
                                   index=True, docker=True)
    assert served(registry, "buildah/list", "1.0.0")[1]["mediaType"] == (
        "application/vnd.docker.distribution.manifest.list.v2+json")
    expected.append(Expected("buildah/list", "1.0.0", "1.0.0", index, "SKIPPED",
                             reason=DOCKER_NO_SCHEMA))

    check(cli, registry, akua, tmp_path, expected,
          {name: "Made with buildah." for name in ("buildah/app", "buildah/one",
                                                   "buildah/descriptor", "skopeo/one")})


class Podman(Containers):
    def __init__(self, tmp_path: Path, registry: LocalRegistry, runroot: Path) -> None:
        # podman refuses a runroot path longer than 50 characters (tmp_path is longer).
        super().__init__("podman", tmp_path, registry, runroot)

    def build(self, name: str, annotations: dict[str, str], *extra: str) -> str:
        context = self.work / name
        context.mkdir()
        (context / "content.txt").write_text(f"content of {name}\n")
        (context / "Containerfile").write_text(
            f"FROM scratch\nCOPY content.txt /{name}.txt\nLABEL interop.name={name}\n")
        notes = [arg for key, value in annotations.items()
                 for arg in ("--annotation", f"{key}={value}")]
        reference = f"localhost/interop/{name}:latest"
        self("build", "--quiet", "--no-cache", "--format", "oci", *notes, *extra,
             "--tag" if not extra else "--manifest", reference, context)
        return reference


def test_podman(registry_factory, akua: AkuaDouble, tmp_path: Path, cli,
                request: pytest.FixtureRequest) -> None:
    registry = registry_factory()
    runroot = Path(tempfile.mkdtemp(prefix="akua-podman-"))
    request.addfinalizer(lambda: shutil.rmtree(runroot, ignore_errors=True))
    podman = Podman(tmp_path, registry, runroot)
    expected: list[Expected] = []
    described = {DESCRIPTION_KEY: "Made with podman."}

    for tag, semver, plan in (("1.0.0", "1.0.0", "IMPORT"),
                              ("v2.0.0-rc.1", "2.0.0-rc.1", "CREATE-VERSION"),
                              ("2.0.0-rc.1_build.7", "2.0.0-rc.1+build.7", "CREATE-VERSION")):
        title = f"podman {tag}"
        image = podman.build(f"app-{tag}", {SCHEMA_KEY: schema_text(title), **described})
        digest = podman.digest_of_push(image, "podman/app", tag)
        expected.append(Expected("podman/app", tag, semver, digest, plan, ref=digest, title=title))

    plain = podman.build("plain", {})
    expected.append(Expected("podman/plain", "1.0.0", "1.0.0",
                             podman.digest_of_push(plain, "podman/plain", "1.0.0"),
                             "SKIPPED", reason=NO_SCHEMA))

    annotated = podman.build("docker", {SCHEMA_KEY: schema_text("podman docker")})
    expected.append(Expected("podman/docker", "1.0.0", "1.0.0",
                             podman.digest_of_push(annotated, "podman/docker", "1.0.0",
                                                   docker=True),
                             "SKIPPED", reason=DOCKER_NO_SCHEMA))

    # `podman build --platform` for one platform into a manifest list: the build's
    # annotations land on the platform manifest, which is the version.
    one = podman.build("one", {SCHEMA_KEY: schema_text("podman one"), **described},
                       "--platform", "linux/arm64")
    index = podman.digest_of_push(one, "podman/one", "1.0.0", index=True)
    expected.append(Expected("podman/one", "1.0.0", "1.0.0", index, "IMPORT",
                             ref=only_child(registry, "podman/one", "1.0.0"), title="podman one"))

    # Two platforms, no schema: not a package.
    multi = podman.build("multi", {}, "--platform", "linux/amd64,linux/arm64")
    index = podman.digest_of_push(multi, "podman/multi", "1.0.0", index=True)
    assert len(served(registry, "podman/multi", "1.0.0")[1]["manifests"]) == 2
    expected.append(Expected("podman/multi", "1.0.0", "1.0.0", index, "SKIPPED",
                             reason=MULTI_NO_SCHEMA))

    # Two platforms built with the schema annotation: on each child, not on the index.
    wrong = podman.build("wrong", {SCHEMA_KEY: schema_text("podman wrong")},
                         "--platform", "linux/amd64,linux/arm64")
    index = podman.digest_of_push(wrong, "podman/wrong", "1.0.0", index=True)
    expected.append(Expected("podman/wrong", "1.0.0", "1.0.0", index, "INVALID",
                             reason=MULTI_SCHEMA))

    check(cli, registry, akua, tmp_path, expected,
          {"podman/app": "Made with podman.", "podman/one": "Made with podman."})

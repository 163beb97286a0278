"""Packages exactly as ``akua publish`` lays them out, crawled end to end.

A real registry seeded with artifacts in akua publish's layout (its config,
its one content layer, its media types, no annotation), the strict Akua
double, and the CLI: ``run`` imports every version with the schema
``akuapkg export`` derives, ``plan`` says where each schema came from, hostile
content ends invalid with a precise reason, and without the ``kcl`` extra
(kcl-lib blocked in a child process) every such package is skipped naming
the extra, and a later run with it imports them.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crawler.kcl_export import DRAFT_2020_12
from testkit.akua_double import AkuaDouble
from testkit.akua_package import gzip_bomb, package_files, package_tarball, seed_published
from testkit.registry import LocalRegistry, Seeder, package_annotations
from tests.plugins.cli import CliResult, child_command, child_environment, json_events, run_in_process

WEB_V1 = '''\
import akua.ctx
import charts.web as web

schema Input:
    """Inputs of the web package."""

    @ui(order=10, group="Identity")
    name: str = "web"
    """Resource name prefix."""

    replicas: int = 1

input: Input = ctx.input()
resources = web.template(input.name)
'''
WEB_V2 = WEB_V1.replace("    replicas: int = 1\n", "    replicas: int = 1\n    public?: bool = False\n")
API = 'schema Input:\n    endpoint: str\n    """Where the API listens."""\n'

WEB_V1_SCHEMA: dict[str, Any] = {
    "$schema": DRAFT_2020_12,
    "title": "Input",
    "type": "object",
    "description": "Inputs of the web package.",
    "properties": {
        "name": {
            "type": "string",
            "default": "web",
            "description": "Resource name prefix.",
            "x-ui": {"order": 10, "group": "Identity"},
        },
        "replicas": {"type": "integer", "default": 1},
    },
    "required": ["name", "replicas"],
}
WEB_V2_SCHEMA = {
    **WEB_V1_SCHEMA,
    "properties": {
        **WEB_V1_SCHEMA["properties"],
        "public": {"type": "boolean", "default": False},
    },
}
API_SCHEMA = {
    "$schema": DRAFT_2020_12,
    "title": "Input",
    "type": "object",
    "properties": {"endpoint": {"type": "string", "description": "Where the API listens."}},
    "required": ["endpoint"],
}
ANNOTATED_SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}}

# repository -> the precise reason (a fragment of it) its one version ends invalid with.
HOSTILE: dict[str, str] = {
    "hostile/huge": "package.k is 2097152 bytes, over the limit of 1048576 bytes",
    "hostile/bomb": "decompresses to more than 67108864 bytes",
    "hostile/escape": "member '../../etc/cron.d/evil' lies outside the package root",
    "hostile/missing": "no package.k at the package root (found 'src/package.k', not at the root)",
    "hostile/syntax": "package.k does not parse: line 2, column",
    "hostile/crash": "kcl-lib crashed on this package.k (its process killed by SIG",
}


def _escape_layer() -> bytes:
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in (("package.k", API.encode()), ("../../etc/cron.d/evil", b"* * * * * x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def seed(seeder: Seeder) -> dict[str, Any]:
    digests = {
        # 1.0.0 and 1.1.0 share their content (a re-tag): one layer, fetched once.
        ("team/web", "1.0.0"): seed_published(seeder, "team/web", ["1.0.0", "1.1.0"], package_k=WEB_V1),
        ("team/web", "v2.0.0"): seed_published(seeder, "team/web", ["v2.0.0"], package_k=WEB_V2),
        ("team/api", "0.1.0"): seed_published(seeder, "team/api", ["0.1.0"], package_k=API),
    }
    digests[("team/web", "1.1.0")] = digests[("team/web", "1.0.0")]
    seeder.add_artifact(
        "team/annotated", ["1.0.0"], annotations=package_annotations(ANNOTATED_SCHEMA, None)
    )
    # Not an Akua package: an ordinary image layer, no annotation.
    seeder.add_artifact(
        "other/image", ["1.0.0"], config_media_type="application/vnd.oci.image.config.v1+json"
    )
    layers = {
        "hostile/huge": package_tarball({"akua.toml": "x", "package.k": "#" * (2 * 1024 * 1024)}),
        "hostile/bomb": gzip_bomb(100 * 1024 * 1024),
        "hostile/escape": _escape_layer(),
        "hostile/missing": package_tarball({"akua.toml": "x", "src/package.k": API}),
        "hostile/syntax": package_tarball(package_files("schema Input:\n    name: str =\n")),
        "hostile/crash": package_tarball(
            package_files("schema Input:\n    a: int = " + "(" * 20000 + "1" + ")" * 20000 + "\n")
        ),
    }
    for repo, layer in layers.items():
        seed_published(seeder, repo, ["1.0.0"], layer=layer)
    return digests


def _args(command: str, registry: LocalRegistry, state: Path, akua: AkuaDouble | None) -> list[str]:
    args = [command, "--registry", registry.host, "--plain-http", "--state", str(state),
            "--log-format", "json", "--concurrency", "4", "--rate", "500"]
    if akua is not None:
        args += ["--api-url", akua.url]
    return args


def _crawl(command: str, registry: LocalRegistry, state: Path, akua: AkuaDouble | None,
           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliResult:
    env = {"AKUA_API_TOKEN": akua.switches.token} if akua is not None else {}
    return run_in_process(_args(command, registry, state, akua), monkeypatch, capsys, env)


def _items(result: CliResult) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["repository"], e["tag"]): e for e in result.events if e["event"].startswith("item.")}


def _received_schemas(akua: AkuaDouble) -> dict[tuple[str, str], dict[str, Any]]:
    names = {p["id"]: p["name"] for p in akua.packages()}
    found = {}
    for write in akua.writes():
        if write.path.endswith("packages:import"):
            version, name = write.body["version"], write.body["name"]
        else:
            version, name = write.body, names[write.path.split("/")[3]]
        found[(name, version["semver"])] = version["input_schema"]
    return found


def test_run_imports_every_published_version_with_the_exported_schema(
    seeder: Seeder, registry_factory: Any, akua: AkuaDouble, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    digests = seed(seeder)
    registry = registry_factory()
    state = tmp_path / "state.db"
    result = _crawl("run", registry, state, akua, monkeypatch, capsys)

    assert result.status == 1, result.stderr[-2000:]  # the hostile artifacts are invalid
    assert _received_schemas(akua) == {
        ("team/web", "1.0.0"): WEB_V1_SCHEMA,
        ("team/web", "1.1.0"): WEB_V1_SCHEMA,
        ("team/web", "2.0.0"): WEB_V2_SCHEMA,
        ("team/api", "0.1.0"): API_SCHEMA,
        ("team/annotated", "1.0.0"): ANNOTATED_SCHEMA,
    }
    assert not akua.find_duplicates()
    items = _items(result)
    for (repo, tag), digest in digests.items():
        item = items[(repo, tag)]
        assert item["outcome"] == "imported" and item["digest"] == digest
        assert item["reason"].endswith("; schema from package.k"), item
    assert items[("team/annotated", "1.0.0")]["reason"].endswith(
        "; schema from annotation 'dev.akua.package.input-schema'"
    )
    assert items[("other/image", "1.0.0")]["outcome"] == "skipped"
    assert items[("other/image", "1.0.0")]["reason"] == "no input schema"
    for repo, fragment in HOSTILE.items():
        item = items[(repo, "1.0.0")]
        assert item["outcome"] == "invalid", item
        assert fragment in item["reason"], item
    assert result.closing["invalid"] == len(HOSTILE)
    stats = result.named("schema.package_source")
    assert len(stats) == 1
    # team/web 1.0.0 and 1.1.0 share one layer: fetched once; every other layer once.
    assert stats[0]["blobs_fetched"] == 3 + len(HOSTILE)
    assert stats[0]["cache_hits"] >= 1

    # A re-run sends nothing to Akua and fetches no blob.
    before = len(akua.received)
    again = _crawl("run", registry, state, akua, monkeypatch, capsys)
    assert akua.received[before:] == []
    assert again.closing["imported"] == 0
    assert not again.named("schema.package_source")


def test_plan_says_where_each_schema_comes_from(
    seeder: Seeder, registry_factory: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(seeder)
    registry = registry_factory()
    monkeypatch.delenv("AKUA_API_TOKEN", raising=False)
    result = _crawl("plan", registry, tmp_path / "state.db", None, monkeypatch, capsys)
    lines = result.stdout.splitlines()
    web = [line for line in lines if " team/web " in line]
    assert len(web) == 3
    assert all(line.endswith("; schema from package.k") for line in web), web
    assert any(line.startswith("IMPORT") and " team/web 1.0.0 " in line for line in web)
    annotated = "; schema from annotation 'dev.akua.package.input-schema'"
    assert any(
        line.startswith("IMPORT") and line.endswith(annotated) and " team/annotated " in line
        for line in lines
    )
    assert any(line.startswith("INVALID") and " hostile/bomb " in line for line in lines)


def test_package_source_off_leaves_akua_packages_skipped(
    seeder: Seeder, registry_factory: Any, akua: AkuaDouble, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    seed_published(seeder, "team/api", ["0.1.0"], package_k=API)
    registry = registry_factory()
    state = tmp_path / "state.db"
    args = [*_args("run", registry, state, akua), "--schema-source", "annotation"]
    result = run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN": akua.switches.token})
    item = _items(result)[("team/api", "0.1.0")]
    assert item["outcome"] == "skipped"
    assert item["reason"] == (
        "no input schema annotation; the package source is off (schema_sources), so package.k "
        "is not read"
    )
    assert akua.writes() == []
    # Not settled: turning the source on imports it on the next run.
    result = _crawl("run", registry, state, akua, monkeypatch, capsys)
    assert _items(result)[("team/api", "0.1.0")]["outcome"] == "imported"


def test_a_422_on_a_derived_schema_says_the_derivations_differ(
    seeder: Seeder, registry_factory: Any, make_akua: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    digest = seed_published(seeder, "team/api", ["0.1.0"], package_k=API)
    registry = registry_factory()
    oci_ref = f"oci://{registry.host}/team/api"
    # Akua's own derivation (as the double is told) differs from ours.
    theirs = {**API_SCHEMA, "description": "Akua says otherwise."}
    akua = make_akua(expected={(oci_ref, "0.1.0"): (digest, theirs)})
    result = _crawl("run", registry, tmp_path / "state.db", akua, monkeypatch, capsys)
    item = _items(result)[("team/api", "0.1.0")]
    assert item["outcome"] == "rejected"
    assert item["reason"].startswith("HTTP 422: ")
    assert "input_schema does not match the published artifact" in item["reason"]
    assert item["reason"].endswith(
        "; the schema was derived from package.k and Akua derives a different one: the two "
        "derivations differ, which is worth a bug report to akua-crawler (with this package.k)"
    )
    assert result.status == 1


SITECUSTOMIZE = textwrap.dedent('''\
    """Test only: make kcl-lib impossible to import, as on a machine without the extra."""
    import sys


    class _NoKcl:
        def find_spec(self, name, path=None, target=None):
            if name == "kcl_lib" or name.startswith("kcl_lib."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _NoKcl())
''')


def test_without_the_kcl_extra_every_akua_package_is_skipped_naming_it(
    seeder: Seeder, registry_factory: Any, akua: AkuaDouble, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    digests = seed(seeder)
    registry = registry_factory()
    state = tmp_path / "state.db"
    blocker = tmp_path / "no-kcl"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = child_environment({"AKUA_API_TOKEN": akua.switches.token})
    env["PYTHONPATH"] = str(blocker) + ":" + env["PYTHONPATH"]
    # The blocker really works in that environment.
    probe = subprocess.run([*child_command([])[:1], "-c", "import kcl_lib"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "No module named 'kcl_lib'" in probe.stderr
    done = subprocess.run(child_command(_args("run", registry, state, akua)), env=env,
                          capture_output=True, text=True, timeout=300)
    events = json_events(done.stderr)
    items = {(e["repository"], e["tag"]): e for e in events if e["event"].startswith("item.")}
    akua_packages = [*digests, *((repo, "1.0.0") for repo in HOSTILE)]
    for key in akua_packages:
        assert items[key]["outcome"] == "skipped", items[key]
        assert "pip install 'akua-crawler[kcl]'" in items[key]["reason"], items[key]
    assert items[("team/annotated", "1.0.0")]["outcome"] == "imported"
    assert items[("other/image", "1.0.0")]["reason"] == "no input schema"
    assert done.returncode == 0, done.stderr[-2000:]

    # Installing the extra (here: no blocker) imports them on the next run.
    result = _crawl("run", registry, state, akua, monkeypatch, capsys)
    assert {key for key, e in _items(result).items() if e["outcome"] == "imported"} == set(digests)

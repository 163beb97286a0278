"""Schema verdicts through the product path: a real registry, the strict Akua double, the CLI.

Covers what the pipeline makes of issue 7's schema rules: ECMA-262 patterns and
`$schema` aliases import, dangling references are invalid, and remote references are
refused by default or, with `remote_refs = "keep"`, sent unchanged with the reason saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crawler.config import resolve
from crawler.errors import ConfigError
from testkit.akua_double import AkuaDouble
from testkit.registry import Seeder, package_annotations
from tests.plugins.cli import run_in_process

REMOTE = {
    "type": "object",
    "properties": {"pod": {"$ref": "https://kubernetes-schemas.example/pod.json"}},
}
DANGLING = {"$defs": {"port": {"type": "integer"}}, "properties": {"port": {"$ref": "#/$defs/prot"}}}
ECMA = {
    "$schema": "https://json-schema.org/schema#",
    "properties": {"name": {"type": "string", "pattern": r"^(?<first>\p{Letter}+)$"}},
}


def _seed(seeder: Seeder) -> dict[str, str]:
    digests = {}
    for repo, schema in (("team/remote", REMOTE), ("team/dangling", DANGLING), ("team/ecma", ECMA)):
        digests[repo] = seeder.add_artifact(repo, ["1.0.0"], annotations=package_annotations(schema, None))
    return digests


def _run(registry, akua: AkuaDouble, state: Path, monkeypatch, capsys, *extra: str):
    args = ["run", "--registry", registry.host, "--plain-http", "--state", str(state),
            "--log-format", "json", "--rate", "500", "--api-url", akua.url, *extra]
    done = run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN": akua.switches.token})
    items = {e["repository"]: e for e in done.events if e["event"].startswith("item.")}
    return done.status, items


def _sent(akua: AkuaDouble) -> dict[str, dict[str, Any]]:
    return {r.body["name"]: r.body["version"]["input_schema"]
            for r in akua.writes() if r.path.endswith("packages:import")}


def test_remote_references_are_refused_by_default(
    seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    _seed(seeder)
    registry = registry_factory()
    status, items = _run(registry, akua, tmp_path / "state.db", monkeypatch, capsys)
    assert status == 1
    assert items["team/remote"]["outcome"] == "invalid"
    assert "remote $ref 'https://kubernetes-schemas.example/pod.json'" in items["team/remote"]["reason"]
    assert "is not fetched" in items["team/remote"]["reason"]
    assert items["team/dangling"]["outcome"] == "invalid"
    assert "'#/$defs/prot'" in items["team/dangling"]["reason"]
    assert "points nowhere" in items["team/dangling"]["reason"]
    assert items["team/ecma"]["outcome"] == "imported"
    assert _sent(akua) == {"team/ecma": ECMA}


def test_keep_sends_remote_references_unchanged_and_says_so(
    seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    _seed(seeder)
    registry = registry_factory()
    status, items = _run(
        registry, akua, tmp_path / "state.db", monkeypatch, capsys, "--remote-refs", "keep"
    )
    assert status == 1  # the dangling reference is still invalid
    assert items["team/remote"]["outcome"] == "imported"
    reason = items["team/remote"]["reason"]
    assert "remote references unresolved (remote_refs = keep" in reason
    assert "https://kubernetes-schemas.example/pod.json" in reason
    assert items["team/dangling"]["outcome"] == "invalid"
    assert "remote references" not in items["team/ecma"]["reason"]
    assert _sent(akua) == {"team/ecma": ECMA, "team/remote": REMOTE}


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"flags": {"remote_refs": "keep"}}, "keep"),
        ({"environ": {"AKUA_CRAWLER_REMOTE_REFS": "keep"}}, "keep"),
        ({}, "refuse"),
    ],
)
def test_remote_refs_option(sources: dict[str, Any], expected: str) -> None:
    settings = resolve(
        flags={"registry": "r.example", **sources.get("flags", {})},
        environ=sources.get("environ", {}),
        config_file=None,
        need_token=False,
    )
    assert settings.remote_refs == expected


def test_remote_refs_option_refuses_other_values(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('registry = "r.example"\nremote_refs = "fetch"\n')
    with pytest.raises(ConfigError, match="remote_refs"):
        resolve(flags={}, environ={}, config_file=config, need_token=False)


def test_plan_says_what_keep_would_send(
    seeder, registry_factory, tmp_path: Path, monkeypatch, capsys
) -> None:
    _seed(seeder)
    registry = registry_factory()
    args = ["plan", "--registry", registry.host, "--plain-http", "--state", str(tmp_path / "s.db"),
            "--log-format", "json", "--remote-refs", "keep"]
    done = run_in_process(args, monkeypatch, capsys, {})
    line = next(line for line in done.stdout.splitlines() if "team/remote" in line)
    assert line.startswith("IMPORT")
    assert "would import; schema sent with remote references unresolved" in line
    dangling = next(line for line in done.stdout.splitlines() if "team/dangling" in line)
    assert dangling.startswith("INVALID")
    assert "points nowhere" in dangling

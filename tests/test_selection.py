"""Choosing the repositories of a run: sources, filters, names, collisions, shards, source problems."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from crawler.config import SourceSettings, resolve
from crawler.errors import ConfigError
from crawler.filters import RepositoryFilter
from crawler.naming import NameRule
from crawler.registry.errors import RegistryAuthFailed, RegistryUnavailable
from crawler.selection import choose, select
from crawler.shards import Shard


def source(name: str, *, rule: NameRule | None = None, include=(), exclude=(),
           repositories=()) -> SourceSettings:
    return SourceSettings(name=name, registry=f"{name}.example", names=rule or NameRule.parse(),
                          repository_filter=RepositoryFilter.parse(include, exclude, ""),
                          repositories=tuple(repositories))


def test_filters_names_and_collisions() -> None:
    charts = source("charts", rule=NameRule.parse(rule="strip_prefix", prefix="charts/"),
                    include=["charts/**"], exclude=["charts/tmp-*"])
    hub = source("hub")
    listed = {
        "charts": ["charts/app", "charts/tmp-1", "charts/db", "other/x"],
        "hub": ["db", "tools/" + "t" * 120, "tools/ok"],
    }
    selection = choose([charts, hub], listed)
    assert [(s.source.name, s.repository, s.package_name) for s in selection.selected] == [
        ("charts", "charts/app", "app"), ("hub", "tools/ok", "tools/ok")]
    assert [(f.repository, f.reason) for f in selection.filtered] == [
        ("charts/tmp-1", "matched by exclude 'charts/tmp-*'"),
        ("other/x", "not matched by include 'charts/**'"),
    ]
    refused = {(r.source, r.repository): r.reason for r in selection.refused}
    assert refused[("charts", "charts/db")].startswith(
        "package name collision: charts:charts/db, hub:db all map to 'db'")
    assert ("hub", "db") in refused
    assert "126 characters" in refused[("hub", "tools/" + "t" * 120)]
    # The over-long name is the name's fault (invalid); a collision is rejected.
    outcomes = {r.repository: r.outcome.value for r in selection.refused}
    assert outcomes == {"charts/db": "rejected", "db": "rejected", "tools/" + "t" * 120: "invalid"}


def test_shards_split_selection_and_agree_on_collisions() -> None:
    hub = source("hub", rule=NameRule.parse(rule="last_segment"))
    listed = {"hub": [f"team-{i}/app-{i}" for i in range(30)] + ["a/same", "b/same"]}
    parts = [choose([hub], listed, Shard(i, 3)) for i in range(3)]
    chosen = [s.repository for part in parts for s in part.selected]
    assert sorted(chosen) == sorted(f"team-{i}/app-{i}" for i in range(30))  # each exactly once
    refused = [r.repository for part in parts for r in part.refused]
    assert sorted(refused) == ["a/same", "b/same"]  # refused by whichever shard owns each
    assert sum(part.other_shards for part in parts) == 2 * 32


def test_a_failing_source_does_not_stop_the_others() -> None:
    good, down, refused = source("good"), source("down"), source("refused")
    explicit = source("explicit", repositories=["x/y"])

    async def catalog(s: SourceSettings) -> AsyncIterator[str]:
        if s.name == "down":
            raise RegistryUnavailable("connection refused")
        if s.name == "refused":
            raise RegistryAuthFailed("the registry refused the credentials of user 'bob'")
        if s.name == "explicit":
            raise AssertionError("an explicit list never reads the catalog")
        yield "team/app"
        yield "team/app"  # a repeated page: once

    selection = anyio.run(select, [good, down, refused, explicit], catalog)
    assert [(s.source.name, s.repository) for s in selection.selected] == [
        ("good", "team/app"), ("explicit", "x/y")]
    assert selection.source_problems == {
        "down": "cannot list the repositories of down.example: connection refused",
        "refused": "cannot list the repositories of refused.example: "
                   "the registry refused the credentials of user 'bob'",
    }


def test_listed_collisions_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('repositories = ["charts/app", "apps/app"]\nname_rule = "last_segment"\n'
                      'registry = "r.example"\n')
    with pytest.raises(ConfigError, match=r"package names: package name collision: .* map to 'app'"):
        resolve(flags={}, environ={}, config_file=config, need_token=False)
    with pytest.raises(ConfigError, match="over Akua's 120"):
        resolve(flags={"registry": "r.example", "repositories": ["a/" + "b" * 119]}, environ={},
                config_file=None, need_token=False)


def test_one_repository_taken_by_two_sources_is_refused() -> None:
    a = SourceSettings(name="a", registry="r.example", names=NameRule.parse())
    b = SourceSettings(name="b", registry="r.example", names=NameRule.parse(rule="last_segment"))
    selection = choose([a, b], {"a": ["team/app", "team/x"], "b": ["team/app", "other/y"]})
    assert sorted((s.source.name, s.repository) for s in selection.selected) == [
        ("a", "team/x"), ("b", "other/y")]
    assert {(r.source, r.reason) for r in selection.refused} == {
        (name, "r.example/team/app is taken by the sources a, b; leave it to one (include/exclude)")
        for name in ("a", "b")}

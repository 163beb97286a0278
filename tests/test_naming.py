"""Package name rules, overrides, the 120-character limit and collisions: table tests."""

from __future__ import annotations

import pytest

from crawler.errors import ConfigError
from crawler.naming import NameRule, assign_names


@pytest.mark.parametrize(
    ("kwargs", "repository", "name"),
    [
        ({}, "charts/app", "charts/app"),
        ({"rule": "last_segment"}, "charts/team/app", "app"),
        ({"rule": "last_segment"}, "app", "app"),
        ({"rule": "strip_prefix", "prefix": "charts/"}, "charts/app", "app"),
        ({"rule": "strip_prefix", "prefix": "charts/"}, "other/app", "other/app"),
        ({"rule": "strip_prefix", "prefix": "charts"}, "charts/app", "app"),  # the "/" goes too
        ({"rule": "strip_prefix", "prefix": "charts/app"}, "charts/app", "charts/app"),  # never empty
        ({"rule": "template", "template": "{source}-{last}"}, "charts/app", "hub-app"),
        ({"rule": "template", "template": "{parent}/{last}@{registry}"}, "a/b/c", "a/b/c@r.example:5000"),
        ({"rule": "template", "template": "{path}"}, "a/b", "a/b"),
        ({"rule": "last_segment", "overrides": {"charts/app": "the-app"}}, "charts/app", "the-app"),
    ],
)
def test_name_rules(kwargs, repository, name) -> None:
    rule = NameRule.parse(registry="r.example:5000", source="hub", **kwargs)
    assert rule.name_of(repository) == name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "lowercase"}, "name_rule: 'lowercase' is not one of"),
        ({"rule": "strip_prefix"}, "needs a name_prefix"),
        ({"rule": "template"}, "needs a name_template"),
        ({"rule": "template", "template": "{last}-{tag}"}, r"unknown placeholder \{tag\}"),
        ({"rule": "template", "template": "{last"}, "unbalanced brace"),
        ({"overrides": {"a/b": "x" * 121}}, "name_overrides: a/b maps to a package name of 121 characters"),
        ({"overrides": {"a/b": " "}}, "which starts or ends with white space"),
        ({"overrides": {"a/b": "app "}}, "which starts or ends with white space"),
        ({"overrides": {"a/b": "/app"}}, "which starts or ends with '/'"),
    ],
)
def test_bad_rules_are_config_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        NameRule.parse(where="source 'hub': ", **kwargs)


def test_collisions_and_long_names_refused_others_named() -> None:
    last = NameRule.parse(rule="last_segment")
    path = NameRule.parse()
    long_repository = "deep/" + "x" * 130
    book = assign_names([
        ("charts", "charts/app", last),
        ("charts", "charts/db", last),
        ("ghcr", "app", path),  # another source, same name: Akua names are per workspace
        ("ghcr", long_repository, path),
        ("ghcr", "tools/ok", path),
    ])
    assert book.names == {("charts", "charts/db"): "db", ("ghcr", "tools/ok"): "tools/ok"}
    assert book.problems[("charts", "charts/app")] == (
        "package name collision: charts:charts/app, ghcr:app all map to 'app'; "
        "set name_overrides or another name_rule"
    )
    assert book.problems[("ghcr", "app")] == book.problems[("charts", "charts/app")]
    assert "135 characters, over Akua's 120" in book.problems[("ghcr", long_repository)]


def test_exactly_120_characters_is_fine() -> None:
    book = assign_names([("s", "a/" + "b" * 118, NameRule.parse())])
    assert book.name("s", "a/" + "b" * 118) == "a/" + "b" * 118


def test_in_a_collision_the_package_already_imported_keeps_its_name() -> None:
    last = NameRule.parse(rule="last_segment")
    entries = [("s", "charts/app", last), ("s", "legacy/app", last), ("s", "x/app", last)]
    book = assign_names(entries, owners={("s", "legacy/app"): "app"})
    assert book.names == {("s", "legacy/app"): "app"}
    assert book.problems[("s", "charts/app")].endswith(
        "all map to 'app', which s:legacy/app was imported under; set name_overrides or another "
        "name_rule")
    # An owner of another name does not count; two owners (impossible in Akua) refuse all.
    assert assign_names(entries, owners={("s", "legacy/app"): "other"}).names == {}
    assert assign_names(entries, owners={("s", "legacy/app"): "app", ("s", "x/app"): "app"}).names == {}

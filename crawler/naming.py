"""Repository path -> Akua package name: one rule per source, plus explicit overrides.

Rules (``name_rule``):

* ``path`` (default): the whole repository path, ``charts/app`` -> ``charts/app``;
* ``last_segment``: ``charts/app`` -> ``app``;
* ``strip_prefix``: ``name_prefix`` removed from the front, ``charts/app`` -> ``app``
  with ``name_prefix = "charts/"`` (or ``"charts"``: the "/" left behind goes too); a path
  without the prefix keeps its whole path;
* ``template``: ``name_template`` with ``{path}``, ``{last}`` (last segment),
  ``{parent}`` (the path before it, empty for one segment), ``{registry}`` and
  ``{source}`` replaced, e.g. ``"{source}-{last}"``.

``name_overrides`` maps a repository to a name and wins over the rule.  Names
are checked against Akua's limit (1 to 120 characters), for control characters,
white space or "/" at either end (names nobody means, which a template can make), and for collisions:
two repositories of one run mapping to one name would make one of them land
in the other's package, so both are refused before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from crawler.contract import NAME_MAX
from crawler.errors import ConfigError

RULES: Final = ("path", "last_segment", "strip_prefix", "template")
TEMPLATE_FIELDS: Final = ("path", "last", "parent", "registry", "source")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


def check_name(name: str, repository: str) -> str | None:
    """Why ``name`` cannot be an Akua package name, or None."""
    if not name:
        return f"{repository} maps to an empty package name"
    if len(name) > NAME_MAX:
        return (
            f"{repository} maps to a package name of {len(name)} characters, over Akua's "
            f"{NAME_MAX}; set name_overrides or another name_rule"
        )
    if any(not ch.isprintable() for ch in name):
        return f"{repository} maps to a package name with control characters"
    if name != name.strip():
        return f"{repository} maps to the package name {name!r}, which starts or ends with white space"
    if name.startswith("/") or name.endswith("/"):
        return f"{repository} maps to the package name {name!r}, which starts or ends with '/'"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NameRule:
    rule: str = "path"
    prefix: str = ""
    template: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)
    registry: str = ""
    source: str = ""

    @classmethod
    def parse(
        cls,
        *,
        rule: str = "path",
        prefix: str | None = None,
        template: str | None = None,
        overrides: Mapping[str, str] | None = None,
        registry: str = "",
        source: str = "",
        where: str = "",
    ) -> NameRule:
        if rule not in RULES:
            raise ConfigError(f"{where}name_rule: {rule!r} is not one of {', '.join(RULES)}")
        if rule == "strip_prefix" and not prefix:
            raise ConfigError(f"{where}name_prefix: name_rule = \"strip_prefix\" needs a name_prefix")
        if rule == "template":
            if not template:
                raise ConfigError(f"{where}name_template: name_rule = \"template\" needs a name_template")
            unknown = [f for f in _PLACEHOLDER.findall(template) if f not in TEMPLATE_FIELDS]
            if unknown:
                raise ConfigError(
                    f"{where}name_template: unknown placeholder {{{unknown[0]}}}; "
                    f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
                )
            if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
                raise ConfigError(f"{where}name_template: unbalanced brace in {template!r}")
        overrides = dict(overrides or {})
        for repository, name in overrides.items():
            problem = check_name(name, repository)
            if problem:
                raise ConfigError(f"{where}name_overrides: {problem}")
        return cls(rule=rule, prefix=prefix or "", template=template or "", overrides=overrides,
                   registry=registry, source=source)

    def name_of(self, repository: str) -> str:
        if repository in self.overrides:
            return self.overrides[repository]
        if self.rule == "path":
            return repository
        parent, _, last = repository.rpartition("/")
        if self.rule == "last_segment":
            return last
        if self.rule == "strip_prefix":
            # A prefix given without its "/" ("charts") still leaves "app", not "/app".
            stripped = repository.removeprefix(self.prefix).lstrip("/")
            return stripped if stripped else repository
        values = {"path": repository, "last": last, "parent": parent,
                  "registry": self.registry, "source": self.source}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)


@dataclass(frozen=True, slots=True)
class NameProblem:
    repository: str
    reason: str


@dataclass(slots=True)
class NameBook:
    """The names of one run's repositories, every source together; collisions and limits checked."""

    names: dict[tuple[str, str], str] = field(default_factory=dict)  # (source, repository) -> name
    problems: dict[tuple[str, str], str] = field(default_factory=dict)
    #: the problems of names that can never be Akua package names (over-long, empty, control
    #: characters): the item ends invalid; the others (collisions) end rejected
    invalid: set[tuple[str, str]] = field(default_factory=set)

    def name(self, source: str, repository: str) -> str | None:
        return self.names.get((source, repository))


def assign_names(
    entries: Iterable[tuple[str, str, NameRule]],
    owners: Mapping[tuple[str, str], str] | None = None,
) -> NameBook:
    """Name every ``(source, repository, rule)``; refuse over-long names and every party to a collision.

    ``owners``: ``(source, repository) -> name`` already imported under (from the state).  In a
    collision, the one party that already owns the name keeps it; only the newcomers are refused.
    Pure: the same answer in ``plan`` and ``run``, before anything is written.
    """
    owners = owners or {}
    book = NameBook()
    claimed: dict[str, list[tuple[str, str]]] = {}
    for source, repository, rule in entries:
        key = (source, repository)
        if key in book.names or key in book.problems:
            continue
        name = rule.name_of(repository)
        problem = check_name(name, repository)
        if problem:
            book.problems[key] = problem
            book.invalid.add(key)
            continue
        book.names[key] = name
        claimed.setdefault(name, []).append(key)
    for name, keys in claimed.items():
        if len(keys) < 2:
            continue
        everyone = ", ".join(f"{source}:{repository}" for source, repository in keys)
        owning = [key for key in keys if owners.get(key) == name]
        for key in keys:
            if len(owning) == 1 and key == owning[0]:
                continue  # imported under this name before: it keeps it
            del book.names[key]
            if len(owning) == 1:
                owner = f"{owning[0][0]}:{owning[0][1]}"
                book.problems[key] = (
                    f"package name collision: {everyone} all map to {name!r}, which {owner} "
                    "was imported under; set name_overrides or another name_rule"
                )
            else:
                book.problems[key] = (
                    f"package name collision: {everyone} all map to {name!r}; "
                    "set name_overrides or another name_rule"
                )
    return book

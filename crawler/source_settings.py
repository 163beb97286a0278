"""The registries to crawl: ``SourceSettings``, ``[[source]]`` tables and repositories files.

A source is one registry with its own credentials, filters, name rule and limits.
Without ``[[source]]`` tables the top-level keys describe the one source
(``config.Settings.source_list``); with them each table is resolved here, a key
coming from a flag or variable, the table, or the top-level value, in that order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crawler.errors import ConfigError
from crawler.filters import NO_REPOSITORY_FILTER, NO_TAG_FILTER, RepositoryFilter, TagFilter
from crawler.naming import NameRule, assign_names
from crawler.secret import Secret
from crawler.secret_sources import registry_password
from crawler.setting_values import parse_registry, parse_repository, parse_str
from crawler.shards import Shard
from crawler.tls import tls_context

REGISTRY_IN_FLIGHT_DEFAULT: Final = 16
TIMEOUT_DEFAULT: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    """One registry to crawl, with its own credentials, filters, name rule and limits."""

    name: str
    registry: str
    plain_http: bool = False
    insecure: bool = False
    username: str | None = None
    password: Secret | None = None
    docker_config: bool = True
    allow_plain_http_credentials: bool = False  # credentials over plain HTTP beyond loopback-direct
    repositories: tuple[str, ...] = ()  # --repository and repositories_file; empty: the catalog
    repository_filter: RepositoryFilter = NO_REPOSITORY_FILTER
    tag_filter: TagFilter = NO_TAG_FILTER
    names: NameRule = field(default_factory=NameRule)
    registry_in_flight: int = REGISTRY_IN_FLIGHT_DEFAULT
    registry_rate: float | None = None
    registry_timeout: float = TIMEOUT_DEFAULT
    ca_file: Path | None = None  # trust this CA bundle instead of the system's (TLS)
    client_cert: Path | None = None  # a client certificate for registries that require one
    client_key: Path | None = None


SOURCE_KEYS: Final = frozenset({
    "registry", "plain_http", "insecure", "username", "password_env", "password_file", "docker_config",
    "allow_plain_http_credentials",
    "repositories", "repositories_file", "include", "exclude", "allow_tags", "deny_tags", "semver",
    "prereleases", "name_rule", "name_prefix", "name_template", "name_overrides",
    "registry_in_flight", "registry_rate", "registry_timeout", "ca_file", "client_cert", "client_key",
})


SOURCE_ONLY: Final = frozenset({
    "registry", "username", "password_env", "password_file", "repositories", "repositories_file",
    "name_overrides",
})


def read_repositories_file(path: Path, where: str) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    names = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            names.append(parse_repository(text, f"{where} {path}:{number}"))
    return tuple(names)


def source_of(name: str, v: Mapping[str, Any], password: Secret | None, where: str) -> SourceSettings:
    """A checked source from its resolved keys ``v``; ``where`` prefixes every error."""
    if (v.get("client_cert") is None) != (v.get("client_key") is None):
        raise ConfigError(f"{where}client_cert and client_key: give both, or neither")
    if v.get("ca_file") is not None or v.get("client_cert") is not None:
        tls_context(v.get("ca_file"), v.get("client_cert"), v.get("client_key"), f"{where}ca_file")
    repositories = list(v.get("repositories", ()))
    if v.get("repositories_file") is not None:
        repositories += read_repositories_file(v["repositories_file"], f"{where}repositories_file")
    return SourceSettings(
        name=name,
        registry=v["registry"],
        plain_http=v.get("plain_http", False),
        insecure=v.get("insecure", False),
        username=v.get("username"),
        password=password,
        docker_config=v.get("docker_config", True),
        allow_plain_http_credentials=v.get("allow_plain_http_credentials", False),
        repositories=tuple(dict.fromkeys(repositories)),
        repository_filter=RepositoryFilter.parse(v.get("include", ()), v.get("exclude", ()), where),
        tag_filter=TagFilter.parse(allow=v.get("allow_tags", ()), deny=v.get("deny_tags", ()),
                                   semver=v.get("semver"), prereleases=v.get("prereleases", True),
                                   where=where),
        names=NameRule.parse(rule=v.get("name_rule", "path"), prefix=v.get("name_prefix"),
                             template=v.get("name_template"),
                             overrides=dict(v.get("name_overrides", ())),
                             registry=v["registry"], source=name, where=where),
        registry_in_flight=v.get("registry_in_flight", REGISTRY_IN_FLIGHT_DEFAULT),
        registry_rate=v.get("registry_rate"),
        registry_timeout=v.get("registry_timeout", TIMEOUT_DEFAULT),
        ca_file=v.get("ca_file"),
        client_cert=v.get("client_cert"),
        client_key=v.get("client_key"),
    )


def check_listed_names(sources: tuple[SourceSettings, ...]) -> None:
    """Names of explicitly listed repositories are known now: refuse a collision or an over-long
    name before anything is contacted (catalog repositories are checked once listed)."""
    book = assign_names(
        (source.name, repository, source.names)
        for source in sources
        for repository in source.repositories
        if source.repository_filter.rejects(repository) is None
    )
    if book.problems:
        (source, _listed), problem = next(iter(book.problems.items()))
        prefix = f"source {source!r}: " if len(sources) > 1 else ""
        raise ConfigError(f"{prefix}package names: {problem}")


def sources_of_tables(
    tables: list[dict[str, Any]],
    values: Mapping[str, Any],
    explicit: set[str],
    environ: Mapping[str, str],
    config_file: Path | None,
    parse_key: Callable[[str, Any, str], Any],
) -> tuple[SourceSettings, ...]:
    """The [[source]] tables, each key from a flag or variable (``explicit``), the table, or
    the top-level value; ``parse_key(key, value, where)`` checks a table's value."""
    shard: Shard | None = values.get("shard")
    stray = sorted(key for key in SOURCE_ONLY if key in values)
    if stray:
        raise ConfigError(
            f"{stray[0]}: set per [[source]] when the config has [[source]] tables "
            "(a registry, its credentials and repository list belong to one source)"
        )
    sources: list[SourceSettings] = []
    names: set[str] = set()
    for i, table in enumerate(tables):
        label = f"{config_file}: source[{i}]"
        if "registry" not in table:
            raise ConfigError(f"{label}: registry: not set")
        registry = parse_registry(table["registry"], f"{label}.registry")
        name = parse_str(table.get("name", registry), f"{label}.name").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}", name):
            raise ConfigError(f"{label}.name: {name!r} must be 1 to 63 letters, digits, '.', '_', ':', '-'")
        if name in names:
            raise ConfigError(f"{label}.name: two sources are named {name!r}; give each a name")
        names.add(name)
        where = f"{config_file}: source {name!r}: "
        resolved: dict[str, Any] = {}
        for key in SOURCE_KEYS:
            if key in explicit:
                resolved[key] = values[key]
            elif key in table:
                resolved[key] = parse_key(key, table[key], f"{where}{key}")
            elif key in values:
                resolved[key] = values[key]
        resolved["registry"] = registry
        if shard is not None and "registry_rate" in table and "registry_rate" not in explicit:
            resolved["registry_rate"] /= shard.count  # the inherited value is divided already
        password = None
        if resolved.get("username"):
            password = registry_password(resolved, environ, where, fallback=False)
        sources.append(source_of(name, resolved, password, where))
    return tuple(sources)

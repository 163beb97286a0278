"""The ignore list: problems an operator has looked at and accepted.

``[[ignore]]`` tables in the config file name a repository (a glob, matched
on the whole path), optionally a tag glob or a digest, and a reason.  An item
that ends as a problem (invalid, rejected, failed) and matches a rule ends
``ignored`` instead: it never fails a run or alerts, and ``status`` shows it
with the reason.  The list never stops an import: a matching item that
imports fine is imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from crawler.errors import ConfigError

_DIGEST: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEYS: Final = frozenset({"repository", "tag", "digest", "reason"})


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoreRule:
    repository: str  # glob on the repository path
    reason: str
    tag: str | None = None  # glob on any of the version's tags
    digest: str | None = None

    def matches(self, repository: str, tags: Iterable[str], digest: str | None) -> bool:
        if not fnmatchcase(repository, self.repository):
            return False
        if self.digest is not None and digest != self.digest:
            return False
        if self.tag is not None:
            return any(fnmatchcase(tag, self.tag) for tag in tags)
        return True


def first_match(
    rules: Sequence[IgnoreRule], repository: str, tags: Iterable[str], digest: str | None
) -> IgnoreRule | None:
    tags = tuple(tags)
    return next((rule for rule in rules if rule.matches(repository, tags, digest)), None)


def parse_rules(value: Any, where: str) -> tuple[IgnoreRule, ...]:
    """``[[ignore]]`` from TOML: a list of tables, each checked key by key."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected [[ignore]] tables, got {type(value).__name__}")
    rules = []
    for index, table in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{here}: expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigError(f"{here}: unknown key {unknown[0]!r}")
        fields: dict[str, str] = {}
        for key in ("repository", "reason", "tag", "digest"):
            if key in table:
                text = table[key]
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(f"{here}.{key}: expected a non-empty string")
                fields[key] = text.strip()
        for key in ("repository", "reason"):
            if key not in fields:
                raise ConfigError(f"{here}: {key!r} is required")
        if "digest" in fields and not _DIGEST.match(fields["digest"]):
            raise ConfigError(f"{here}.digest: {fields['digest']!r} is not sha256:<64 hex digits>")
        rules.append(IgnoreRule(**fields))
    return tuple(rules)

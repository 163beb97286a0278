"""Which repositories and tags a source takes: include/exclude globs, allow/deny regexes, a SemVer range.

Pure and table-tested; the same objects decide in ``run`` and in ``plan``.

* Repositories: ``include`` and ``exclude`` are glob patterns on the whole
  repository path.  ``*`` and ``?`` stay inside one path segment, ``**``
  spans segments (``charts/**`` is everything under ``charts/``), ``[...]``
  is a character class.  With ``include`` set, a repository must match one of
  them; a repository matching any ``exclude`` is left out.  A left-out
  repository costs nothing beyond its catalog entry.
* Tags: ``allow`` and ``deny`` are regular expressions matched against the
  whole tag text (anchored: ``rc`` does not match ``1.0.0-rc.1``, write
  ``.*-rc.*``).  Then the tag must be SemVer (not a filter: that is the
  crawler's rule), ``prereleases = false`` drops versions with a prerelease,
  and ``semver`` is an npm-style range (``>=1.0.0 <3``, ``^1.2``, ``1.x || 3.x``)
  evaluated by the ``node-semver`` library.

A filtered tag is reported as skipped, naming the filter, at debug level.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from crawler.errors import ConfigError
from crawler.versions import SemVer, tag_to_semver

if TYPE_CHECKING:
    import nodesemver

# node-semver narrates every comparison at DEBUG through the standard library's logging, which
# the crawler's own --log-level debug would otherwise pass on: keep it to real warnings.
logging.getLogger("nodesemver").setLevel(logging.WARNING)


def _nodesemver() -> Any:
    """node-semver, imported when a range is configured: it compiles ~80 patterns on import."""
    import nodesemver

    return nodesemver

#: Patterns are configuration, not input, but keep them reasonable.
PATTERN_MAX: Final = 1000


def glob_to_regex(pattern: str) -> str:
    """The anchored regex equivalent of a repository path glob."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # "**/" : zero or more whole segments
                    out.append("(?:[^/]+/)*")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            end = pattern.find("]", j)
            if end == -1:  # no closing bracket: a literal "["
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                elif body.startswith("^"):
                    body = "\\" + body
                out.append("[" + body + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Glob:
    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, pattern: str, where: str) -> Glob:
        if not pattern or len(pattern) > PATTERN_MAX:
            raise ConfigError(f"{where}: a glob pattern must be 1 to {PATTERN_MAX} characters")
        try:
            regex = re.compile(glob_to_regex(pattern))
        except re.error as exc:
            raise ConfigError(f"{where}: {pattern!r} is not a valid glob: {exc}") from None
        return cls(pattern, regex)

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class TagPattern:
    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, pattern: str, where: str) -> TagPattern:
        if not pattern or len(pattern) > PATTERN_MAX:
            raise ConfigError(f"{where}: a tag pattern must be 1 to {PATTERN_MAX} characters")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: {pattern!r} is not a valid regular expression: {exc}") from None
        return cls(pattern, regex)

    def matches(self, tag: str) -> bool:
        return self.regex.fullmatch(tag) is not None


@dataclass(frozen=True, slots=True)
class SemVerRange:
    """An npm-style range, parsed once by node-semver."""

    text: str
    _range: nodesemver.Range = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, where: str) -> SemVerRange:
        text = text.strip()
        if not text or len(text) > PATTERN_MAX:
            raise ConfigError(f"{where}: a SemVer range must be 1 to {PATTERN_MAX} characters")
        try:
            parsed = _nodesemver().make_range(text, loose=False)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {text!r} is not a SemVer range: {exc}") from None
        return cls(text, parsed)

    def contains(self, semver: SemVer, *, prereleases: bool) -> bool:
        # include_prerelease: a prerelease inside the range counts as inside it (npm's default
        # would drop 2.0.0-rc.1 from ">=1 <3"); whether prereleases are wanted at all is the
        # separate ``prereleases`` setting, checked before this.
        try:
            return bool(self._range.test(semver.text, include_prerelease=prereleases))
        except ValueError:  # node-semver refuses what it cannot read: not in the range
            return False


def _patterns_text(kind: str, patterns: Sequence[Glob] | Sequence[TagPattern]) -> str:
    return kind + " " + ", ".join(repr(p.pattern) for p in patterns)


@dataclass(frozen=True, slots=True)
class RepositoryFilter:
    include: tuple[Glob, ...] = ()
    exclude: tuple[Glob, ...] = ()

    @classmethod
    def parse(cls, include: Iterable[str], exclude: Iterable[str], where: str) -> RepositoryFilter:
        return cls(
            tuple(Glob.parse(p, f"{where}include[{i}]") for i, p in enumerate(include)),
            tuple(Glob.parse(p, f"{where}exclude[{i}]") for i, p in enumerate(exclude)),
        )

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def rejects(self, repository: str) -> str | None:
        """Why ``repository`` is left out (naming the filter), or None when it is taken."""
        if self.include and not any(glob.matches(repository) for glob in self.include):
            return f"not matched by {_patterns_text('include', self.include)}"
        for glob in self.exclude:
            if glob.matches(repository):
                return f"matched by exclude {glob.pattern!r}"
        return None


@dataclass(frozen=True, slots=True)
class TagFilter:
    allow: tuple[TagPattern, ...] = ()
    deny: tuple[TagPattern, ...] = ()
    semver: SemVerRange | None = None
    prereleases: bool = True

    @classmethod
    def parse(
        cls,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        semver: str | None = None,
        prereleases: bool = True,
        where: str = "",
    ) -> TagFilter:
        return cls(
            tuple(TagPattern.parse(p, f"{where}allow_tags[{i}]") for i, p in enumerate(allow)),
            tuple(TagPattern.parse(p, f"{where}deny_tags[{i}]") for i, p in enumerate(deny)),
            SemVerRange.parse(semver, f"{where}semver") if semver is not None else None,
            prereleases,
        )

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny or self.semver is not None or not self.prereleases)

    def rejects_tag(self, tag: str) -> str | None:
        """The text filters, checked on the tag before it is read as SemVer."""
        if self.allow and not any(p.matches(tag) for p in self.allow):
            return f"filtered: not matched by {_patterns_text('allow_tags', self.allow)}"
        for pattern in self.deny:
            if pattern.matches(tag):
                return f"filtered: matched by deny_tags {pattern.pattern!r}"
        return None

    def rejects(self, tag: str) -> str | None:
        """Why ``tag`` is left out, naming the filter, or None.  A tag that is not SemVer passes
        the version filters: the crawler skips it for that reason, not as filtered."""
        reason = self.rejects_tag(tag)
        if reason is not None:
            return reason
        semver = tag_to_semver(tag)
        return None if semver is None else self.rejects_version(semver)

    def rejects_version(self, semver: SemVer) -> str | None:
        """The version filters, checked on the SemVer the tag stands for."""
        if semver.prerelease and not self.prereleases:
            return "filtered: prerelease (prereleases = false)"
        if self.semver is not None and not self.semver.contains(semver, prereleases=self.prereleases):
            return f"filtered: outside semver {self.semver.text!r}"
        return None


NO_REPOSITORY_FILTER: Final = RepositoryFilter()
NO_TAG_FILTER: Final = TagFilter()

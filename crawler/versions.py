"""OCI tag -> SemVer 2.0, and the order Akua versions are imported in.

Only tags that are strict SemVer (after two well-known spellings are undone)
become package versions; everything else (``latest``, branch names, cosign's
``sha256-<hex>.sig`` side tags) is skipped, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from crawler import contract

# The contract's pattern is written to mean the same in Python as in the
# API's ECMA-262 (no \d, no bare $); re.ASCII and fullmatch keep that true
# should someone write \d or $ into it again.
_SEMVER_RE: Final = re.compile(contract.SEMVER_PATTERN, re.ASCII)

# The longest tag that can still be valid: canonical text plus one "v".
# Checked before any regex work so a megabyte of junk costs nothing.
TAG_INPUT_MAX: Final = contract.SEMVER_MAX + 1

# Identifier keys compare numeric identifiers (rank 0) before alphanumeric
# ones (rank 1); the unused slot is constant so mixed kinds never compare
# an int with a str.
_IdentKey: TypeAlias = tuple[int, int, str]
# (0, identifiers) for a prerelease, (1, ()) for a release, so a release
# sorts after all of its prereleases.
_PreKey: TypeAlias = tuple[int, tuple[_IdentKey, ...]]
PrecedenceKey: TypeAlias = tuple[int, int, int, _PreKey]
SortKey: TypeAlias = tuple[int, int, int, _PreKey, str]


@dataclass(frozen=True, slots=True)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...]
    build: str
    text: str  # canonical SemVer spelling, what Akua stores

    def precedence_key(self) -> PrecedenceKey:
        """Key whose order is SemVer 2.0 precedence (build metadata ignored)."""
        if not self.prerelease:
            pre: _PreKey = (1, ())
        else:
            pre = (0, tuple(_ident_key(ident) for ident in self.prerelease))
        return (self.major, self.minor, self.patch, pre)

    def sort_key(self) -> SortKey:
        """Precedence, then the text, so equal-precedence versions still order stably."""
        return (*self.precedence_key(), self.text)


def _ident_key(ident: str) -> _IdentKey:
    # The regex already guarantees ASCII digits and no leading zeros here.
    if ident.isdigit():
        return (0, int(ident), "")
    return (1, 0, ident)


def _parse(text: str) -> SemVer | None:
    if len(text) > contract.SEMVER_MAX:
        return None
    match = _SEMVER_RE.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, prerelease, build = match.groups()
    return SemVer(
        major=int(major),
        minor=int(minor),
        patch=int(patch),
        prerelease=tuple(prerelease.split(".")) if prerelease else (),
        build=build or "",
        text=text,
    )


def _strip_v(tag: str) -> str:
    # Exactly one lowercase "v": "vv1.2.3" leaves "v1.2.3", which then fails.
    return tag[1:] if tag.startswith("v") else tag


def tag_to_semver(tag: str) -> SemVer | None:
    """The SemVer a tag stands for, or None when the tag is not a version.

    Accepted spellings: ``1.2.3``, ``v1.2.3``, and Helm's ``1.2.3_build.1``
    (OCI tags cannot hold ``+``, so Helm writes ``_`` instead).  Never raises.
    """
    if not isinstance(tag, str) or len(tag) > TAG_INPUT_MAX:
        return None
    text = _strip_v(tag)
    if "_" in text:
        # More than one "_" becomes more than one "+", which _parse refuses,
        # so "1.2.3_a_b" is rejected rather than half-restored.
        text = text.replace("_", "+")
    return _parse(text)


def tag_preference(tag: str) -> int:
    """Rank among tags naming the same SemVer; lower wins.

    0 canonical, 1 ``v`` prefix, 2 Helm ``_``, 3 both.  Only meaningful for
    tags that ``tag_to_semver`` accepts; ties (none for valid tags of one
    version) should be broken by the tag text.
    """
    prefixed = tag.startswith("v")
    helm = "_" in tag
    return int(prefixed) + 2 * int(helm)

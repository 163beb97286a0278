"""Repository and tag filters: table tests on plain data."""

from __future__ import annotations

import pytest

from crawler.errors import ConfigError
from crawler.filters import Glob, RepositoryFilter, SemVerRange, TagFilter, TagPattern


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("charts/*", "charts/app", True),
        ("charts/*", "charts/team/app", False),  # * stays in one segment
        ("charts/**", "charts/team/app", True),
        ("charts/**", "charts", False),
        ("**/app", "app", True),  # **/ is zero or more segments
        ("**/app", "a/b/app", True),
        ("**/app", "a/b/myapp", False),
        ("team-?/db", "team-a/db", True),
        ("team-?/db", "team-ab/db", False),
        ("team-[ab]/db", "team-b/db", True),
        ("team-[!ab]/db", "team-b/db", False),
        ("team-[!ab]/db", "team-c/db", True),
        ("app", "team/app", False),  # anchored on the whole path
        ("*app", "team/app", False),
        ("a.b", "aXb", False),  # dots are literal
        ("x[", "x[", True),  # an unclosed bracket is literal
    ],
)
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert Glob.parse(pattern, "include[0]").matches(path) is matches


@pytest.mark.parametrize(
    ("include", "exclude", "repository", "reason"),
    [
        ((), (), "team/app", None),
        (("team/*",), (), "team/app", None),
        (("team/*",), (), "other/app", "not matched by include 'team/*'"),
        (("team/*", "ops/*"), (), "ops/app", None),
        ((), ("**/tmp-*",), "team/tmp-x", "matched by exclude '**/tmp-*'"),
        (("team/*",), ("team/legacy",), "team/legacy", "matched by exclude 'team/legacy'"),
    ],
)
def test_repository_filter(include, exclude, repository, reason) -> None:
    assert RepositoryFilter.parse(include, exclude, "").rejects(repository) == reason


TAG_CASES = [
    # (filter kwargs, tag, reason or None)
    ({}, "1.0.0", None),
    ({"allow": [r"v?1\..*"]}, "1.2.0", None),
    ({"allow": [r"v?1\..*"]}, "2.0.0", r"filtered: not matched by allow_tags 'v?1\\..*'"),
    ({"allow": ["1"]}, "1.0.0", "filtered: not matched by allow_tags '1'"),  # anchored
    ({"deny": [".*-rc.*"]}, "1.0.0-rc.1", "filtered: matched by deny_tags '.*-rc.*'"),
    ({"deny": ["rc"]}, "1.0.0-rc.1", None),  # anchored: "rc" alone matches only "rc"
    ({"prereleases": False}, "1.0.0-beta.1", "filtered: prerelease (prereleases = false)"),
    ({"prereleases": False}, "1.0.0_build.7", None),  # build metadata is not a prerelease
    ({"semver": ">=1.0.0 <3"}, "2.9.9", None),
    ({"semver": ">=1.0.0 <3"}, "v3.0.0", "filtered: outside semver '>=1.0.0 <3'"),
    ({"semver": ">=1.0.0 <3"}, "0.9.0", "filtered: outside semver '>=1.0.0 <3'"),
    ({"semver": ">=1.0.0 <3"}, "2.0.0-rc.1", None),  # prereleases wanted: inside the range counts
    ({"semver": ">=1.0.0 <3"}, "3.0.0-rc.1", "filtered: outside semver '>=1.0.0 <3'"),
    ({"semver": ">=1.0.0 <3", "prereleases": False}, "2.0.0-rc.1",
     "filtered: prerelease (prereleases = false)"),
    ({"semver": "^1.2"}, "1.9.0", None),
    ({"semver": "^1.2"}, "1.1.0", "filtered: outside semver '^1.2'"),
    ({"semver": "~1.2.3"}, "1.2.9", None),
    ({"semver": "1.x || >=4"}, "4.1.0", None),
    ({"semver": "1.x || >=4"}, "3.0.0", "filtered: outside semver '1.x || >=4'"),
    ({"semver": "1.0.0 - 1.5.0"}, "1.5.0", None),
    ({"semver": ">=1"}, "1.0.0_build.1", None),  # build metadata ignored by the range
]


@pytest.mark.parametrize(("kwargs", "tag", "reason"), TAG_CASES)
def test_tag_filter(kwargs, tag, reason) -> None:
    assert TagFilter.parse(**kwargs).rejects(tag) == reason


def test_tags_that_are_not_semver_are_not_filtered() -> None:
    # "latest" is skipped by the crawler as "tag is not SemVer", never as filtered.
    assert TagFilter.parse(semver=">=1", prereleases=False).rejects("latest") is None
    assert TagFilter.parse(deny=["latest"]).rejects("latest") == "filtered: matched by deny_tags 'latest'"


def test_no_filter_is_inactive() -> None:
    assert not TagFilter.parse().active
    assert TagFilter.parse(prereleases=False).active
    assert not RepositoryFilter.parse((), (), "").active


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SemVerRange.parse(">=1.0.0 <3 garbage", "source 'a': semver"),
         "source 'a': semver: '>=1.0.0 <3 garbage' is not a SemVer range"),
        (lambda: SemVerRange.parse("", "semver"), "semver: a SemVer range must be"),
        (lambda: TagPattern.parse("(unclosed", "deny_tags[0]"),
         r"deny_tags\[0\]: '\(unclosed' is not a valid regular expression"),
        (lambda: Glob.parse("", "include[0]"), r"include\[0\]: a glob pattern must be"),
    ],
)
def test_bad_filters_name_the_key(build, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build()

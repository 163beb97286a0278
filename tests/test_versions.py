from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawler import contract
from crawler.contract import SEMVER_MAX
from crawler.versions import TAG_INPUT_MAX, SemVer, tag_preference, tag_to_semver

STRICT = re.compile(contract.SEMVER_PATTERN, re.ASCII)


@pytest.mark.parametrize(
    ("tag", "text", "fields"),
    [
        ("1.2.3", "1.2.3", (1, 2, 3, (), "")),
        ("0.0.0", "0.0.0", (0, 0, 0, (), "")),
        ("v1.2.3", "1.2.3", (1, 2, 3, (), "")),
        ("10.20.30", "10.20.30", (10, 20, 30, (), "")),
        ("1.0.0-rc.1", "1.0.0-rc.1", (1, 0, 0, ("rc", "1"), "")),
        ("v1.0.0-alpha.beta-2", "1.0.0-alpha.beta-2", (1, 0, 0, ("alpha", "beta-2"), "")),
        ("1.0.0-0A.is.legal", "1.0.0-0A.is.legal", (1, 0, 0, ("0A", "is", "legal"), "")),
        ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5", (1, 2, 3, ("rc", "1"), "build.5")),
        ("1.2.3_build.1", "1.2.3+build.1", (1, 2, 3, (), "build.1")),
        ("v1.2.3-rc.1_b-7.001", "1.2.3-rc.1+b-7.001", (1, 2, 3, ("rc", "1"), "b-7.001")),
        ("1.2.3+meta", "1.2.3+meta", (1, 2, 3, (), "meta")),
        (
            "99999999999999999999.0.0",
            "99999999999999999999.0.0",
            (99999999999999999999, 0, 0, (), ""),
        ),
    ],
)
def test_valid_tags(tag: str, text: str, fields: tuple[object, ...]) -> None:
    version = tag_to_semver(tag)
    assert version is not None
    assert version.text == text
    assert (
        version.major,
        version.minor,
        version.patch,
        version.prerelease,
        version.build,
    ) == fields


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "latest",
        "main",
        "stable",
        "v",
        "1.2",
        "1",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-01",  # numeric prerelease identifier with a leading zero
        "1.2.3-",
        "1.2.3+",
        "1.2.3-rc..1",
        "V1.2.3",
        "vv1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "1.2.3\n",
        "v1.2.3\n",
        "1.2.3_a_b",  # two "_" would be two "+"
        "1.2.3_",
        "1.2.3+a_b",
        "1.2.3-rc_1_",
        "latest_1",
        "\uff11.2.3",  # FULLWIDTH DIGIT ONE
        "1\uff11.2.3",
        "1.2.\u0663",  # ARABIC-INDIC DIGIT THREE
        "1.2.3-\u0661",
        "sha256-" + "a" * 64 + ".sig",
        "sha256-" + "0123456789abcdef" * 4 + ".att",
        "sha256-" + "f" * 64 + ".sbom",
        "sha256-" + "f" * 64,
        "1.2.3-" + "a" * 123,  # 129 characters of otherwise valid SemVer
        "v" * 200,
        "1.2.3" + "-" * 10_000,
    ],
)
def test_not_versions(tag: str) -> None:
    assert tag_to_semver(tag) is None


def test_length_limit_is_inclusive() -> None:
    longest = "1.2.3-" + "a" * (contract.SEMVER_MAX - 6)
    assert len(longest) == contract.SEMVER_MAX
    version = tag_to_semver(longest)
    assert version is not None and version.text == longest
    # the "v" is the one character allowed beyond the limit
    prefixed = tag_to_semver("v" + longest)
    assert prefixed is not None and prefixed.text == longest
    assert tag_to_semver(longest + "a") is None


def test_long_input_is_refused_before_the_regex_runs() -> None:
    # The prerelease part of the pattern backtracks quadratically: on this
    # input the bare regex takes tens of seconds; the length cap refuses it unread.
    hostile = "1.2.3-" + "a" * 20_000 + "!"
    assert len(hostile) > TAG_INPUT_MAX
    assert tag_to_semver(hostile) is None
    assert tag_to_semver("v" + hostile) is None
    # The longest input that is read at all is bounded by the contract's SemVer limit.
    assert TAG_INPUT_MAX == SEMVER_MAX + 1


@pytest.mark.parametrize("junk", [None, 123, b"1.2.3", ["1.2.3"]])
def test_non_string_is_not_a_version(junk: object) -> None:
    assert tag_to_semver(junk) is None  # type: ignore[arg-type]


SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0",
]


def _version(text: str) -> SemVer:
    version = tag_to_semver(text)
    assert version is not None
    return version


def test_spec_precedence_example() -> None:
    versions = [_version(t) for t in SPEC_ORDER]
    for scrambled in (list(reversed(versions)), versions[1::2] + versions[::2]):
        assert [v.text for v in sorted(scrambled, key=SemVer.precedence_key)] == SPEC_ORDER
        assert [v.text for v in sorted(scrambled, key=SemVer.sort_key)] == SPEC_ORDER


def test_build_metadata_ignored_for_precedence_but_ordered_by_sort_key() -> None:
    a, b, plain = _version("1.0.0+a"), _version("1.0.0+b"), _version("1.0.0")
    assert a.precedence_key() == b.precedence_key() == plain.precedence_key()
    assert sorted([b, a, plain], key=SemVer.sort_key) == [plain, a, b]


@pytest.mark.parametrize(
    ("tag", "rank"),
    [
        ("1.2.3", 0),
        ("1.2.3+b", 0),
        ("v1.2.3", 1),
        ("1.2.3_b", 2),
        ("v1.2.3_b", 3),
    ],
)
def test_tag_preference(tag: str, rank: int) -> None:
    assert tag_preference(tag) == rank


def test_preferred_tag_among_spellings_of_one_version() -> None:
    spellings = ["v1.2.3_b", "1.2.3_b", "v1.2.3+b", "1.2.3+b"]
    assert {_version(t).text for t in spellings} == {"1.2.3+b"}
    assert min(spellings, key=tag_preference) == "1.2.3+b"
    assert min(spellings[:3], key=tag_preference) == "v1.2.3+b"
    assert min(spellings[:2], key=tag_preference) == "1.2.3_b"


# --- properties -----------------------------------------------------------

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
# Small pools first, so generated lists often share a core, a prerelease
# or differ only in build metadata: the cases ordering gets wrong.
_numeric = st.one_of(st.integers(0, 3), st.integers(0, 10**12)).map(str)
_alnum = st.one_of(
    st.sampled_from(["a", "alpha", "beta", "rc", "-", "0a", "A"]),
    st.text(alphabet=_ALNUM, min_size=1, max_size=8).filter(lambda s: not s.isdigit()),
)
_pre_ident = st.one_of(_numeric, _alnum)
_build_ident = st.one_of(
    st.sampled_from(["a", "b", "001"]), st.text(alphabet=_ALNUM, min_size=1, max_size=8)
)


@st.composite
def semvers(draw: st.DrawFn) -> str:
    core = ".".join(draw(_numeric) for _ in range(3))
    pre = draw(st.lists(_pre_ident, max_size=4))
    build = draw(st.lists(_build_ident, max_size=3))
    text = core + ("-" + ".".join(pre) if pre else "") + ("+" + ".".join(build) if build else "")
    return text if len(text) <= contract.SEMVER_MAX else core


# Text near the grammar finds more edge cases than arbitrary Unicode alone.
_tagish = st.text(alphabet="0123456789.-+_vVaZ\n\uff11\u0663", max_size=40)


@given(st.one_of(st.text(), _tagish, semvers().map(lambda s: "v" + s.replace("+", "_"))))
def test_never_raises_and_only_strict_semver_comes_out(tag: str) -> None:
    version = tag_to_semver(tag)
    if version is not None:
        assert STRICT.fullmatch(version.text)
        assert len(version.text) <= contract.SEMVER_MAX
        assert tag_to_semver(version.text) == version


@given(semvers())
def test_round_trip(text: str) -> None:
    for spelling in (text, "v" + text, text.replace("+", "_"), "v" + text.replace("+", "_")):
        version = tag_to_semver(spelling)
        assert version is not None, spelling
        assert version.text == text


def _spec_compare(a: str, b: str) -> int:
    """SemVer 2.0 section 11, read straight from the spec, as an oracle."""

    def split(text: str) -> tuple[list[int], list[str] | None]:
        text = text.split("+", 1)[0]
        core, _, pre = text.partition("-")
        return [int(n) for n in core.split(".")], (pre.split(".") if pre else None)

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if pre_a is None or pre_b is None:
        return (pre_a is None) - (pre_b is None)
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


def _cmp(x: object, y: object) -> int:
    return (x > y) - (x < y)  # type: ignore[operator]


@given(semvers(), semvers())
def test_precedence_matches_the_spec(a: str, b: str) -> None:
    va, vb = _version(a), _version(b)
    assert _cmp(va.precedence_key(), vb.precedence_key()) == _sign(_spec_compare(a, b))


@given(st.lists(semvers(), min_size=1, max_size=8))
def test_sort_key_is_a_total_order_refining_precedence(texts: list[str]) -> None:
    versions = [_version(t) for t in texts]
    ordered = sorted(versions, key=SemVer.sort_key)
    for left, right in itertools.pairwise(ordered):
        assert left.precedence_key() <= right.precedence_key()
        # equal sort keys only for the very same version
        assert left.sort_key() < right.sort_key() or left == right
    # deterministic whatever the input order
    assert ordered == sorted(reversed(versions), key=SemVer.sort_key)

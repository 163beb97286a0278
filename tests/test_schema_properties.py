"""Property tests for the schema rules of issue 7: spellings, ECMA-262 regexes, references."""

from __future__ import annotations

import json
from typing import Any

import regress
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.schema import (
    MAX_REGEX_ALTERNATIVES,
    SCHEMA_ANNOTATION_DEFAULT,
    SUPPORTED_DIALECTS,
    SchemaInvalid,
    extract_input_schema,
)
from crawler.schema.dialects import DIALECTS, Dialect
from crawler.schema.problems import Problem
from crawler.schema.references import check_references
from tests.hypothesis_profiles import examples

KEY = SCHEMA_ANNOTATION_DEFAULT


def _verdict(schema: dict[str, Any]) -> tuple[bool, str]:
    try:
        extract_input_schema({KEY: json.dumps(schema)}, (KEY,))
    except SchemaInvalid as exc:
        return False, exc.reason
    return True, ""


_small_schemas = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["object", "string", "strin", 3]),
        "minLength": st.integers(-2, 3),
        "items": st.sampled_from([{}, [{}], True, 1]),
        "pattern": st.sampled_from(["^a$", "(?i)a", r"\p{L}"]),
        "exclusiveMinimum": st.sampled_from([True, 1]),
    },
)


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(sorted(SUPPORTED_DIALECTS)), _small_schemas)
def test_every_spelling_judges_like_the_canonical_uri(spelling: str, schema: dict[str, Any]) -> None:
    dialect = SUPPORTED_DIALECTS[spelling]
    spelled, _ = _verdict({"$schema": spelling, **schema})
    canonical, _ = _verdict({"$schema": dialect.uri, **schema})
    assert spelled == canonical


_regex_text = st.lists(
    st.sampled_from(["a", "|", "(", ")", "(?:", "(?<n>", "(?i)", "[", "]", "\\", "d", "p{L}", "k<n>",
                     "{", "}", "2", ",", "*", "+", "?", "^", "$", "-", "_", "c", "C", "u{1F600}", "."]),
    max_size=12,
).map("".join)


def _ecma(pattern: str) -> bool:
    if pattern.count("|") > MAX_REGEX_ALTERNATIVES:
        return False
    try:
        regress.Regex(pattern, flags="u")
    except regress.RegressError:
        return False
    return True


@settings(max_examples=examples(400), deadline=None)
@given(_regex_text, st.sampled_from(DIALECTS), st.booleans())
def test_pattern_verdict_is_regress_in_unicode_mode(pattern: str, dialect: Dialect, as_name: bool) -> None:
    schema = {"$schema": dialect.uri,
              **({"patternProperties": {pattern: {}}} if as_name else {"pattern": pattern})}
    valid, reason = _verdict(schema)
    assert valid == _ecma(pattern), reason
    if not valid:
        assert "is not an ECMA-262 regular expression" in reason


_names = st.text(st.sampled_from("ab/~% 0"), min_size=1, max_size=4)


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(" ", "%20").replace("~", "~0").replace("/", "~1")


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_names, min_size=1, max_size=4, unique=True), st.lists(_names, min_size=1, max_size=4),
       st.sampled_from(DIALECTS))
def test_pointer_fast_path_resolves_like_referencing(
    defined: list[str], referenced: list[str], dialect: Dialect
) -> None:
    container = "$defs" if dialect.name in ("2019-09", "2020-12") else "definitions"
    schema = {
        container: {name: {"type": "string"} for name in defined},
        "properties": {
            f"p{i}": {"$ref": f"#/{container}/{_escape(name)}"} for i, name in enumerate(referenced)
        },
    }

    def outcome(pointers_only: bool) -> str:
        try:
            return repr(check_references(schema, dialect, pointers_only=pointers_only))
        except Problem as exc:
            return exc.detail

    fast, general = outcome(True), outcome(False)
    assert fast == general
    assert ("points nowhere" in fast) == any(name not in defined for name in referenced)

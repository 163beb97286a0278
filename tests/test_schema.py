from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.errors import InvalidArtifact
from crawler.schema import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    SCHEMA_ANNOTATION_DEFAULT,
    SUPPORTED_DIALECTS,
    SchemaInvalid,
    extract_input_schema,
)
from tests.hypothesis_profiles import examples

KEY = SCHEMA_ANNOTATION_DEFAULT
KEYS = (KEY,)


def extract(value: object) -> dict[str, Any]:
    found = extract_input_schema({KEY: value}, KEYS)
    assert found is not None
    assert found.key == KEY
    assert found.note is None
    return found.schema


def reason_for(value: object) -> str:
    with pytest.raises(SchemaInvalid) as caught:
        extract_input_schema({KEY: value}, KEYS)
    reason = caught.value.reason
    assert reason.startswith(f"annotation {KEY!r}: ")
    assert len(reason) <= 320
    return reason


# --- which annotation ---------------------------------------------------------


def test_no_annotations_or_no_key_is_not_a_package() -> None:
    assert extract_input_schema(None, KEYS) is None
    assert extract_input_schema({}, KEYS) is None
    assert extract_input_schema({"org.opencontainers.image.title": "x"}, KEYS) is None
    assert extract_input_schema({KEY: "{}"}, ()) is None


def test_first_present_key_wins() -> None:
    annotations = {"second": '{"title": "second"}', "third": '{"title": "third"}'}
    assert extract_input_schema(annotations, ("first", "second", "third")) == (
        "second",
        {"title": "second"},
        None,
    )


def test_first_present_key_decides_even_when_unusable() -> None:
    annotations = {"first": "not json", "second": "{}"}
    with pytest.raises(SchemaInvalid, match="annotation 'first': input schema is not JSON"):
        extract_input_schema(annotations, ("first", "second"))


def test_keys_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError):
        extract_input_schema({KEY: "{}"}, KEY)


def test_schema_invalid_is_an_invalid_artifact() -> None:
    assert issubclass(SchemaInvalid, InvalidArtifact)


# --- accepted schemas ------------------------------------------------------------

DRAFT7 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["port"],
    "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8080},
        "image": {"$ref": "#/definitions/image"},
    },
    "definitions": {"image": {"type": "string", "pattern": "^[a-z0-9./-]+$"}},
}


def test_valid_draft07_schema_is_returned_unchanged() -> None:
    text = json.dumps(DRAFT7)
    assert extract(text) == DRAFT7


def test_valid_2019_09_schema() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$recursiveAnchor": True,
        "type": "object",
        "properties": {"tree": {"$recursiveRef": "#"}},
        "unevaluatedProperties": False,
        "$defs": {"n": {"type": "number"}},
    }
    assert extract(json.dumps(schema)) == schema


def test_no_dialect_means_2020_12() -> None:
    # prefixItems only exists in 2020-12; a bad one must be judged by 2020-12
    assert extract('{"prefixItems": [{"type": "string"}]}') == {
        "prefixItems": [{"type": "string"}]
    }
    reason = reason_for('{"prefixItems": {"type": "string"}}')
    assert "not a valid 2020-12 schema" in reason
    assert "$.prefixItems" in reason


@pytest.mark.parametrize("uri", sorted(SUPPORTED_DIALECTS))
def test_every_supported_dialect_with_and_without_hash(uri: str) -> None:
    assert extract(json.dumps({"$schema": uri, "type": "object"}))["$schema"] == uri


def test_supported_dialects_are_the_five_in_every_spelling() -> None:
    by_name: dict[str, set[str]] = {}
    for uri, dialect in SUPPORTED_DIALECTS.items():
        by_name.setdefault(dialect.name, set()).add(uri)

    def spellings(host_path: str) -> set[str]:
        return {f"{scheme}://{host_path}{hash_}" for scheme in ("http", "https") for hash_ in ("", "#")}

    assert by_name == {
        "draft-04": spellings("json-schema.org/draft-04/schema"),
        "draft-06": spellings("json-schema.org/draft-06/schema"),
        "draft-07": spellings("json-schema.org/draft-07/schema"),
        "2019-09": spellings("json-schema.org/draft/2019-09/schema"),
        # the old "latest" address is checked as 2020-12
        "2020-12": spellings("json-schema.org/draft/2020-12/schema") | spellings("json-schema.org/schema"),
    }


@pytest.mark.parametrize("uri", ["http://json-schema.org/schema#", "https://json-schema.org/schema"])
def test_latest_alias_is_checked_as_2020_12(uri: str) -> None:
    # "latest" is the newest metaschema, as jsonschema, check-jsonschema and jsonschema-rs read it
    assert extract(json.dumps({"$schema": uri, "prefixItems": [{"type": "string"}]}))
    reason = reason_for(json.dumps({"$schema": uri, "items": [{"type": "string"}]}))
    assert "is not a valid 2020-12 schema" in reason


def test_local_refs_and_ref_shaped_data_are_fine() -> None:
    schema = {
        "$defs": {"port": {"type": "integer"}},
        "properties": {
            "a": {"$ref": "#/$defs/port"},
            # a property called "$ref" is a name, not a reference
            "$ref": {"type": "string"},
        },
        "default": {"$ref": "https://example.com/not-a-reference"},
        "examples": [{"$ref": "https://example.com/x"}],
        "enum": [{"$dynamicRef": "https://example.com/x"}],
    }
    assert extract(json.dumps(schema)) == schema


# --- refused: the value -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), (42, "a number"), (True, "a boolean"), ({}, "an object"), ([], "an array")],
)
def test_value_must_be_a_string(value: object, kind: str) -> None:
    assert reason_for(value) == f"annotation {KEY!r}: value is {kind}, not a string"


def test_size_limit_in_utf8_bytes_is_inclusive() -> None:
    # "é" is two UTF-8 bytes: this is at the limit in bytes, half of it in characters
    padding = "é" * ((MAX_SCHEMA_BYTES - len('{"title": ""}')) // 2)
    at_limit = '{"title": "' + padding + '"}'
    at_limit += " " * (MAX_SCHEMA_BYTES - len(at_limit.encode()))
    assert len(at_limit.encode()) == MAX_SCHEMA_BYTES
    assert extract(at_limit)["title"] == padding

    reason = reason_for(at_limit + " ")
    assert f"{MAX_SCHEMA_BYTES + 1} bytes" in reason
    assert f"limit of {MAX_SCHEMA_BYTES} bytes" in reason


def test_ten_megabytes_is_refused_without_parsing() -> None:
    hostile = "[" * (10 * 1024 * 1024)
    reason = reason_for(hostile)
    # "at least": the size was judged from the text's length before any parsing or encoding.
    assert "at least 10485760 bytes" in reason
    assert f"limit of {MAX_SCHEMA_BYTES} bytes" in reason


def test_lone_surrogate_in_the_text() -> None:
    reason = reason_for('{"title": "a\ud800"}')
    assert "not valid Unicode" in reason
    assert "U+D800" in reason
    assert "character 12" in reason


def test_lone_surrogate_from_an_escape() -> None:
    reason = reason_for('{"properties": {"x": {"title": "\\udc00"}}}')
    assert "lone surrogate \\udc00" in reason
    assert "$.properties.x.title" in reason
    # a proper pair is an ordinary character
    assert extract('{"title": "\\ud83d\\ude00"}') == {"title": "\U0001f600"}


# --- refused: nesting -------------------------------------------------------------------


def _nested(levels: int) -> str:
    inner = "{}"
    for _ in range(levels - 1):
        inner = '{"not": ' + inner + "}"
    return inner


def test_depth_limit_is_inclusive() -> None:
    assert extract(_nested(MAX_SCHEMA_DEPTH))
    reason = reason_for(_nested(MAX_SCHEMA_DEPTH + 1))
    assert f"{MAX_SCHEMA_DEPTH + 1} levels deep" in reason
    assert f"limit of {MAX_SCHEMA_DEPTH}" in reason


def test_ten_thousand_deep_never_reaches_the_parser() -> None:
    # json.loads itself would raise RecursionError here, not SchemaInvalid
    reason = reason_for("[" * 10_000 + "]" * 10_000)
    assert "10000 levels deep" in reason
    reason = reason_for('{"a": ' * 10_000 + "1" + "}" * 10_000)
    assert "10000 levels deep" in reason


def test_brackets_inside_strings_do_not_nest() -> None:
    deep_text = "[{" * 100 + '\\"' + "]}" * 3
    assert extract(json.dumps({"title": deep_text})) == {"title": deep_text}


def test_unterminated_string_is_a_syntax_error_not_depth() -> None:
    reason = reason_for('{"title": "' + "[" * 1000)
    assert "is not JSON: Unterminated string" in reason


def test_many_escaped_quotes_stay_linear() -> None:
    # A string scanner that retries at each quote would be quadratic here (its cost is
    # measured by python -m bench.schema_cost, not asserted in a test).
    hostile = '{"a": "' + '\\"' * 300_000
    reason = reason_for(hostile)
    assert "Unterminated string" in reason


# --- refused: JSON ---------------------------------------------------------------------


def test_not_json_names_line_column_and_message() -> None:
    reason = reason_for('{\n  "type": "object",\n  "properties": }')
    assert reason == (
        f"annotation {KEY!r}: input schema is not JSON: Expecting value (line 3, column 17)"
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants(constant: str) -> None:
    reason = reason_for('{"maximum": ' + constant + "}")
    assert f"{constant} is not a JSON number" in reason


def test_overflowing_number_is_not_infinity() -> None:
    reason = reason_for('{"maximum": 1e400}')
    assert "number '1e400' is out of range" in reason


def test_huge_integer() -> None:
    reason = reason_for('{"maximum": ' + "9" * 5000 + "}")
    assert "integer with 5000 digits" in reason


@pytest.mark.parametrize(
    "text",
    ['{"type": "object", "type": "string"}', '{"properties": {"x": {"type": 1, "type": 2}}}'],
)
def test_duplicate_keys_are_named(text: str) -> None:
    assert "duplicate key 'type' in an object" in reason_for(text)


def test_hundred_thousand_keys_stay_fast() -> None:
    keys = {f"{i:05x}": 0 for i in range(100_000)}
    text = json.dumps(keys, separators=(",", ":"))
    assert len(text) <= MAX_SCHEMA_BYTES
    assert len(extract(text)) == 100_000
    reason = reason_for(text[:-1] + ',"00000":1}')
    assert "duplicate key '00000'" in reason


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "an array"), ('"s"', "a string"), ("true", "a boolean"), ("null", "null")],
)
def test_top_level_must_be_an_object(text: str, kind: str) -> None:
    assert reason_for(text).endswith(f"input schema must be a JSON object, not {kind}")


# --- refused: dialect and metaschema -----------------------------------------------------


def test_schema_keyword_must_be_a_string() -> None:
    assert reason_for('{"$schema": 7}').endswith("$schema must be a string, not a number")


@pytest.mark.parametrize(
    "uri",
    [
        "http://json-schema.org/draft-03/schema#",
        "http://json-schema.org/draft-05/schema#",
        "https://json-schema.org/draft/2021-01/schema",
        "json-schema.org/draft-07/schema#",
        "http://json-schema.org/draft-07/schema##",
        "http://json-schema.org/draft-07/schema#/definitions",
        "https://json-schema.org/draft/2020-12/schema/",
        "https://example.com/my-dialect",
        "",
    ],
)
def test_unsupported_dialect_is_named(uri: str) -> None:
    reason = reason_for(json.dumps({"$schema": uri}))
    assert f"$schema {uri!r} is not a supported dialect" in reason


def test_metaschema_failure_names_path_and_keyword() -> None:
    reason = reason_for(json.dumps({**DRAFT7, "properties": {"port": {"type": "int"}}}))
    assert "is not a valid draft-07 schema" in reason
    assert "at $.properties.port.type:" in reason
    assert "anyOf" in reason
    assert "'int'" in reason


def test_metaschema_failure_by_dialect() -> None:
    # exclusiveMaximum is a boolean in draft-04 and a number from draft-06 on
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "maximum": 5,
        "exclusiveMaximum": 5,
    }
    reason = reason_for(json.dumps(draft4))
    assert "not a valid draft-04 schema" in reason
    assert "at $.exclusiveMaximum: type:" in reason
    assert extract(json.dumps({**draft4, "$schema": "http://json-schema.org/draft-06/schema#"}))


def test_metaschema_message_keeps_its_end_when_the_instance_is_long() -> None:
    reason = reason_for(json.dumps({"minLength": "x" * 10_000}))
    assert "at $.minLength: type:" in reason
    assert "is not of type 'integer'" in reason
    assert "…" in reason


def test_bad_regular_expression() -> None:
    assert "$.pattern" in reason_for('{"pattern": "(unclosed"}')


def test_regular_expressions_that_broke_python_re() -> None:
    # Python's re raised RecursionError and OverflowError here; ECMA-262 via regress
    # refuses the first with a reason and takes the second (a valid ECMA quantifier).
    reason = reason_for(json.dumps({"pattern": "(" * 2000 + ")" * 2000}))
    assert "at $.pattern: format:" in reason
    assert "too deeply nested" in reason
    assert extract(json.dumps({"pattern": "a{99999999999}"}))


# --- refused: remote references ---------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "keyword", "where"),
    [
        ({"$ref": "https://example.com/s.json"}, "$ref", "$['$ref']"),
        (
            {"properties": {"port": {"$ref": "defs.json#/port"}}},
            "$ref",
            "$.properties.port['$ref']",
        ),
        ({"allOf": [{}, {"$ref": "other"}]}, "$ref", "$.allOf[1]['$ref']"),
        # a property named like a data keyword still holds a subschema
        (
            {"properties": {"default": {"$ref": "https://x/d"}}},
            "$ref",
            "$.properties.default['$ref']",
        ),
        (
            {"$defs": {"t": {"$dynamicRef": "https://x/y#meta"}}, "items": {"$ref": "#/$defs/t"}},
            "$dynamicRef",
            "$['$defs'].t['$dynamicRef']",
        ),
        (
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "items": {"$recursiveRef": "https://x/"},
            },
            "$recursiveRef",
            "$.items['$recursiveRef']",
        ),
    ],
)
def test_remote_references_are_not_fetched(
    schema: dict[str, Any], keyword: str, where: str
) -> None:
    reason = reason_for(json.dumps(schema))
    assert f"remote {keyword} " in reason
    assert where in reason
    assert "is not fetched" in reason


# --- properties ---------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.one_of(
            st.text(max_size=5),
            st.sampled_from(["$ref", "$schema", "type", "properties", "items", "enum", "not"]),
        ),
        children,
        max_size=4,
    ),
    max_leaves=12,
)
_schema_words = st.sampled_from(
    [
        *('{"', '"}', "{", "}", "[", "]", ",", ":", '"type"', '"$ref"', '"#"', '"\\ud800"'),
        *("NaN", '"properties"', '"$schema"', "1e999", " ", "\n", '"', "\\", "true", "-0"),
    ]
)


def _check_only_schema_invalid(value: object) -> None:
    try:
        found = extract_input_schema({KEY: value}, KEYS)
    except SchemaInvalid as exc:
        assert exc.reason.startswith(f"annotation {KEY!r}: ")
    else:
        assert found is not None
        assert isinstance(found[1], dict)


@settings(max_examples=examples(300))
@given(st.one_of(_json_values, _json_values.map(json.dumps)))
def test_json_values_give_a_dict_or_schema_invalid(value: object) -> None:
    _check_only_schema_invalid(value)


@settings(max_examples=examples(300))
@given(st.one_of(st.text(), st.lists(_schema_words, max_size=30).map("".join)))
def test_any_text_gives_a_dict_or_schema_invalid(text: str) -> None:
    _check_only_schema_invalid(text)


def test_too_many_subschemas_is_refused_before_the_metaschema_check() -> None:
    import json as _json

    from crawler.schema import MAX_SUBSCHEMAS, SchemaInvalid, extract_input_schema

    hostile = _json.dumps({"allOf": [{} for _ in range(MAX_SUBSCHEMAS + 1)]})
    with pytest.raises(SchemaInvalid, match=f"more than {MAX_SUBSCHEMAS} subschemas"):
        extract_input_schema({"k": hostile}, ["k"])
    fine = _json.dumps({"allOf": [{} for _ in range(100)]})
    assert extract_input_schema({"k": fine}, ["k"]) is not None


def test_remembered_verdicts_name_the_key_each_time() -> None:
    import json as _json

    from crawler.schema import SchemaInvalid, extract_input_schema

    bad = _json.dumps({"type": "object", "properties": {"port": {"type": "strin"}}})
    for key in ("first.key", "second.key", "first.key"):
        with pytest.raises(SchemaInvalid, match=rf"annotation '{key}'.*properties\.port\.type"):
            extract_input_schema({key: bad}, [key])
    good = _json.dumps({"type": "object"})
    first = extract_input_schema({"k": good}, ["k"])
    second = extract_input_schema({"k": good}, ["k"])
    assert first == second == ("k", {"type": "object"}, None)
    assert first is not None and second is not None and first.schema is not second.schema


# --- regular expressions: limits of the ECMA-262 engine ------------------------------------


def test_huge_alternation_is_refused_before_the_regex_engine() -> None:
    # regress overflows the thread's stack at about 50,000 alternatives (the process dies);
    # the limit refuses them first, with a reason.
    from crawler.schema import MAX_REGEX_ALTERNATIVES

    reason = reason_for(json.dumps({"pattern": "a|" * 100_000 + "a"}))
    assert "at $.pattern: format:" in reason
    assert f"over the limit of {MAX_REGEX_ALTERNATIVES} alternatives" in reason
    reason = reason_for(json.dumps({"patternProperties": {"|" * 60_000: {}}}))
    assert "$.patternProperties" in reason
    at_limit = "|".join(["a"] * (MAX_REGEX_ALTERNATIVES + 1))
    assert extract(json.dumps({"pattern": at_limit}))["pattern"] == at_limit


# --- remote references: the operator's choice ---------------------------------------------


def test_keep_returns_the_schema_unchanged_with_a_note_and_shares_the_verdict() -> None:
    schema = {"properties": {"pod": {"$ref": "https://k8s.example/pod.json"}},
              "allOf": [{"$ref": "other.json"}]}
    text = json.dumps(schema)
    for _ in range(2):  # the second round comes from the verdict cache
        pod = r"remote \$ref 'https://k8s.example/pod.json'.*\(and 1 more\)"
        with pytest.raises(SchemaInvalid, match=pod):
            extract_input_schema({KEY: text}, KEYS)
        found = extract_input_schema({KEY: text}, KEYS, remote_refs="keep")
        assert found is not None
        assert found.schema == schema
        assert found.note is not None
        assert "remote references unresolved (remote_refs = keep, Akua decides)" in found.note
        assert "https://k8s.example/pod.json" in found.note
        assert "and 1 more" in found.note


def test_remote_refs_must_be_a_known_choice() -> None:
    with pytest.raises(ValueError, match="remote_refs"):
        extract_input_schema({KEY: "{}"}, KEYS, remote_refs="fetch")  # type: ignore[arg-type]

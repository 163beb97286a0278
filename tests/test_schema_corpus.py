"""The schema corpus: our verdicts, and the same corpus through independent validators.

tests/schema_corpus/*.json hold small schemas written for this project, one per rule
of issue 7 in both directions. Each case says:

- ``valid``: the crawler's verdict with ``remote_refs = "refuse"`` (and ``reason``, a part
  of the reason it must give when invalid);
- ``keep``: for remote references, the verdict with ``remote_refs = "keep"``;
- ``check-jsonschema`` / ``jsonschema-rs``: present only where that validator's verdict
  differs from ours, saying why (a documented limit or a flaw of that validator);
  ``not run: ...`` where it cannot take the case at all.

The second-validator tests fail when a validator's verdict differs where no reason is
listed, or agrees where one is: the list stays exactly true.  The fast-path tests prove
what crawler.schema.metaschema relies on: jsonschema-rs never accepts what jsonschema
refuses, on the corpus and on generated schemas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.schema import SCHEMA_ANNOTATION_DEFAULT, SchemaInvalid, extract_input_schema
from crawler.schema.dialects import DIALECTS, DRAFT4, Dialect, dialect_of
from crawler.schema.metaschema import FAST_DIALECTS, fast_says_valid, python_error
from crawler.schema.problems import Problem
from tests.hypothesis_profiles import examples

CORPUS = Path(__file__).parent / "schema_corpus"
KEY = SCHEMA_ANNOTATION_DEFAULT
SECOND_VALIDATORS = ("check-jsonschema", "jsonschema-rs")

try:
    import jsonschema_rs
except ImportError as exc:  # pragma: no cover - the install hint is the point
    raise ImportError("the schema corpus needs jsonschema-rs: pip install -e '.[test]'") from exc


def _load() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        for case in json.loads(path.read_text())["cases"]:
            cases.append({**case, "id": f"{path.stem}: {case['name']}"})
    return cases


CASES = _load()


def _ours(schema: Any, remote_refs: str = "refuse") -> tuple[bool, str]:
    try:
        found = extract_input_schema({KEY: json.dumps(schema)}, (KEY,), remote_refs=remote_refs)  # type: ignore[arg-type]
    except SchemaInvalid as exc:
        return False, exc.reason
    assert found is not None
    return True, found.note or ""


def test_corpus_covers_every_feature() -> None:
    files = {case["id"].split(":")[0] for case in CASES}
    assert files == {"dialects", "regexes", "references"}
    assert len({case["id"] for case in CASES}) == len(CASES)
    # both directions for every file
    for name in files:
        verdicts = {case["valid"] for case in CASES if case["id"].startswith(name)}
        assert verdicts == {True, False}, name


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_corpus_verdict(case: dict[str, Any]) -> None:
    valid, reason = _ours(case["schema"])
    assert valid == case["valid"], reason
    if not valid:
        assert case["reason"] in reason
    if "keep" in case:
        kept, note = _ours(case["schema"], "keep")
        assert kept == case["keep"], note
        if kept:
            assert "remote references unresolved" in note


def _rs_verdict(schema: Any) -> bool:
    try:
        jsonschema_rs.validator_for(schema, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
        return False
    return True


def _check_jsonschema_verdicts(tmp_path: Path, cases: list[dict[str, Any]]) -> dict[str, bool]:
    paths = {}
    for i, case in enumerate(cases):
        path = tmp_path / f"case{i:03d}.json"
        path.write_text(json.dumps(case["schema"]))
        paths[case["id"]] = path
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--check-metaschema", "-o", "json",
         *map(str, paths.values())],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.stdout, f"check-jsonschema gave no verdict (pip install -e '.[test]'): {done.stderr[-500:]}"
    report = json.loads(done.stdout)
    failed = {entry["filename"] for entry in report["errors"] + report["parse_errors"]}
    return {case_id: str(path) not in failed for case_id, path in paths.items()}


def _agreement(validator: str, verdicts: dict[str, bool]) -> tuple[int, list[str]]:
    agree, unexplained = 0, []
    for case in CASES:
        if case["id"] not in verdicts:
            continue
        same = verdicts[case["id"]] == case["valid"]
        agree += same
        if same == (validator in case):
            unexplained.append(
                f"{case['id']}: {validator} says {'valid' if verdicts[case['id']] else 'invalid'}"
                + (f", listed as differing: {case[validator]}" if validator in case else "")
            )
    return agree, unexplained


def test_check_jsonschema_differs_only_where_documented(tmp_path: Path) -> None:
    runnable = [c for c in CASES if not c.get("check-jsonschema", "").startswith("not run")]
    verdicts = _check_jsonschema_verdicts(tmp_path, runnable)
    agree, unexplained = _agreement("check-jsonschema", verdicts)
    assert not unexplained, "\n".join(unexplained)
    assert agree == len(runnable) - sum("check-jsonschema" in c for c in runnable)


def test_jsonschema_rs_differs_only_where_documented() -> None:
    verdicts = {case["id"]: _rs_verdict(case["schema"]) for case in CASES}
    agree, unexplained = _agreement("jsonschema-rs", verdicts)
    assert not unexplained, "\n".join(unexplained)
    assert agree == len(CASES) - sum("jsonschema-rs" in c for c in CASES)


# --- the fast path: jsonschema-rs with our formats never accepts what jsonschema refuses ---


def _dialect_or_none(schema: Any) -> Dialect | None:
    try:
        return dialect_of(schema) if isinstance(schema, dict) else None
    except Problem:
        return None


# Cases refused before the metaschema check (an unknown $schema) never reach it.
METASCHEMA_CASES = [case for case in CASES if _dialect_or_none(case["schema"]) is not None]


@pytest.mark.parametrize("case", METASCHEMA_CASES, ids=[case["id"] for case in METASCHEMA_CASES])
def test_fast_path_agrees_with_jsonschema_on_the_corpus(case: dict[str, Any]) -> None:
    for each in DIALECTS:  # every dialect, not only the schema's own: more evidence
        assert fast_says_valid(case["schema"], each) == (python_error(case["schema"], each) is None), each


_KEYWORDS = st.sampled_from([
    "type", "enum", "const", "minimum", "exclusiveMaximum", "minLength", "maxItems", "pattern",
    "required", "properties", "patternProperties", "items", "prefixItems", "additionalProperties",
    "allOf", "anyOf", "not", "if", "then", "$defs", "definitions", "dependencies", "dependentRequired",
    "format", "$id", "$anchor", "$ref", "uniqueItems", "contains", "propertyNames", "default",
    "unevaluatedProperties", "multipleOf", "title",
])
_SCALARS = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0, -1.5, 2**64, 1e300])
    | st.sampled_from(["string", "integer", "object", "array", "nul", "#", "#/$defs/a", "a", "",
                       "^a$", "(?i)x", r"\p{L}", "(?<n>a)", "[", "#foo", "foo", "urn:x:y"])
)


def _schemas(depth: int = 3) -> st.SearchStrategy[Any]:
    leaf = _SCALARS | st.lists(_SCALARS, max_size=3)
    if depth == 0:
        return leaf
    child = _schemas(depth - 1)
    return st.dictionaries(_KEYWORDS, leaf | child | st.lists(child, max_size=3)
                           | st.dictionaries(st.sampled_from(["a", "b", "(?i)", "^x"]), child, max_size=2),
                           max_size=4) | st.booleans()


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYWORDS, _schemas(2), max_size=5), st.sampled_from(sorted(FAST_DIALECTS, key=str)))
def test_fast_path_never_accepts_what_jsonschema_refuses(schema: dict[str, Any], dialect: Dialect) -> None:
    python_valid = python_error(schema, dialect) is None
    assert fast_says_valid(schema, dialect) == python_valid


def test_draft04_is_not_on_the_fast_path() -> None:
    # The known disagreement (enum uniqueness) keeps draft-04 on jsonschema alone.
    assert DRAFT4 not in FAST_DIALECTS
    assert set(FAST_DIALECTS) == set(DIALECTS) - {DRAFT4}

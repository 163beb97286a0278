"""The crawler's own copy of Akua's request schemas matches Akua's OpenAPI document.

``crawler.contract`` restates the request bodies so the crawler can check
what it sends without shipping the document; ``contracts/akua-openapi-packages.json``
is the document itself.  These tests fail when either drifts from the other.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from crawler import contract
from testkit import openapi

#: Keywords that only annotate; they change nothing a validator accepts.
ANNOTATIONS = frozenset({"description", "example", "examples", "title", "default", "deprecated"})


def ecma_to_python(pattern: str) -> str:
    """How ``crawler.contract`` spells an ECMA-262 pattern for Python's ``re``.

    ``\\d`` becomes ``[0-9]`` (Python's matches any Unicode digit), ``\\/`` is
    ``/``, and a final ``$`` becomes ``$(?!\\n)`` (Python's also matches before
    a trailing newline).
    """
    text = pattern.replace(r"\d", "[0-9]").replace(r"\/", "/")
    return text[:-1] + r"$(?!\n)" if text.endswith("$") and not text.endswith(r"\$") else text


def normalise(node: Any, defs: dict[str, Any], *, ecma: bool) -> Any:
    """A schema reduced to what it accepts: no annotations, refs inlined, vacuous parts gone."""
    if isinstance(node, list):
        return [normalise(item, defs, ecma=ecma) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        assert ref.startswith("#/$defs/"), ref
        return normalise(defs[ref.removeprefix("#/$defs/")], defs, ecma=ecma)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ANNOTATIONS or key in ("$schema", "$defs"):
            continue
        if key == "additionalProperties" and value in ({}, True):
            continue  # the default
        if key == "pattern" and ecma:
            value = ecma_to_python(value)
        if key == "properties":
            out[key] = {name: normalise(sub, defs, ecma=ecma) for name, sub in value.items()}
        elif key in ("required", "enum", "type"):
            out[key] = sorted(value) if isinstance(value, list) else value
        else:
            out[key] = normalise(value, defs, ecma=ecma)
    all_of = out.pop("allOf", None)
    if all_of is not None:
        for part in all_of:  # annotation-only parts are {} by now
            if part:
                for key, value in part.items():
                    assert key not in out or out[key] == value, f"allOf conflict on {key}"
                    out[key] = value
    return out


def documented(operation_id: str) -> Any:
    return normalise(openapi.request_schema(operation_id), {}, ecma=True)


def ours(schema: dict[str, Any]) -> Any:
    return normalise(schema, schema.get("$defs", {}), ecma=False)


@pytest.mark.parametrize(
    ("operation_id", "schema"),
    [
        ("packages.importPublished", contract.IMPORT_BODY_SCHEMA),
        ("packages.createVersion", contract.VERSION_BODY_SCHEMA),
    ],
)
def test_request_schema_matches_the_openapi_document(operation_id: str, schema: dict[str, Any]) -> None:
    assert ours(schema) == documented(operation_id)


def test_paths_and_methods_the_client_uses_are_documented() -> None:
    assert openapi.operation("packages.importPublished")[:2] == ("/packages:import", "post")
    assert openapi.operation("packages.createVersion")[:2] == ("/packages/{id}/versions", "post")
    assert openapi.operation("packages.list")[:2] == ("/packages", "get")
    assert openapi.operation("packages.listVersions")[:2] == ("/packages/{id}/versions", "get")
    assert openapi.document()["servers"][0]["url"] == contract.API_URL_DEFAULT


def test_limits_match_the_declared_parameters() -> None:
    assert openapi.parameter("packages.list", "limit")["maximum"] == contract.PAGE_LIMIT_MAX
    assert openapi.parameter("packages.listVersions", "limit")["maximum"] == contract.PAGE_LIMIT_MAX
    for op in ("packages.importPublished", "packages.createVersion", "packages.list"):
        assert openapi.parameter(op, "akua-context")["maxLength"] == contract.WORKSPACE_MAX
    key = openapi.parameter("packages.importPublished", "idempotency-key")
    assert key["maxLength"] == contract.IDEMPOTENCY_KEY_MAX
    body = openapi.request_schema("packages.importPublished")["properties"]
    assert body["name"]["maxLength"] == contract.NAME_MAX
    assert body["oci_ref"]["maxLength"] == contract.OCI_REF_MAX
    assert body["description"]["maxLength"] == contract.DESCRIPTION_MAX
    version = body["version"]["properties"]
    assert version["semver"]["maxLength"] == contract.SEMVER_MAX
    assert version["ref"]["maxLength"] == contract.REF_MAX


def test_a_drift_is_caught() -> None:
    """The comparison is not vacuous: one changed limit, one changed pattern, one new field."""
    drifted = json.loads(json.dumps(contract.VERSION_BODY_SCHEMA))
    drifted["properties"]["ref"]["maxLength"] = contract.REF_MAX + 1
    assert ours(drifted) != documented("packages.createVersion")
    drifted = json.loads(json.dumps(contract.VERSION_BODY_SCHEMA))
    drifted["properties"]["semver"]["pattern"] = contract.SEMVER_PATTERN.replace("[0-9]", r"\d", 1)
    assert ours(drifted) != documented("packages.createVersion")
    drifted = json.loads(json.dumps(contract.IMPORT_BODY_SCHEMA))
    drifted["properties"]["labels"] = {"type": "object"}
    assert ours(drifted) != documented("packages.importPublished")


def test_the_python_semver_pattern_accepts_what_the_ecma_one_does() -> None:
    """Spot check of the translation on the strings where Python's re and ECMA-262 differ."""
    python = re.compile(contract.SEMVER_PATTERN)
    for text, accepted in [("1.2.3", True), ("1.2.3-rc.1+b.5", True), ("1.2.3\n", False),
                           ("1\u0661.0.0", False), ("v1.2.3", False), ("01.2.3", False)]:
        assert bool(python.search(text)) is accepted, text

"""Parity with ``akuapkg export``: KCL packages written here, one per mapping rule.

Each expected schema is written from the exporter's documented mapping (see
``crawler/kcl_export.py``) and compared whole, so any extra or missing key
fails.  The derivation runs for real: kcl-lib in its child process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crawler.kcl_export import DRAFT_2020_12, kcl_default_to_json, serde_json_value
from crawler.kcl_pool import INSTALL_HINT, DerivationFailed, KclUnavailable, KclWorkers
from crawler.schema import check_schema_text


@pytest.fixture(scope="module")
def kcl() -> Iterator[KclWorkers]:
    workers = KclWorkers()
    try:
        workers.derive("schema Input:\n    a: int\n")
    except KclUnavailable as exc:
        pytest.fail(f"these tests need kcl-lib: {INSTALL_HINT} (or '.[test]'): {exc}", pytrace=False)
    yield workers
    workers.close()


def root(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "$schema": DRAFT_2020_12,
        "title": "Input",
        "type": "object",
        "properties": properties,
        **extra,
    }
    if required:
        schema["required"] = required
    return schema


def derived(kcl: KclWorkers, source: str) -> dict[str, Any]:
    schema = kcl.derive(source)
    # Every derived schema must pass its metaschema like an annotation would.
    check_schema_text(json.dumps(schema), "package.k")
    return schema


def test_primitive_types(kcl: KclWorkers) -> None:
    source = "schema Input:\n    name: str\n    replicas: int\n    weight: float\n    enabled: bool\n"
    assert derived(kcl, source) == root(
        {
            "name": {"type": "string"},
            "replicas": {"type": "integer"},
            "weight": {"type": "number"},
            "enabled": {"type": "boolean"},
        },
        ["name", "replicas", "weight", "enabled"],
    )


def test_required_optional_and_defaults(kcl: KclWorkers) -> None:
    # KCL lists every non-optional attribute as required, default or not.
    source = (
        "schema Input:\n"
        "    name: str\n"
        "    replicas: int = 3\n"
        "    label?: str\n"
        "    ratio?: float = 0.25\n"
        "    enabled: bool = True\n"
        "    disabled: bool = False\n"
        '    greeting: str = "hi"\n'
        "    tags: [str] = [\"a\", \"b\"]\n"
        '    labels: {str:str} = {"k": "v"}\n'
        '    config: {str:str} = {k = "v"}\n'
        "    nothing?: str = None\n"
        "    negative: int = -3\n"
    )
    assert derived(kcl, source) == root(
        {
            "name": {"type": "string"},
            "replicas": {"type": "integer", "default": 3},
            "label": {"type": "string"},
            "ratio": {"type": "number", "default": 0.25},
            "enabled": {"type": "boolean", "default": True},
            "disabled": {"type": "boolean", "default": False},
            "greeting": {"type": "string", "default": "hi"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": {"k": "v"},
            },
            # Not JSON: the exporter keeps KCL's source text.
            "config": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": '{k = "v"}',
            },
            "nothing": {"type": "string", "default": "None"},
            "negative": {"type": "integer", "default": -3},
        },
        ["name", "replicas", "enabled", "disabled", "greeting", "tags", "labels", "config", "negative"],
    )


def test_docstrings_at_schema_and_attribute_level(kcl: KclWorkers) -> None:
    source = (
        "schema Input:\n"
        '    """\n'
        "    Public inputs.\n"
        "      Second line, indented.\n"
        '    """\n'
        "\n"
        "    name: str\n"
        '    """Application name."""\n'
        "\n"
        "    replicas: int = 2\n"
        "    'Single quotes count too.'\n"
        "\n"
        "    plain: str\n"
    )
    assert derived(kcl, source) == root(
        {
            "name": {"type": "string", "description": "Application name."},
            "replicas": {"type": "integer", "default": 2, "description": "Single quotes count too."},
            "plain": {"type": "string"},
        },
        ["name", "replicas", "plain"],
        description="Public inputs.\n      Second line, indented.",
    )


def test_lists_and_dicts_nest(kcl: KclWorkers) -> None:
    source = (
        "schema Input:\n"
        "    tags: [str]\n"
        "    matrix: [[int]]\n"
        "    labels: {str:str}\n"
        "    groups: {str:[float]}\n"
        "    loose: [any]\n"
    )
    assert derived(kcl, source) == root(
        {
            "tags": {"type": "array", "items": {"type": "string"}},
            "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "groups": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "number"}},
            },
            "loose": {"type": "array", "items": {}},
        },
        ["tags", "matrix", "labels", "groups", "loose"],
    )


def test_unions_become_one_of(kcl: KclWorkers) -> None:
    source = (
        "schema Input:\n"
        "    value: str | int\n"
        '    mode: "fast" | "safe" = "safe"\n'
        "    maybe?: int | None\n"
    )
    assert derived(kcl, source) == root(
        {
            "value": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "mode": {
                "oneOf": [
                    {"type": "string", "const": "fast"},
                    {"type": "string", "const": "safe"},
                ],
                "default": "safe",
            },
            # KCL reads None in a type as any.
            "maybe": {"oneOf": [{"type": "integer"}, {}]},
        },
        ["value", "mode"],
    )


def test_literal_types_become_const(kcl: KclWorkers) -> None:
    # KCL gives a literal-typed attribute its literal as the default, too.
    source = (
        "schema Input:\n"
        '    api: "apps/v1"\n'
        "    answer: 42\n"
        "    ratio: 1.5\n"
        "    whole: 2.0\n"
        "    flag: True\n"
        "    off: False\n"
        '    paren: "a(b)c"\n'
    )
    assert derived(kcl, source) == root(
        {
            "api": {"type": "string", "const": "apps/v1", "default": "apps/v1"},
            "answer": {"type": "integer", "const": 42, "default": 42},
            "ratio": {"type": "number", "const": 1.5, "default": 1.5},
            "whole": {"type": "number", "const": 2.0, "default": 2},
            "flag": {"type": "boolean", "const": True, "default": True},
            "off": {"type": "boolean", "const": False, "default": False},
            "paren": {"type": "string", "const": "a(b)c", "default": "a(b)c"},
        },
        ["api", "answer", "ratio", "whole", "flag", "off", "paren"],
    )


def test_any_and_none_are_unconstrained(kcl: KclWorkers) -> None:
    source = "schema Input:\n    blob: any\n    empty: None\n    withdefault: any = 1\n"
    assert derived(kcl, source) == root(
        {"blob": {}, "empty": {}, "withdefault": {"default": 1}},
        ["blob", "empty", "withdefault"],
    )


def test_nested_schemas(kcl: KclWorkers) -> None:
    source = (
        "schema Address:\n"
        '    """A postal address."""\n'
        "    city: str\n"
        '    """City name."""\n'
        "    zip?: int\n"
        "\n"
        "schema Contact:\n"
        "    email: str\n"
        "\n"
        "schema Input:\n"
        "    home: Address\n"
        '    """Where the owner lives (the schema\'s own docstring wins)."""\n'
        "    contact?: Contact\n"
        '    """How to reach the owner."""\n'
        "    offices: [Address]\n"
        "    byname: {str:Contact}\n"
    )
    address = {
        "type": "object",
        "description": "A postal address.",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "zip": {"type": "integer"},
        },
        "required": ["city"],
    }
    contact = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    assert derived(kcl, source) == root(
        {
            "home": address,
            "contact": {**contact, "description": "How to reach the owner."},
            "offices": {"type": "array", "items": address},
            "byname": {"type": "object", "additionalProperties": contact},
        },
        ["home", "offices", "byname"],
    )


def test_ui_decorator_keyword_literals(kcl: KclWorkers) -> None:
    source = (
        "schema Input:\n"
        '    @ui(order=10, group="Identity", step=0.5, advanced=True, hidden=False, unset=None, '
        'choices=["a", 1, [2.5, True]], size=1Mi)\n'
        "    name: str\n"
        "\n"
        "    # Only literals pass: negative numbers, names and dicts are dropped.\n"
        "    @ui(order=20, min=-1, ref=name, style={a = 1}, undefined=Undefined)\n"
        "    replicas: int = 2\n"
        "\n"
        "    # Other decorators are ignored; the first @ui counts.\n"
        "    @deprecated(version=\"1.0\")\n"
        '    @ui(order=30)\n'
        '    @ui(order=99)\n'
        "    old?: str\n"
        "\n"
        "    @ui(min=-1)\n"
        "    nothing_literal?: int\n"
        "\n"
        "    @ui.widget(kind=\"slider\")\n"
        "    dotted?: int\n"
    )
    assert derived(kcl, source) == root(
        {
            "name": {
                "type": "string",
                "x-ui": {
                    "order": 10,
                    "group": "Identity",
                    "step": 0.5,
                    "advanced": True,
                    "hidden": False,
                    "unset": None,
                    "choices": ["a", 1, [2.5, True]],
                    "size": 1,  # the unit suffix is ignored, as the exporter does
                },
            },
            "replicas": {"type": "integer", "default": 2, "x-ui": {"order": 20}},
            "old": {"type": "string", "x-ui": {"order": 30}},
            "nothing_literal": {"type": "integer"},
            # The exporter matches the decorator's first name, so @ui.widget counts.
            "dotted": {"type": "integer", "x-ui": {"kind": "slider"}},
        },
        ["name", "replicas"],
    )


def test_other_types_are_named(kcl: KclWorkers) -> None:
    source = (
        "import units\n\n"
        "schema Input:\n    size: units.NumberMultiplier = 1Mi\n    hook?: (int) -> int\n"
    )
    assert derived(kcl, source) == root(
        {
            "size": {"type": "number", "default": "1Mi"},
            "hook": {"x-akua-kcl-type": "function"},
        },
        ["size"],
    )


def test_unresolved_imports_do_not_matter(kcl: KclWorkers) -> None:
    # The exporter hands KCL the package file alone: charts.* and the like stay unresolved.
    source = (
        "import akua.ctx\nimport charts.web as web\n\n"
        "schema Input:\n    name: str\n\n"
        "input: Input = ctx.input()\nresources = web.template(input.name)\n"
    )
    assert derived(kcl, source) == root({"name": {"type": "string"}}, ["name"])


# The package.k of akuapkg's examples/01-hello-webapp, restated: the same imports,
# the same Input schema (names, docstrings, decorators, defaults, check block),
# the same use of the inputs.  The expected text is that example's
# exported/inputs.schema.json content, byte for byte.
HELLO_WEBAPP = '''\
import akua.ctx
import charts.nginx as nginx

schema Input:
    """Public inputs for the hello-webapp Package."""

    @ui(order=10, group="Identity")
    name: str = "hello"
    """Internal name used as a resource-name prefix. Lowercase, hyphen-separated."""

    @ui(order=20, widget="slider", min=1, max=20)
    replicas: int = 2
    """Replica count for the Deployment."""

    check:
        replicas >= 1, "replicas must be at least 1"

input: Input = ctx.input()

resources = nginx.template(nginx.TemplateOpts {
    values = {
        replicaCount = input.replicas
        fullnameOverride = input.name
    }
    release = input.name
})
'''

HELLO_WEBAPP_EXPORTED = """\
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "Public inputs for the hello-webapp Package.",
  "properties": {
    "name": {
      "default": "hello",
      "description": "Internal name used as a resource-name prefix. Lowercase, hyphen-separated.",
      "type": "string",
      "x-ui": {
        "group": "Identity",
        "order": 10
      }
    },
    "replicas": {
      "default": 2,
      "description": "Replica count for the Deployment.",
      "type": "integer",
      "x-ui": {
        "max": 20,
        "min": 1,
        "order": 20,
        "widget": "slider"
      }
    }
  },
  "required": [
    "name",
    "replicas"
  ],
  "title": "Input",
  "type": "object"
}
"""


def test_the_published_example_matches_byte_for_byte(kcl: KclWorkers) -> None:
    schema = derived(kcl, HELLO_WEBAPP)
    # serde_json's pretty printer: two-space indent, keys in order, then a newline.
    assert json.dumps(schema, indent=2, ensure_ascii=False) + "\n" == HELLO_WEBAPP_EXPORTED


def test_no_input_schema(kcl: KclWorkers) -> None:
    with pytest.raises(DerivationFailed, match=r"declares no `schema Input`"):
        kcl.derive("schema NotTheInput:\n    name: str\n")


def test_kcl_that_does_not_parse(kcl: KclWorkers) -> None:
    with pytest.raises(DerivationFailed) as caught:
        kcl.derive("schema Input:\n    name: str =\n")
    assert str(caught.value).startswith("package.k does not parse: line 2, column ")


def test_a_parser_crash_is_contained_and_the_next_package_still_works(kcl: KclWorkers) -> None:
    deep = "schema Input:\n    a: int = " + "(" * 20000 + "1" + ")" * 20000 + "\n"
    crashed = r"kcl-lib crashed on this package.k \(its process killed by SIG"
    with pytest.raises(DerivationFailed, match=crashed):
        kcl.derive(deep)
    assert kcl.derive("schema Input:\n    a: int\n")["required"] == ["a"]


def test_a_syntax_tree_too_deep_for_the_exporter(kcl: KclWorkers) -> None:
    source = "schema Input:\n    a: int = " + "(" * 60 + "1" + ")" * 60 + "\n"
    with pytest.raises(DerivationFailed, match=r"syntax tree nests \d+ levels deep; Akua's exporter"):
        kcl.derive(source)


def test_a_slow_derivation_is_stopped() -> None:
    workers = KclWorkers(timeout_s=0.05)
    try:
        many = "schema Input:\n" + "".join(f"    a{i}: int = {i}\n" for i in range(20000))
        with pytest.raises(DerivationFailed, match=r"took longer than 0.05s"):
            workers.derive(many)
    finally:
        workers.close()


# ------------------------------------------------------------ plain-data rules


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("True", True),
        ("False", False),
        ("3", 3),
        (" [1, 2] ", [1, 2]),
        ('"x"', "x"),
        ("None", "None"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e400", "1e400"),
        ("18446744073709551615", 18446744073709551615),
        ("18446744073709551616", 1.8446744073709552e19),
        ('"\\ud800"', '"\\ud800"'),
        ("[" * 127 + "]" * 127, json.loads("[" * 127 + "]" * 127)),
        ("[" * 128 + "]" * 128, "[" * 128 + "]" * 128),
        ("'single'", "'single'"),
        ("1Mi", "1Mi"),
    ],
)
def test_defaults_read_as_serde_json_reads_them(text: str, value: Any) -> None:
    assert kcl_default_to_json(text) == value


def test_serde_reader_keeps_the_last_duplicate_key() -> None:
    assert serde_json_value('{"a": 1, "a": 2}') == {"a": 2}


def test_the_kcl_child_gets_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child's environment, seen from inside: a package.k cannot read it, but a
    # crash dump or a future evaluation must not find a token there either.
    from crawler import kcl_pool

    monkeypatch.setenv("AKUA_API_TOKEN", "sk_akua_secret_value")
    monkeypatch.setenv("REGISTRY_PASSWORD", "hunter2")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    child = kcl_pool._Child(kcl_pool.CHILD_MEMORY_BYTES, 30.0)
    try:
        environ = Path(f"/proc/{child.process.pid}/environ").read_bytes().split(b"\0")
    finally:
        child.stop()
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & {"AKUA_API_TOKEN", "REGISTRY_PASSWORD", "MY_SERVICE_TOKEN"}
    assert {"LANG", "KCL_PKG_PATH", "PYTHONPATH"} <= names

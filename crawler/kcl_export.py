"""A KCL package's ``schema Input`` as JSON Schema 2020-12, mapped as ``akuapkg export`` maps it.

Pure: it takes what KCL's own library returns, as plain data, and imports
nothing from it (``crawler.kcl_worker`` calls the library in a child process
and hands the results here).  Two inputs, as in the exporter:

* ``types``: KCL's schema type mapping (``GetSchemaTypeMapping``), one type
  per top-level schema, each a dict with the KclType fields used here:
  ``type``, ``schema_name``, ``properties``, ``required``, ``item``,
  ``union_types`` and ``default``.  It carries types, defaults and required.
* ``ast``: the parsed program (``ParseProgram``'s ``ast_json``, decoded).
  The type mapping drops attribute docstrings and decorators, so they are
  read from the syntax tree: a schema's ``doc``, and per attribute the
  ``@ui(...)`` keyword literals and the string expression right after it.

The mapping, rule by rule (each has a parity test in tests/test_kcl_export.py):

=====================  ============================================================
KCL type               JSON Schema
=====================  ============================================================
schema                 ``type: object``; ``description`` from the schema's docstring
                       (looked up by schema name, else by the attribute's name);
                       ``properties``; ``required`` (KCL's list, in its order)
str, int, bool         ``type`` string, integer, boolean
float, number,         ``type: number``
number_multiplier
list                   ``type: array``, ``items`` from the item type
dict                   ``type: object``, ``additionalProperties`` from the value type
union                  ``oneOf`` of the members
any                    nothing (an unconstrained schema)
literal ``base(lit)``  ``type`` of the base and ``const`` (int, float/number, bool, str)
anything else          ``x-akua-kcl-type`` naming KCL's type
=====================  ============================================================

Per property of a schema: the attribute docstring becomes ``description``
unless the property already has one (a nested schema's own docstring wins),
and ``@ui`` keywords become ``x-ui``.  Every type with a default gets
``default``: ``True``/``False`` as booleans, JSON text as JSON (read with the
exporter's JSON reader's limits), anything else as the source text.  The root
gets ``$schema`` 2020-12 and ``title: "Input"``.  Keys are sorted, as the
exporter's JSON objects are.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

INPUT_SCHEMA_NAME: Final = "Input"
DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
X_UI: Final = "x-ui"
X_KCL_TYPE: Final = "x-akua-kcl-type"

# The exporter reads JSON with serde_json, which refuses text nesting 128
# arrays/objects deep (its recursion budget of 128 reaches zero there).
SERDE_JSON_MAX_DEPTH: Final = 127
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U64_MAX: Final = 2**64 - 1
# Rust's char::is_whitespace (Unicode White_Space); Python's str.strip() also
# strips U+001C..U+001F, which Rust's trim() keeps.
_RUST_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_QUOTES: Final = ('"""', "'''", '"', "'")
# What Rust's str::parse accepts for i64 and f64 (no whitespace, no underscores).
_RUST_I64: Final = re.compile(r"[+-]?[0-9]+", re.ASCII)
_RUST_F64: Final = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
    re.ASCII | re.IGNORECASE,
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")


class ExportError(Exception):
    """The package has no schema the exporter would emit; ``str()`` says why."""


def export_input_schema(types: Mapping[str, Any], ast: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``schema Input``; raises ExportError when there is none."""
    root = types.get(INPUT_SCHEMA_NAME)
    if not isinstance(root, Mapping):
        raise ExportError("package.k declares no `schema Input` (the package's public inputs)")
    metadata = schema_metadata(ast)
    schema = _to_json_schema(root, INPUT_SCHEMA_NAME, metadata)
    schema["$schema"] = DRAFT_2020_12
    schema.setdefault("title", INPUT_SCHEMA_NAME)
    ordered: dict[str, Any] = _sorted(schema)
    return ordered


# ------------------------------------------------------------------ the syntax tree


class _Attribute:
    __slots__ = ("description", "x_ui")

    def __init__(self, description: str | None, x_ui: dict[str, Any] | None) -> None:
        self.description = description
        self.x_ui = x_ui


class _Schema:
    __slots__ = ("attributes", "doc")

    def __init__(self, doc: str | None) -> None:
        self.doc = doc
        self.attributes: dict[str, _Attribute] = {}


def schema_metadata(ast: Mapping[str, Any]) -> dict[str, _Schema]:
    """Docstrings and ``@ui`` keywords of every top-level schema of the main package.

    A later schema (or attribute) of the same name replaces an earlier one.
    """
    found: dict[str, _Schema] = {}
    for module in _array(_at(ast, "pkgs", "__main__")):
        for statement in _array(_at(module, "body")):
            node = _at(statement, "node")
            if _at(node, "type") != "Schema":
                continue
            name = _at(node, "name", "node")
            if not isinstance(name, str) or not name:
                continue
            doc = _at(node, "doc", "node")
            info = _Schema(_unquote_docstring(doc) or None if isinstance(doc, str) else None)
            body = _array(_at(node, "body"))
            for index, item in enumerate(body):
                attr = _at(item, "node")
                if _at(attr, "type") != "SchemaAttr":
                    continue
                attr_name = _at(attr, "name", "node")
                if not isinstance(attr_name, str) or not attr_name:
                    continue
                decorators = _at(attr, "decorators")
                x_ui = _ui_keywords(decorators) if isinstance(decorators, list) else None
                following = _at(body[index + 1], "node") if index + 1 < len(body) else None
                info.attributes[attr_name] = _Attribute(_string_expression(following), x_ui)
            found[name] = info
    return found


def _unquote_docstring(raw: str) -> str:
    """A schema docstring's source token without its quotes (attribute ones come unquoted)."""
    trimmed = raw.strip(_RUST_WHITESPACE)
    for quote in _QUOTES:
        if (
            trimmed.startswith(quote)
            and trimmed.endswith(quote)
            and len(trimmed) >= 2 * len(quote)
        ):
            return trimmed[len(quote) : len(trimmed) - len(quote)].strip(_RUST_WHITESPACE)
    return trimmed


def _string_expression(node: object) -> str | None:
    """The value of a statement that is a bare string literal (KCL's attribute docstring)."""
    if _at(node, "type") != "Expr":
        return None
    exprs = _at(node, "exprs")
    if not isinstance(exprs, list) or not exprs:
        return None
    first = _at(exprs[0], "node")
    if _at(first, "type") != "StringLit":
        return None
    value = _at(first, "value")
    return value if isinstance(value, str) else None


def _ui_keywords(decorators: Sequence[Any]) -> dict[str, Any] | None:
    """The literal keyword arguments of the first decorator whose name starts with ``ui``."""
    ui = next(
        (d for d in decorators if _at(d, "node", "func", "node", "names", 0, "node") == "ui"),
        None,
    )
    if ui is None:
        return None
    keywords: dict[str, Any] = {}
    for keyword in _array(_at(ui, "node", "keywords")):
        name = _at(keyword, "node", "arg", "node", "names", 0, "node")
        value = _at(keyword, "node", "value", "node")
        if not isinstance(name, str) or value is None:
            continue
        literal = _literal(value)
        if literal is not _NOT_LITERAL:
            keywords[name] = literal
    return keywords or None


_NOT_LITERAL: Final = object()


def _literal(node: object) -> Any:
    """A literal's JSON value; non-literal expressions are dropped (``_NOT_LITERAL``).

    Strings, numbers (a unit suffix such as ``Mi`` is ignored, as the exporter
    does), True/False/None and lists of literals.  A negative number is a
    unary expression, so it is not a literal either.
    """
    kind = _at(node, "type")
    if kind == "StringLit":
        value = _at(node, "value")
        return value if isinstance(value, str) else _NOT_LITERAL
    if kind == "NumberLit":
        number = _at(node, "value")
        number_kind, value = _at(number, "type"), _at(number, "value")
        if number_kind == "Int":
            return value if _is_int(value) and _I64_MIN <= value <= _I64_MAX else _NOT_LITERAL
        if number_kind == "Float":
            return float(value) if _is_number(value) else _NOT_LITERAL
        return _NOT_LITERAL
    if kind == "NameConstantLit":
        return {"True": True, "False": False, "None": None}.get(_at(node, "value"), _NOT_LITERAL)
    if kind == "List":
        elements = _at(node, "elts")
        if not isinstance(elements, list):
            return _NOT_LITERAL
        items = (_literal(_at(element, "node")) for element in elements)
        return [item for item in items if item is not _NOT_LITERAL]
    return _NOT_LITERAL


# ----------------------------------------------------------------------- the types


def _to_json_schema(kcl: Mapping[str, Any], attr_name: str, ast: Mapping[str, _Schema]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = kcl.get("type", "")
    if kind == "schema":
        out["type"] = "object"
        info = ast.get(kcl.get("schema_name", "")) or ast.get(attr_name)
        if info is not None and info.doc is not None:
            out["description"] = info.doc
        properties: Mapping[str, Any] = kcl.get("properties") or {}
        if properties:
            mapped = {
                name: _to_json_schema(prop, name, ast) for name, prop in sorted(properties.items())
            }
            if info is not None:
                for name, prop in mapped.items():
                    attribute = info.attributes.get(name)
                    if attribute is None:
                        continue
                    if attribute.description is not None:
                        prop.setdefault("description", attribute.description)
                    if attribute.x_ui is not None:
                        prop[X_UI] = attribute.x_ui
            out["properties"] = mapped
        required: Sequence[str] = kcl.get("required") or ()
        if required:
            out["required"] = list(required)
    elif kind == "str":
        out["type"] = "string"
    elif kind == "int":
        out["type"] = "integer"
    elif kind in ("float", "number", "number_multiplier"):
        out["type"] = "number"
    elif kind == "bool":
        out["type"] = "boolean"
    elif kind == "list":
        out["type"] = "array"
        if kcl.get("item") is not None:
            out["items"] = _to_json_schema(kcl["item"], attr_name, ast)
    elif kind == "dict":
        out["type"] = "object"
        if kcl.get("item") is not None:
            out["additionalProperties"] = _to_json_schema(kcl["item"], attr_name, ast)
    elif kind == "union":
        variants = [_to_json_schema(v, attr_name, ast) for v in kcl.get("union_types") or ()]
        if variants:
            out["oneOf"] = variants
    elif kind != "any":
        out.update(_literal_type(kind))
    default = kcl.get("default", "")
    if default:
        out["default"] = kcl_default_to_json(default)
    return out


def _literal_type(kind: str) -> dict[str, Any]:
    """``str(apps/v1)``, ``int(42)``, ``float(1.5)``, ``bool(True)`` → type and const."""
    opening = kind.find("(")
    if opening < 0 or not kind.endswith(")"):
        return {X_KCL_TYPE: kind}
    base, literal = kind[:opening], kind[opening + 1 : -1]
    if base == "int":
        out: dict[str, Any] = {"type": "integer"}
        if _RUST_I64.fullmatch(literal) and _I64_MIN <= int(literal) <= _I64_MAX:
            out["const"] = int(literal)
        return out
    if base in ("float", "number"):
        out = {"type": "number"}
        if _RUST_F64.fullmatch(literal):
            number = float(literal)
            # serde_json has no NaN or infinity: json!() of one is null.
            out["const"] = number if math.isfinite(number) else None
        return out
    if base == "bool":
        return {"type": "boolean", "const": literal.lower() == "true"}
    if base == "str":
        return {"type": "string", "const": literal}
    return {X_KCL_TYPE: kind}


# -------------------------------------------------------------------- the defaults


def kcl_default_to_json(default: str) -> Any:
    """KCL keeps a default as its source text: booleans, then JSON, else the text itself."""
    if default == "True":
        return True
    if default == "False":
        return False
    parsed = serde_json_value(default)
    return default if parsed is _NOT_JSON else parsed


_NOT_JSON: Final = object()


class _Refused(Exception):
    pass


def serde_json_value(text: str) -> Any:
    """``text`` read as serde_json reads a ``Value`` (``_NOT_JSON`` where it refuses it).

    Differences from ``json.loads`` that change the answer: no NaN or
    Infinity, numbers out of f64 range and lone surrogate escapes are
    errors, nesting of 128 levels is an error, and integers beyond
    i64/u64 become floats.
    """
    if json_depth(text) > SERDE_JSON_MAX_DEPTH:
        return _NOT_JSON
    try:
        value = json.loads(
            text,
            parse_constant=_refuse,
            parse_float=_finite_float,
            parse_int=_serde_int,
        )
    except (ValueError, _Refused, RecursionError):
        return _NOT_JSON
    if _has_surrogate(value):
        return _NOT_JSON
    return value


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (brackets inside strings ignored)."""
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in skeleton:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse(_name: str) -> Any:
    raise _Refused


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Refused
    return number


def _serde_int(literal: str) -> int | float:
    if len(literal) > 400:  # far beyond f64 range either way
        raise _Refused
    number = int(literal)
    if _I64_MIN <= number <= _U64_MAX:
        return number
    as_float = float(number)
    if not math.isfinite(as_float):
        raise _Refused
    return as_float


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


# ---------------------------------------------------------------------- plumbing


def _at(value: object, *path: str | int) -> Any:
    """``value[path[0]][path[1]]...``, or None where a step is missing or of the wrong kind."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, Mapping):
                return None
            value = value.get(step)
    return value


def _array(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sorted(value: Any) -> Any:
    """The same value with every object's keys in order, as serde_json's maps keep them."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


__all__ = [
    "DRAFT_2020_12",
    "INPUT_SCHEMA_NAME",
    "ExportError",
    "export_input_schema",
    "json_depth",
    "kcl_default_to_json",
    "schema_metadata",
    "serde_json_value",
]

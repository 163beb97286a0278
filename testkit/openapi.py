"""Akua's OpenAPI document (packages subset), vendored in ``contracts/``.

The document is Akua's public contract.  Two things read it: the Akua
double, which validates request bodies with the schemas it declares, and the
contract test, which checks that the schemas the crawler checks its own
bodies against (``crawler.contract``) say the same thing.  A change on
either side therefore fails a test instead of passing on both.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Final

OPENAPI_PATH: Final = Path(__file__).resolve().parent.parent / "contracts" / "akua-openapi-packages.json"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


@functools.cache
def document() -> dict[str, Any]:
    with OPENAPI_PATH.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def operation(operation_id: str) -> tuple[str, str, dict[str, Any]]:
    """(path, method, operation object) of ``operation_id``; KeyError when absent."""
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return path, method, op
    raise KeyError(operation_id)


def request_schema(operation_id: str) -> dict[str, Any]:
    """The JSON request-body schema of an operation, every ``$ref`` inlined."""
    _, _, op = operation(operation_id)
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    return {"$schema": DIALECT, **inline(schema)}


def parameter(operation_id: str, name: str) -> dict[str, Any]:
    """The schema of one declared parameter (query, path or header) of an operation."""
    _, _, op = operation(operation_id)
    for param in op.get("parameters", []):
        if param.get("name") == name:
            schema: dict[str, Any] = param["schema"]
            return schema
    raise KeyError(f"{operation_id}: no parameter {name!r}")


def inline(node: Any, seen: tuple[str, ...] = ()) -> Any:
    """``node`` with local ``#/components/...`` references replaced by their targets."""
    if isinstance(node, list):
        return [inline(item, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            raise ValueError(f"recursive reference {ref}: cannot inline")
        if not ref.startswith("#/"):
            raise ValueError(f"non-local reference {ref}")
        target: Any = document()
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        resolved = inline(copy.deepcopy(target), (*seen, ref))
        return {**resolved, **inline(siblings, seen)} if siblings else resolved
    return {key: inline(value, seen) for key, value in node.items()}

"""Request-body validation for the Akua double, as strict as the real service.

The schemas are the request bodies of Akua's OpenAPI document, read from the
copy vendored in ``contracts/`` (``testkit.openapi``), with two corrections
that make Python's jsonschema behave like a JSON Schema validator working to
the spec (the real service's):

* ``pattern`` is an ECMA-262 regular expression.  Python's ``re`` differs
  where it matters for SemVer: ``\\d`` matches any Unicode digit and ``$``
  also matches before a trailing newline, so ``"1.0.0\\n"`` or ``"1١.0.0"``
  would pass.  Patterns are compiled with ``re.ASCII`` and ``$`` (outside a
  character class) becomes ``\\Z``.
* ``format: uri`` is only checked by jsonschema when the optional
  ``rfc3987`` package is installed, which it is not; without a checker the
  format is silently ignored.  A small RFC 3986 absolute-URI check fills in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from jsonschema import (  # type: ignore[import-untyped]
    Draft202012Validator,
    FormatChecker,
    ValidationError,
    validators,
)

from testkit.openapi import request_schema

#: Longest message kept from a validator; messages quote the instance, which
#: for an ``input_schema`` can be many kilobytes.
MESSAGE_MAX: Final = 300


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a request is refused; ``path`` locates the failing field."""

    message: str
    path: tuple[str, ...] | None = None


@functools.lru_cache(maxsize=64)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 pattern so that Python's ``re`` means the same thing."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"  # ECMA's $ (without the m flag) is the very end
        out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


def _ecma_pattern(
    validator: Any, patrn: str, instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not ecma_regex(patrn).search(instance):
        if patrn == _SEMVER_PATTERN:  # 300 characters of regex: name it instead
            yield ValidationError(f"{instance!r} is not a SemVer 2.0 version (no 'v' prefix)")
        else:
            yield ValidationError(f"{instance!r} does not match {patrn!r}")


# scheme ":" then only the characters RFC 3986 allows in the rest, or %XX.
_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})*",
    re.ASCII,
)

FORMATS: Final = FormatChecker()


@FORMATS.checks("uri")  # type: ignore[untyped-decorator]
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or _URI.fullmatch(value) is not None


_StrictValidator: Final = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


IMPORT_SCHEMA: Final = request_schema("packages.importPublished")
VERSION_SCHEMA: Final = request_schema("packages.createVersion")
_SEMVER_PATTERN: Final = VERSION_SCHEMA["properties"]["semver"]["pattern"]
IMPORT_VALIDATOR: Final = _StrictValidator(IMPORT_SCHEMA, format_checker=FORMATS)
VERSION_VALIDATOR: Final = _StrictValidator(VERSION_SCHEMA, format_checker=FORMATS)


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_MAX else message[: MESSAGE_MAX - 1] + "…"


def _problems_of(error: Any, prefix: tuple[str, ...]) -> Iterator[Problem]:
    where = prefix + tuple(str(part) for part in error.absolute_path)
    instance = error.instance
    # Name the offending field itself, not the object around it: a client
    # (and an operator reading its log) needs to know which key to fix.
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        for key in sorted(k for k in instance if k not in known):
            yield Problem(f"unknown field {key!r}", (*where, key))
    elif error.validator == "required" and isinstance(instance, dict):
        for key in error.validator_value:
            if key not in instance:
                yield Problem(f"{key!r} is a required property", (*where, key))
    else:
        yield Problem(_clip(error.message), where)


def check(validator: Any, body: Any, prefix: tuple[str, ...] = ("body",)) -> list[Problem]:
    """Every way ``body`` breaks the schema, in a stable order (empty when valid)."""
    found = [p for e in validator.iter_errors(body) for p in _problems_of(e, prefix)]
    return sorted(found, key=lambda p: (p.path or (), p.message))

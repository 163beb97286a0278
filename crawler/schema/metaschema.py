"""The metaschema check: a compiled fast path, ``jsonschema`` for the words.

One validator per dialect, built once and shared by every thread (both
kinds are immutable once built).  ``jsonschema-rs`` (Rust) answers "valid"
in microseconds; only when it says "invalid", or for a dialect where it is
not proven to agree, does ``jsonschema`` run, because its ``best_match``
names the offending keyword precisely.  The verdict is therefore always the
one ``jsonschema`` would give, provided jsonschema-rs never accepts what
jsonschema refuses: tests/test_schema_corpus.py proves that on the corpus
and with a property test per dialect.  draft-04 stays on ``jsonschema``
alone: a fuzz found ``enum`` arrays (the metaschema asks them to be unique)
that jsonschema-rs accepts and jsonschema refuses.

Formats are checked the same way by both engines: ``regex`` with the
ECMA-262 engine of crawler.schema.regexes (jsonschema-rs calls back into
Python for it, so it never uses its own regex dialect), ``uri`` and
``uri-reference`` not at all (jsonschema checks them only when an optional
package happens to be installed; a verdict must not depend on that).
Neither engine fetches anything: the metaschemas are bundled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import jsonschema_rs
from jsonschema import FormatChecker  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from jsonschema.protocols import Validator  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]
from jsonschema_specifications import REGISTRY as _METASCHEMAS  # type: ignore[import-untyped]

from crawler.schema.dialects import DIALECTS, DRAFT4, Dialect
from crawler.schema.problems import SHORT_MESSAGE, SHORT_PATH, SHORT_REPR, Problem, cut
from crawler.schema.regexes import RegexInvalid, ecma_problem, is_ecma_regex

# A hostile schema can hold hundreds of thousands of errors; ranking the
# first few is enough to name one precisely and keeps memory flat.
_MAX_ERRORS_RANKED: Final = 50

#: Dialects where jsonschema-rs may answer "valid" on its own.
FAST_DIALECTS: Final = frozenset(d for d in DIALECTS if d is not DRAFT4)


def _check_regex(instance: object) -> bool:
    if isinstance(instance, str):
        problem = ecma_problem(instance)
        if problem is not None:
            raise RegexInvalid(problem)
    return True


def _not_checked(_instance: object) -> bool:
    return True


FORMAT_CHECKER: Final = FormatChecker(formats=())
FORMAT_CHECKER.checks("regex", raises=RegexInvalid)(_check_regex)

_RS_FORMATS: Final = MappingProxyType(
    {"regex": is_ecma_regex, "uri": _not_checked, "uri-reference": _not_checked}
)


def _python_validator(dialect: Dialect) -> Validator:
    meta = dialect.validator.META_SCHEMA
    meta_cls = validator_for(meta, default=dialect.validator)
    return meta_cls(meta, format_checker=FORMAT_CHECKER)


def _rust_validator(dialect: Dialect) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(
        _METASCHEMAS.contents(dialect.uri.rstrip("#")),
        validate_formats=True,
        formats=dict(_RS_FORMATS),
        offline=True,
    )


# Built once: construction resolves the bundled metaschemas.
PYTHON_VALIDATORS: Final[Mapping[Dialect, Validator]] = MappingProxyType(
    {dialect: _python_validator(dialect) for dialect in DIALECTS}
)
RUST_VALIDATORS: Final[Mapping[Dialect, jsonschema_rs.Validator]] = MappingProxyType(
    {dialect: _rust_validator(dialect) for dialect in DIALECTS}
)


def fast_says_valid(schema: dict[str, Any], dialect: Dialect) -> bool:
    """jsonschema-rs's verdict alone (for the agreement tests)."""
    return RUST_VALIDATORS[dialect].is_valid(schema)


def python_error(schema: dict[str, Any], dialect: Dialect) -> ValidationError | None:
    """jsonschema's most relevant error, or None when it finds the schema valid."""
    errors: Iterator[ValidationError] = PYTHON_VALIDATORS[dialect].iter_errors(schema)
    return best_match(itertools.islice(errors, _MAX_ERRORS_RANKED))


def check_metaschema(schema: dict[str, Any], dialect: Dialect) -> None:
    """Raise Problem unless ``schema`` is valid against its dialect's metaschema."""
    if dialect in FAST_DIALECTS and fast_says_valid(schema, dialect):
        return
    try:
        error = python_error(schema, dialect)
    except RecursionError as exc:
        raise Problem(
            f"input schema could not be checked against the {dialect.name} metaschema: "
            f"it is nested too deeply ({type(exc).__name__})"
        ) from None
    if error is None:
        return
    raise Problem(
        f"input schema is not a valid {dialect.name} schema: at "
        f"{cut(error.json_path, SHORT_PATH)}: {error.validator}: {_error_message(error)}"
    )


def _error_message(error: ValidationError) -> str:
    if error.validator == "format" and isinstance(error.cause, RegexInvalid):
        quoted = cut(repr(error.instance), SHORT_REPR // 2)
        return cut(f"{quoted} is not an ECMA-262 regular expression: {error.cause}", SHORT_MESSAGE)
    # jsonschema quotes the whole offending instance; shorten that quote
    # rather than the message, whose end says what was wrong.
    message: str = error.message
    quoted = repr(error.instance)
    if len(quoted) > SHORT_REPR and quoted in message:
        message = message.replace(quoted, cut(quoted, SHORT_REPR), 1)
    return cut(message, SHORT_MESSAGE)

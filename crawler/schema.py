"""A package's input JSON Schema, read from its manifest annotations.

The annotation value is attacker-controlled text, so every step is bounded
before the next, more expensive one runs: type, then byte size, then a
linear nesting scan, then ``json.loads``, then an iterative walk, and only
then the metaschema check.  Nothing is ever fetched: a schema that needs a
remote ``$ref`` is refused instead.

The last step is the slow one: jsonschema spends about 0.4 ms per subschema
checking a 2020-12 schema against its metaschema (about 0.03 ms for draft-07),
so the walk counts subschemas and refuses more than MAX_SUBSCHEMAS (about
4 s of checking at worst) before the metaschema check runs; without that cap a
hostile 1 MiB annotation of empty subschemas would cost about two minutes.
Callers still run large ones in a worker thread.

Pure and free of shared mutable state, so it may run in worker threads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from jsonschema import (  # type: ignore[import-untyped]
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
)
from jsonschema.exceptions import (  # type: ignore[import-untyped]
    ValidationError,
    best_match,
)
from jsonschema.protocols import Validator  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from crawler.errors import InvalidArtifact

SCHEMA_ANNOTATION_DEFAULT: Final = "dev.akua.package.input-schema"
MAX_SCHEMA_BYTES: Final = 1_048_576
MAX_SCHEMA_DEPTH: Final = 64
#: Generous for real input forms (an exported values schema has hundreds to a few thousand).
MAX_SUBSCHEMAS: Final = 10_000


def _with_and_without_hash(uri: str, cls: type[Validator]) -> dict[str, type[Validator]]:
    return {uri: cls, uri + "#": cls}


SUPPORTED_DIALECTS: Final[Mapping[str, type[Validator]]] = MappingProxyType(
    {
        **_with_and_without_hash("http://json-schema.org/draft-04/schema", Draft4Validator),
        **_with_and_without_hash("http://json-schema.org/draft-06/schema", Draft6Validator),
        **_with_and_without_hash("http://json-schema.org/draft-07/schema", Draft7Validator),
        **_with_and_without_hash(
            "https://json-schema.org/draft/2019-09/schema", Draft201909Validator
        ),
        **_with_and_without_hash(
            "https://json-schema.org/draft/2020-12/schema", Draft202012Validator
        ),
    }
)
DEFAULT_DIALECT: Final[type[Validator]] = Draft202012Validator

_DIALECT_NAMES: Final[Mapping[type[Validator], str]] = MappingProxyType(
    {
        Draft4Validator: "draft-04",
        Draft6Validator: "draft-06",
        Draft7Validator: "draft-07",
        Draft201909Validator: "2019-09",
        Draft202012Validator: "2020-12",
    }
)


def _metaschema_validator(cls: type[Validator]) -> Validator:
    # Same construction as cls.check_schema, kept so every error can be
    # ranked with best_match instead of surfacing whichever came first.
    meta_cls = validator_for(cls.META_SCHEMA, default=cls)
    return meta_cls(cls.META_SCHEMA, format_checker=meta_cls.FORMAT_CHECKER)


# Built once: construction resolves the bundled metaschemas.  Validators are
# immutable (each descent creates a new one), so sharing them across threads
# is safe.
_METASCHEMA_VALIDATORS: Final[Mapping[type[Validator], Validator]] = MappingProxyType(
    {cls: _metaschema_validator(cls) for cls in _DIALECT_NAMES}
)

# A hostile schema can hold hundreds of thousands of errors; ranking the
# first few is enough to name one precisely and keeps memory flat.
_MAX_ERRORS_RANKED: Final = 50

# Reason parts are cut so a whole reason stays around 300 characters.
_SHORT_REPR: Final = 60
_SHORT_PATH: Final = 100
_SHORT_MESSAGE: Final = 140

_REF_KEYWORDS: Final = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
# Values under these keywords are instance data, not subschemas: a "$ref"
# key inside a default is just data and must not be refused.
_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})
# Objects under these keywords map names to subschemas: their keys are
# names (a property may well be called "$ref" or "default").
_MAP_KEYWORDS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# One JSON string, or an unterminated one up to the end of the text.  It
# always matches at a quote, so the scan never rescans text (a pattern that
# can fail at an unterminated quote would retry at every later quote,
# which is quadratic).
_JSON_STRING: Final = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP: Final = MappingProxyType({"[": 1, "{": 1, "]": -1, "}": -1})
# int() refuses longer digit strings by default (CVE-2020-10735 limit);
# refusing them ourselves gives a clear reason instead of a bare ValueError.
_MAX_INT_DIGITS: Final = 4300
_JSON_PATH_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


class SchemaInvalid(InvalidArtifact):
    """The schema annotation is present but unusable."""


# detail -> SchemaInvalid naming the annotation key.
_Fail: TypeAlias = Callable[[str], Exception]


class _Refused(Exception):
    """Raised from json.loads hooks; turned into SchemaInvalid with the key."""


# A linked path (parent, step) so the walk does O(1) work per node and
# renders a path only when it reports one.
_Path: TypeAlias = tuple["_Path", str | int] | None
_ROLE_SCHEMA: Final = 0
_ROLE_MAP: Final = 1
_ROLE_DATA: Final = 2


def extract_input_schema(
    annotations: Mapping[str, object] | None, keys: Sequence[str]
) -> tuple[str, dict[str, Any]] | None:
    """The first present annotation of ``keys``, decoded and checked.

    Returns ``(key, schema)``, or None when no key is present (the artifact
    is not a package).  The first present key decides even when its value is
    unusable: later keys are fallbacks for absence, not for errors.

    Raises SchemaInvalid, naming the key, when the value is unusable.
    """
    if isinstance(keys, str):
        # A bare string is a Sequence[str] of characters: always a caller bug.
        raise TypeError("keys must be a sequence of annotation keys, not a str")
    if annotations is None:
        return None
    for key in keys:
        if key in annotations:
            return key, _decode(key, annotations[key])
    return None


def check_schema_text(text: str, source: str) -> dict[str, Any]:
    """A schema that came from elsewhere than an annotation, checked like one.

    ``source`` names where it came from in the reason of a SchemaInvalid.
    """
    return _decode_as(source, text)


def _decode(key: str, value: object) -> dict[str, Any]:
    return _decode_as(f"annotation {key!r}", value)


def _decode_as(source: str, value: object) -> dict[str, Any]:
    def fail(detail: str) -> SchemaInvalid:
        return SchemaInvalid(f"{source}: {detail}")

    if not isinstance(value, str):
        raise fail(f"value is {_json_type(value)}, not a string")
    _check_text(value, fail)
    # Every check after the size check depends on the text alone, so its verdict is
    # remembered by digest: the same schema on the next version costs one json.loads.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
    known, problem = _verdicts.get(digest)
    if known:
        if problem is not None:
            raise fail(problem)
        decoded: dict[str, Any] = json.loads(value)
        return decoded
    try:
        decoded = _checked(value)
    except _Problem as exc:
        _verdicts.put(digest, exc.detail)
        raise fail(exc.detail) from None
    _verdicts.put(digest, None)
    return decoded


def _checked(text: str) -> dict[str, Any]:
    """Depth, JSON, object, dialect, references, metaschema; raises _Problem."""
    _check_depth(text, _Problem)
    decoded = _loads(text, _Problem)
    if not isinstance(decoded, dict):
        raise _Problem(f"input schema must be a JSON object, not {_json_type(decoded)}")
    dialect = _dialect(decoded, _Problem)
    _walk(decoded, _Problem)
    _check_metaschema(decoded, dialect, _Problem)
    return decoded


class _Problem(Exception):
    """A verdict on the schema text, before the annotation key is named."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Verdicts:
    """Metaschema verdicts by the sha256 of the schema text, least recently used out.

    Versions of a package mostly carry the same schema, and the metaschema
    check is the expensive step (milliseconds for a small 2020-12 schema), so a
    registry crawl would otherwise spend most of its CPU re-proving the same
    text.  Keyed by digest, not text, so the cache holds 32 bytes per entry.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> tuple[bool, str | None]:
        with self._lock:
            if digest not in self._entries:
                return False, None
            self._entries.move_to_end(digest)
            return True, self._entries[digest]

    def put(self, digest: bytes, problem: str | None) -> None:
        with self._lock:
            self._entries[digest] = problem
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


VERDICT_CACHE_SIZE: Final = 4096
_verdicts = _Verdicts(VERDICT_CACHE_SIZE)


def _check_text(text: str, fail: _Fail) -> None:
    # Every character is at least one UTF-8 byte, so a too-long string is
    # refused without encoding megabytes of it.
    if len(text) > MAX_SCHEMA_BYTES:
        raise fail(
            f"input schema is at least {len(text)} bytes, over the limit of "
            f"{MAX_SCHEMA_BYTES} bytes"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SCHEMA_BYTES:
        raise fail(f"input schema is {size} bytes, over the limit of {MAX_SCHEMA_BYTES} bytes")
    lone = _SURROGATE.search(text)
    if lone is not None:
        raise fail(
            f"input schema is not valid Unicode: lone surrogate "
            f"U+{ord(lone.group()):04X} at character {lone.start()}"
        )


def _check_depth(text: str, fail: _Fail) -> None:
    # Brackets inside strings do not nest, so strings go first; the rest is
    # C-level passes (sub, map, accumulate, max), linear in the text.
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, skeleton)), default=0)
    if depth > MAX_SCHEMA_DEPTH:
        raise fail(
            f"input schema nests arrays/objects {depth} levels deep, over the limit of "
            f"{MAX_SCHEMA_DEPTH}"
        )


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Refused(f"number {_short(literal)} is out of range")
    return number


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise _Refused(f"integer with {digits} digits is out of range")
    return int(literal)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Refused(f"duplicate key {_short(name)} in an object")
            seen.add(name)
    return obj


def _loads(text: str, fail: _Fail) -> Any:
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise fail(
            f"input schema is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _Refused as exc:
        raise fail(f"input schema is not usable JSON: {exc}") from None
    except ValueError as exc:
        # int()'s own digit limit, should the process have lowered it.
        raise fail(f"input schema is not usable JSON: {_cut(str(exc), _SHORT_MESSAGE)}") from None


def _dialect(schema: dict[str, Any], fail: _Fail) -> type[Validator]:
    if "$schema" not in schema:
        return DEFAULT_DIALECT
    uri = schema["$schema"]
    if not isinstance(uri, str):
        raise fail(f"$schema must be a string, not {_json_type(uri)}")
    dialect = SUPPORTED_DIALECTS.get(uri)
    if dialect is None:
        raise fail(
            f"$schema {_short(uri)} is not a supported dialect "
            f"(draft-04, draft-06, draft-07, 2019-09, 2020-12)"
        )
    return dialect


def _walk(schema: dict[str, Any], fail: _Fail) -> None:
    """Refuse lone surrogates anywhere and non-local references in subschemas.

    Iterative, so no nesting the depth check let through can exhaust the
    Python stack, and each node is visited once.
    """
    stack: list[tuple[Any, _Path, int]] = [(schema, None, _ROLE_SCHEMA)]
    subschemas = 0
    while stack:
        node, path, role = stack.pop()
        if role == _ROLE_SCHEMA and isinstance(node, dict):
            subschemas += 1
            if subschemas > MAX_SUBSCHEMAS:
                raise fail(
                    f"input schema has more than {MAX_SUBSCHEMAS} subschemas, over the limit "
                    "(it would take too long to check)"
                )
        if isinstance(node, str):
            _check_string(node, path, fail)
        elif isinstance(node, list):
            # Items inherit the list's role: allOf items are subschemas,
            # enum items are data.
            stack.extend((item, (path, i), role) for i, item in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            children: list[tuple[Any, _Path, int]] = []
            for name, value in node.items():
                _check_string(name, path, fail)
                child_path: _Path = (path, name)
                if role == _ROLE_SCHEMA:
                    if name in _REF_KEYWORDS:
                        _check_ref(name, value, child_path, fail)
                    if name in _DATA_KEYWORDS:
                        child_role = _ROLE_DATA
                    elif name in _MAP_KEYWORDS:
                        child_role = _ROLE_MAP
                    else:
                        child_role = _ROLE_SCHEMA
                elif role == _ROLE_MAP:
                    child_role = _ROLE_SCHEMA
                else:
                    child_role = _ROLE_DATA
                children.append((value, child_path, child_role))
            stack.extend(reversed(children))


def _check_string(text: str, path: _Path, fail: _Fail) -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate, which no
    # later UTF-8 encoding (the HTTP body) would survive.
    lone = _SURROGATE.search(text)
    if lone is not None:
        raise fail(
            f"input schema holds a lone surrogate \\u{ord(lone.group()):04x} "
            f"at {_render_path(path)}"
        )


def _check_ref(name: str, value: object, path: _Path, fail: _Fail) -> None:
    if isinstance(value, str) and not value.startswith("#"):
        raise fail(
            f"remote {name} {_short(value)} at {_render_path(path)} is not fetched; "
            f"only references within the schema (starting with '#') are supported"
        )


def _check_metaschema(schema: dict[str, Any], dialect: type[Validator], fail: _Fail) -> None:
    errors: Iterator[ValidationError] = _METASCHEMA_VALIDATORS[dialect].iter_errors(schema)
    try:
        error = best_match(itertools.islice(errors, _MAX_ERRORS_RANKED))
    except (RecursionError, OverflowError) as exc:
        # The "regex" format check compiles each "pattern" with Python's re,
        # which raises these (not re.error) for e.g. 1,000 nested groups or
        # a{99999999999}.
        raise fail(
            f"input schema could not be checked against the {_DIALECT_NAMES[dialect]} "
            f"metaschema: a regular expression is too large or too deeply nested "
            f"({type(exc).__name__}: {_cut(str(exc), _SHORT_REPR)})"
        ) from None
    if error is None:
        return
    raise fail(
        f"input schema is not a valid {_DIALECT_NAMES[dialect]} schema: at "
        f"{_cut(error.json_path, _SHORT_PATH)}: {error.validator}: {_error_message(error)}"
    )


def _error_message(error: ValidationError) -> str:
    # jsonschema quotes the whole offending instance; shorten that quote
    # rather than the message, whose end says what was wrong.
    message: str = error.message
    quoted = repr(error.instance)
    if len(quoted) > _SHORT_REPR and quoted in message:
        message = message.replace(quoted, _cut(quoted, _SHORT_REPR), 1)
    return _cut(message, _SHORT_MESSAGE)


def _render_path(path: _Path) -> str:
    steps: list[str | int] = []
    while path is not None:
        path, step = path
        steps.append(step)
    rendered = ["$"]
    for step in reversed(steps):
        if isinstance(step, int):
            rendered.append(f"[{step}]")
        elif _JSON_PATH_NAME.fullmatch(step):
            rendered.append(f".{step}")
        else:
            rendered.append(f"[{_short(step)}]")
    return _cut("".join(rendered), _SHORT_PATH)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _short(value: str) -> str:
    return _cut(repr(value), _SHORT_REPR)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

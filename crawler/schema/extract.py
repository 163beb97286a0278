"""A package's input JSON Schema, read from its manifest annotations.

The annotation value is attacker-controlled text, so every step is bounded
before the next, more expensive one runs: type, then byte size, then a
linear nesting scan, then ``json.loads``, then an iterative walk (which
counts subschemas), then the metaschema check, then the references.
Nothing is ever fetched.

Without the subschema cap a hostile 1 MiB annotation of empty subschemas
would cost jsonschema about two minutes when it has to explain a failure
(about 0.4 ms per 2020-12 subschema); MAX_SUBSCHEMAS keeps that to a few
seconds.  Callers still run the check in a worker thread.

Thread-safe: the shared state is the verdict cache behind its lock and
validators that never change once built.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple, TypeAlias, get_args

from crawler.errors import InvalidArtifact
from crawler.schema.dialects import DRAFT4, Dialect, dialect_of
from crawler.schema.metaschema import check_metaschema
from crawler.schema.problems import SHORT_MESSAGE, Path, Problem, cut, json_type, render_path, short
from crawler.schema.references import RemoteRef, check_references, is_pointer
from crawler.schema.regexes import ecma_problem

SCHEMA_ANNOTATION_DEFAULT: Final = "dev.akua.package.input-schema"
MAX_SCHEMA_BYTES: Final = 1_048_576
MAX_SCHEMA_DEPTH: Final = 64
#: Generous for real input forms (an exported values schema has hundreds to a few thousand).
MAX_SUBSCHEMAS: Final = 10_000

#: What to do with a schema whose references need a fetch.
RemoteRefs: TypeAlias = Literal["refuse", "keep"]
REMOTE_REFS_CHOICES: Final[tuple[str, ...]] = get_args(RemoteRefs)
REMOTE_REFS_DEFAULT: Final[RemoteRefs] = "refuse"


class FoundSchema(NamedTuple):
    key: str  # the annotation it came from
    schema: dict[str, Any]  # decoded, unchanged
    note: str | None = None  # for the item's reason, e.g. remote references kept


class SchemaInvalid(InvalidArtifact):
    """The schema annotation is present but unusable."""


class _Refused(Exception):
    """Raised from json.loads hooks; turned into a Problem."""


_REF_KEYWORDS: Final = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
_ID_KEYWORDS: Final = frozenset({"$id", "id"})
# Values under these keywords are instance data, not subschemas: a "$ref"
# key inside a default is just data.
_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})
# Objects under these keywords map names to subschemas: their keys are
# names (a property may well be called "$ref" or "default").
_MAP_KEYWORDS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)
_ROLE_SCHEMA: Final = 0
_ROLE_MAP: Final = 1
_ROLE_DATA: Final = 2

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
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


def extract_input_schema(
    annotations: Mapping[str, object] | None,
    keys: Sequence[str],
    *,
    remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT,
) -> FoundSchema | None:
    """The first present annotation of ``keys``, decoded and checked.

    Returns None when no key is present (the artifact is not a package).  The
    first present key decides even when its value is unusable: later keys are
    fallbacks for absence, not for errors.  With ``remote_refs="keep"`` a
    schema whose only flaw is references that need a fetch is returned with a
    note saying so; with ``"refuse"`` it is invalid.

    Raises SchemaInvalid, naming the key, when the value is unusable.
    """
    if isinstance(keys, str):
        # A bare string is a Sequence[str] of characters: always a caller bug.
        raise TypeError("keys must be a sequence of annotation keys, not a str")
    if remote_refs not in REMOTE_REFS_CHOICES:
        raise ValueError(f"remote_refs must be one of {REMOTE_REFS_CHOICES}, not {remote_refs!r}")
    if annotations is None:
        return None
    for key in keys:
        if key in annotations:
            return _decode(key, annotations[key], remote_refs)
    return None


class _Verdict(NamedTuple):
    problem: str | None
    remote: tuple[RemoteRef, ...] = ()


def check_schema_text(text: str, source: str) -> dict[str, Any]:
    """A schema that came from elsewhere than an annotation, checked like one.

    ``source`` names where it came from in the reason of a SchemaInvalid.
    Remote references are refused.
    """
    schema, _note = _decode_as(source, text, "refuse")
    return schema


def _decode(key: str, value: object, remote_refs: RemoteRefs) -> FoundSchema:
    schema, note = _decode_as(f"annotation {key!r}", value, remote_refs)
    return FoundSchema(key, schema, note)


def _decode_as(source: str, value: object, remote_refs: RemoteRefs) -> tuple[dict[str, Any], str | None]:
    def fail(detail: str) -> SchemaInvalid:
        return SchemaInvalid(f"{source}: {detail}")

    if not isinstance(value, str):
        raise fail(f"value is {json_type(value)}, not a string")
    try:
        _check_text(value)
    except Problem as exc:
        raise fail(exc.detail) from None
    # Every check after the size check depends on the text alone, so its verdict is
    # remembered by digest: the same schema on the next version costs one json.loads.
    # The verdict does not depend on remote_refs; only what is made of it does.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
    verdict = _verdicts.get(digest)
    decoded: dict[str, Any] | None = None
    if verdict is None:
        try:
            decoded, remote = _checked(value)
        except Problem as exc:
            verdict = _Verdict(exc.detail)
        else:
            verdict = _Verdict(None, remote)
        _verdicts.put(digest, verdict)
    if verdict.problem is not None:
        raise fail(verdict.problem)
    note = _remote_note(verdict.remote, remote_refs)
    if verdict.remote and note is None:
        raise fail(_remote_refused(verdict.remote))
    if decoded is None:
        decoded = json.loads(value)
    return decoded, note


def _remote_refused(remote: tuple[RemoteRef, ...]) -> str:
    more = f" (and {len(remote) - 1} more)" if len(remote) > 1 else ""
    return f"remote {remote[0].describe()}{more} is not fetched; remote_refs = \"keep\" sends it unchanged"


def _remote_note(remote: tuple[RemoteRef, ...], remote_refs: RemoteRefs) -> str | None:
    if not remote or remote_refs != "keep":
        return None
    more = f" and {len(remote) - 1} more" if len(remote) > 1 else ""
    return cut(
        f"schema sent with remote references unresolved (remote_refs = keep, Akua decides): "
        f"{remote[0].describe()}{more}",
        2 * SHORT_MESSAGE,
    )


def _checked(text: str) -> tuple[dict[str, Any], tuple[RemoteRef, ...]]:
    """Depth, JSON, object, dialect, limits, metaschema, references; raises Problem."""
    _check_depth(text)
    decoded = _loads(text)
    if not isinstance(decoded, dict):
        raise Problem(f"input schema must be a JSON object, not {json_type(decoded)}")
    dialect = dialect_of(decoded)
    # The text holds no lone surrogate (checked), so a decoded string can only hold one
    # through a \uD800-\uDFFF escape; without one, strings need no second look.
    refs = _walk(decoded, dialect, strings=_SURROGATE_ESCAPE.search(text) is not None)
    check_metaschema(decoded, dialect)
    if refs is _Refs.NONE:
        return decoded, ()
    return decoded, check_references(decoded, dialect, pointers_only=refs is _Refs.POINTERS)


class _Verdicts:
    """Verdicts by the sha256 of the schema text, least recently used out.

    Versions of a package mostly carry the same schema, so a registry crawl
    would otherwise spend much of its CPU re-proving the same text.  Keyed by
    digest, not text, so the cache holds 32 bytes per entry (plus the rare
    remote references).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, _Verdict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> _Verdict | None:
        with self._lock:
            verdict = self._entries.get(digest)
            if verdict is not None:
                self._entries.move_to_end(digest)
            return verdict

    def put(self, digest: bytes, verdict: _Verdict) -> None:
        with self._lock:
            self._entries[digest] = verdict
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


VERDICT_CACHE_SIZE: Final = 4096
_verdicts = _Verdicts(VERDICT_CACHE_SIZE)


def _check_text(text: str) -> None:
    # Every character is at least one UTF-8 byte, so a too-long string is
    # refused without encoding megabytes of it.
    if len(text) > MAX_SCHEMA_BYTES:
        raise Problem(
            f"input schema is at least {len(text)} bytes, over the limit of "
            f"{MAX_SCHEMA_BYTES} bytes"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SCHEMA_BYTES:
        raise Problem(f"input schema is {size} bytes, over the limit of {MAX_SCHEMA_BYTES} bytes")
    lone = _SURROGATE.search(text)
    if lone is not None:
        raise Problem(
            f"input schema is not valid Unicode: lone surrogate "
            f"U+{ord(lone.group()):04X} at character {lone.start()}"
        )


def _check_depth(text: str) -> None:
    # Brackets inside strings do not nest, so strings go first; the rest is
    # C-level passes (sub, map, accumulate, max), linear in the text.
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, skeleton)), default=0)
    if depth > MAX_SCHEMA_DEPTH:
        raise Problem(
            f"input schema nests arrays/objects {depth} levels deep, over the limit of "
            f"{MAX_SCHEMA_DEPTH}"
        )


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Refused(f"number {short(literal)} is out of range")
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
                raise _Refused(f"duplicate key {short(name)} in an object")
            seen.add(name)
    return obj


def _loads(text: str) -> Any:
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise Problem(
            f"input schema is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _Refused as exc:
        raise Problem(f"input schema is not usable JSON: {exc}") from None
    except ValueError as exc:
        # int()'s own digit limit, should the process have lowered it.
        raise Problem(f"input schema is not usable JSON: {cut(str(exc), SHORT_MESSAGE)}") from None


class _Refs(enum.Enum):
    NONE = "none"  # no reference keyword anywhere
    POINTERS = "pointers"  # only "#" and "#/..." and no $id: no registry needed
    ANY = "any"


def _walk(schema: dict[str, Any], dialect: Dialect, *, strings: bool = True) -> _Refs:
    """Count subschemas, refuse lone surrogates; say what kind of references there are.

    Iterative, so no nesting the depth check let through can exhaust the
    Python stack, and each node is visited once.  Conservative: the values of
    unknown keywords count as subschemas.  draft-04's metaschema does not
    check the names under ``patternProperties``, though the spec asks for
    ECMA-262 there too, so they are checked here.
    """
    stack: list[tuple[Any, Path, int]] = [(schema, None, _ROLE_SCHEMA)]
    subschemas = 0
    has_refs, all_pointers, saw_id = False, True, False
    while stack:
        node, path, role = stack.pop()
        if role == _ROLE_SCHEMA and isinstance(node, dict):
            subschemas += 1
            if subschemas > MAX_SUBSCHEMAS:
                raise Problem(
                    f"input schema has more than {MAX_SUBSCHEMAS} subschemas, over the limit "
                    "(it would take too long to check)"
                )
        if isinstance(node, str):
            if strings:
                _check_string(node, path)
        elif isinstance(node, list):
            # Items inherit the list's role: allOf items are subschemas,
            # enum items are data.
            stack.extend((item, (path, i), role) for i, item in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            children: list[tuple[Any, Path, int]] = []
            for name, value in node.items():
                if strings:
                    _check_string(name, path)
                child_path: Path = (path, name)
                if role == _ROLE_SCHEMA:
                    if name in _REF_KEYWORDS:
                        has_refs = True
                        all_pointers = all_pointers and is_pointer(value)
                    elif name in _ID_KEYWORDS:
                        saw_id = True  # a base URI of its own: referencing resolves
                    if name in _DATA_KEYWORDS:
                        child_role = _ROLE_DATA
                    elif name in _MAP_KEYWORDS:
                        child_role = _ROLE_MAP
                        if name == "patternProperties" and dialect is DRAFT4:
                            _check_pattern_names(value, child_path)
                    else:
                        child_role = _ROLE_SCHEMA
                elif role == _ROLE_MAP:
                    child_role = _ROLE_SCHEMA
                else:
                    child_role = _ROLE_DATA
                children.append((value, child_path, child_role))
            stack.extend(reversed(children))
    if not has_refs:
        return _Refs.NONE
    return _Refs.POINTERS if all_pointers and not saw_id else _Refs.ANY


def _check_string(text: str, path: Path) -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate, which no
    # later UTF-8 encoding (the HTTP body) would survive.
    lone = _SURROGATE.search(text)
    if lone is not None:
        raise Problem(
            f"input schema holds a lone surrogate \\u{ord(lone.group()):04x} "
            f"at {render_path(path)}"
        )


def _check_pattern_names(value: object, path: Path) -> None:
    if not isinstance(value, dict):
        return  # the metaschema says what is wrong
    for name in value:
        if _SURROGATE.search(name):
            continue  # the walk names it next
        problem = ecma_problem(name)
        if problem is not None:
            raise Problem(
                f"input schema is not a valid draft-04 schema: at {render_path(path)}: "
                f"{short(name)} is not an ECMA-262 regular expression: {problem}"
            )

"""References in a schema: what resolves without a network, what would need one.

Every reference a validator would follow is resolved the way ``jsonschema``
resolves it (with ``referencing``), against a registry holding only the
schema itself and the official metaschemas and vocabularies that
``jsonschema-specifications`` bundles:

- ``$ref`` through the schema's own ``$id`` (absolute or relative, URNs too),
  embedded resources with an ``$id`` of their own, JSON pointers, ``$anchor``,
  ``$dynamicAnchor``, draft-06/07 ``$id: "#name"`` anchors, ``$dynamicRef``
  (2020-12) and ``$recursiveRef`` (2019-09), and the official metaschemas;
- a reference into a known document that finds nothing there (a pointer to
  nowhere, a missing anchor) is **dangling**: the schema is invalid;
- a reference to any other document would need a fetch: it is **remote**.
  Nothing is ever fetched; the caller decides (``remote_refs``).

The walk visits what a validator would reach from the root: the subschemas
the dialect's applicators hold (a ``$ref`` inside an unknown keyword is data
to a validator, and so it is here) and whatever a reference leads to, once
each.  ``$defs``/``definitions`` are containers, not applicators: a definition
nothing references is never evaluated, so its references are not judged
(jsonschema and jsonschema-rs do the same); its ``$id`` and anchors still
count, since the registry holds the whole document.  Up to draft-07 a ``$ref`` makes its
siblings ignored, so they are not visited.  It runs after the metaschema
check, so every keyword it reads has the right type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import unquote, urldefrag, urljoin

from jsonschema_specifications import REGISTRY as _METASCHEMAS  # type: ignore[import-untyped]
from referencing.exceptions import InvalidAnchor, NoSuchAnchor, PointerToNowhere, Unresolvable

from crawler.schema.dialects import DRAFT4, DRAFT6, DRAFT7, DRAFT201909, DRAFT202012, Dialect
from crawler.schema.problems import Path, Problem, render_path, render_steps, short


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """A reference that would need a fetch."""

    keyword: str  # "$ref", "$dynamicRef", "$recursiveRef"
    value: str  # as written
    uri: str  # absolute, against the base URI in force
    where: str  # rendered JSON path of the keyword

    def describe(self) -> str:
        absolute = "" if self.uri == self.value else f" ({short(self.uri)})"
        return f"{self.keyword} {short(self.value)}{absolute} at {self.where}"


@dataclass(frozen=True, slots=True)
class _Keywords:
    single: frozenset[str]  # the value is a subschema
    array: frozenset[str]  # the value is an array of subschemas
    mapping: frozenset[str]  # the value maps names to subschemas
    single_or_array: frozenset[str]  # "items" before 2020-12


def _keywords(
    single: set[str],
    array: set[str],
    mapping: set[str],
    single_or_array: Iterable[str] = (),
    dependencies: bool = False,
) -> _Keywords:
    # "dependencies" maps names to a subschema or to property names (skipped as non-objects).
    return _Keywords(
        frozenset(single),
        frozenset(array),
        frozenset(mapping | ({"dependencies"} if dependencies else set())),
        frozenset(single_or_array),
    )


_CONDITIONALS: Final = {"if", "then", "else"}
_SUBSCHEMA_KEYWORDS: Final[Mapping[Dialect, _Keywords]] = MappingProxyType(
    {
        DRAFT4: _keywords(
            {"additionalItems", "additionalProperties", "not"},
            {"allOf", "anyOf", "oneOf"},
            {"patternProperties", "properties"},
            {"items"},
            dependencies=True,
        ),
        DRAFT6: _keywords(
            {"additionalItems", "additionalProperties", "contains", "not", "propertyNames"},
            {"allOf", "anyOf", "oneOf"},
            {"patternProperties", "properties"},
            {"items"},
            dependencies=True,
        ),
        DRAFT7: _keywords(
            {"additionalItems", "additionalProperties", "contains", "not", "propertyNames",
             *_CONDITIONALS},
            {"allOf", "anyOf", "oneOf"},
            {"patternProperties", "properties"},
            {"items"},
            dependencies=True,
        ),
        DRAFT201909: _keywords(
            {"additionalItems", "additionalProperties", "contains", "contentSchema", "not",
             "propertyNames", "unevaluatedItems", "unevaluatedProperties", *_CONDITIONALS},
            {"allOf", "anyOf", "oneOf"},
            {"dependentSchemas", "patternProperties", "properties"},
            {"items"},
        ),
        DRAFT202012: _keywords(
            {"additionalProperties", "contains", "contentSchema", "items", "not", "propertyNames",
             "unevaluatedItems", "unevaluatedProperties", *_CONDITIONALS},
            {"allOf", "anyOf", "oneOf", "prefixItems"},
            {"dependentSchemas", "patternProperties", "properties"},
        ),
    }
)


class _NoPointee(Exception):
    """What referencing's PointerToNowhere says, from the pointer resolver."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref


class _PointerResolver:
    """The common case, without building a registry: a document with no ``$id`` whose
    references are all JSON pointers into itself.  Resolves exactly as referencing does
    (percent-decoding, ``~1``/``~0``, array indexes); the corpus and a property test
    compare the two."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema

    @property
    def resolver(self) -> _PointerResolver:
        return self

    def lookup(self, ref: str) -> tuple[Any, _PointerResolver]:
        pointer = unquote(ref[1:])
        contents: Any = self._schema
        for segment in pointer.split("/")[1:]:
            try:
                if isinstance(contents, Sequence):
                    contents = contents[int(segment)]
                else:
                    contents = contents[segment.replace("~1", "/").replace("~0", "~")]
            except (LookupError, ValueError, TypeError):
                raise _NoPointee(ref[1:]) from None  # named as written, as referencing does
        return contents, self


def is_pointer(ref: object) -> bool:
    """A reference the pointer resolver can take: ``#`` or ``#/…``."""
    return isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))


def check_references(
    schema: dict[str, Any], dialect: Dialect, *, pointers_only: bool = False
) -> tuple[RemoteRef, ...]:
    """Resolve every reference; raise Problem for a dangling one, return the remote ones.

    ``pointers_only``: the caller saw no ``$id``/``id`` anywhere and only references
    that satisfy ``is_pointer``, so no registry is needed.
    """
    if pointers_only:
        return _walk(schema, dialect, _PointerResolver(schema), "")
    root = dialect.specification.create_resource(schema)
    base = root.id() or ""
    registry = _METASCHEMAS.with_resource(base, root).crawl()
    return _walk(schema, dialect, registry.resolver(base), base)


def _lookup(resolver: Any, ref: str) -> tuple[Any, Any]:
    if isinstance(resolver, _PointerResolver):
        return resolver.lookup(ref)
    resolved = resolver.lookup(ref)
    return resolved.contents, resolved.resolver


def _walk(schema: dict[str, Any], dialect: Dialect, resolver: Any, base: str) -> tuple[RemoteRef, ...]:
    keywords = _SUBSCHEMA_KEYWORDS[dialect]
    remote: dict[str, RemoteRef] = {}
    seen: set[int] = set()
    # (node, resolver in force, its base URI, path, whether the path is the node's own:
    # not for a node reached through a reference)
    stack: list[tuple[Any, Any, str, Path, bool]] = [(schema, resolver, base, None, True)]
    while stack:
        node, resolver, base, path, located = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        own_id = dialect.specification.id_of(node)
        if node is not schema and own_id is not None:
            resolver = resolver.in_subresource(dialect.specification.create_resource(node))
            base = urljoin(base, own_id) if base else own_id
        for keyword in dialect.reference_keywords:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            where: Path = (path, keyword)
            try:
                contents, target_resolver = _lookup(resolver, ref)
            except (PointerToNowhere, _NoPointee, NoSuchAnchor, InvalidAnchor) as exc:
                place = render_path(where) if located else _locate(schema, node, keyword)
                raise Problem(f"{keyword} {short(ref)} at {place} {_nowhere(exc)}") from None
            except Unresolvable:
                place = render_path(where) if located else _locate(schema, node, keyword)
                uri = urljoin(base, ref) if base else ref
                remote.setdefault(uri, RemoteRef(keyword, ref, uri, place))
                continue
            target_base = urldefrag(urljoin(base, ref) if base else ref).url if ref[:1] != "#" else base
            stack.append((contents, target_resolver, target_base, None, False))
        if dialect.ref_overrides_siblings and "$ref" in node:
            continue
        # Reversed, so subschemas are visited (and remote references listed) in document order.
        stack.extend(reversed([
            (child, resolver, base, child_path, located)
            for child, child_path in _children(node, path, keywords)
        ]))
    return tuple(remote.values())


def _children(node: dict[str, Any], path: Path, keywords: _Keywords) -> Iterator[tuple[Any, Path]]:
    for name, value in node.items():
        here: Path = (path, name)
        if name in keywords.single:
            yield value, here
        elif name in keywords.array or (name in keywords.single_or_array and isinstance(value, list)):
            if isinstance(value, list):
                yield from ((item, (here, i)) for i, item in enumerate(value))
        elif name in keywords.single_or_array:
            yield value, here
        elif name in keywords.mapping and isinstance(value, dict):
            yield from ((item, (here, key)) for key, item in value.items())


def _nowhere(exc: Unresolvable | _NoPointee) -> str:
    if isinstance(exc, PointerToNowhere | _NoPointee):
        return f"points nowhere: nothing at {short(exc.ref)} in the schema"
    if isinstance(exc, NoSuchAnchor):
        return f"points nowhere: no anchor {short(exc.anchor)} in the schema"
    return f"points nowhere: {short(exc.ref)} cannot be an anchor"


def _locate(document: Any, target: object, keyword: str) -> str:
    """The JSON path of ``target``'s ``keyword``, found by identity (error path only)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        node, steps = stack.pop()
        if node is target:
            return render_steps((*steps, keyword))
        if isinstance(node, dict):
            stack.extend((value, (*steps, name)) for name, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*steps, i)) for i, value in enumerate(node))
    return f"a subschema reached through a reference ({keyword})"

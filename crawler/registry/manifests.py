"""Pure manifest checks: media types, digests, JSON shape.  No I/O here."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from crawler.errors import InvalidArtifact
from crawler.registry.errors import BadManifest, RegistryNotFound

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
# Registries only serve an OCI manifest to a client that lists its type, and
# we list the index types too so an index answers as itself (and is then
# refused with a clear reason) instead of as a misleading 404.
MANIFEST_ACCEPT: Final = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
PACKAGE_MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# Content types that say nothing about the manifest kind; for these the
# document's own "mediaType" field decides.
GENERIC_TYPES: Final = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

_DIGEST_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
DIGEST_RE: Final = re.compile(r"(sha256|sha512):([0-9a-f]+)")


SCHEMA_ANNOTATION: Final = "dev.akua.package.input-schema"
# docker buildx marks the provenance/SBOM children of an index with this annotation.
REFERENCE_TYPE: Final = "vnd.docker.reference.type"
ATTESTATION: Final = "attestation-manifest"
NO_SCHEMA: Final = "no input schema"
DOCKER_SCHEMA2_NO_SCHEMA: Final = "Docker schema2 manifest: no annotations; push with --format oci"
MULTI_PLATFORM_SCHEMA: Final = "multi-platform index: put the schema annotation on the index"
# A multi-platform index without a schema of its own is looked into (to tell
# "not a package" from "schema in the wrong place") up to this many children.
MAX_INDEX_CHILDREN: Final = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """One manifest as the registry served it: exact bytes, digest, kind, document."""

    digest: str  # "sha256:<hex>" of exactly ``raw``
    media_type: str  # one of PACKAGE_MANIFEST_TYPES | INDEX_TYPES
    raw: bytes = field(repr=False)
    document: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The artifact a reference resolves to, ready for the schema check.

    ``digest`` is the artifact's own digest, the version's ``ref``: the
    manifest itself, the index when the schema is on the index, or the one
    platform manifest of an index.  ``tag_digest`` is what the reference
    points at (what a HEAD answers), recorded in the state; it differs from
    ``digest`` only for a platform manifest inside an index.
    """

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    document: dict[str, Any] = field(repr=False)
    tag_digest: str = ""  # "" means the same as ``digest``
    annotations: dict[str, Any] = field(default_factory=dict, repr=False)
    no_schema_reason: str = NO_SCHEMA  # the skip reason when no schema annotation is present

    def __post_init__(self) -> None:
        if not self.tag_digest:
            object.__setattr__(self, "tag_digest", self.digest)


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """One entry of an index's ``manifests``."""

    digest: str
    media_type: str
    size: int | None
    annotations: dict[str, Any]

    @property
    def attestation(self) -> bool:
        return self.annotations.get(REFERENCE_TYPE) == ATTESTATION


def where(host: str, repository: str, reference: str) -> str:
    """How messages name one manifest: ``host/repo:tag`` or ``host/repo@digest``."""
    separator = "@" if DIGEST_RE.fullmatch(reference) else ":"
    return f"{host}/{repository}{separator}{reference}"


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def valid_digest(value: str) -> bool:
    match = DIGEST_RE.fullmatch(value)
    return match is not None and len(match[2]) == _DIGEST_HEX_LENGTH[match[1]]


def matches(raw: bytes, digest: str) -> bool:
    algorithm, _, hexdigest = digest.partition(":")
    return hashlib.new(algorithm, raw).hexdigest() == hexdigest


def checked_digest(raw: bytes, header: str | None, reference: str, where: str) -> str:
    """sha256 of ``raw``, after checking it against every digest the registry or caller named."""
    computed = "sha256:" + hashlib.sha256(raw).hexdigest()
    header = (header or "").strip()
    for claimed, source in ((header, "Docker-Content-Digest"), (reference, "reference")):
        if valid_digest(claimed) and not matches(raw, claimed):
            raise BadManifest(
                f"{where}: the {source} says {claimed} but the {len(raw)} bytes received "
                f"hash to {computed}"
            )
    return computed


def json_object(
    raw: bytes, where: str, *, what: str, error: type[InvalidArtifact] = BadManifest
) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {what} is not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"{where}: {what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise error(f"{where}: {what} is JSON but not an object ({type(document).__name__})")
    return document


def shape_of(document: dict[str, Any]) -> str:
    """The media type a manifest without ``mediaType`` has by its shape (umoci writes them)."""
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), dict) and isinstance(document.get("layers"), list):
        return OCI_MANIFEST
    return ""


def classify(raw: bytes, content_type: str | None, digest: str, where: str) -> Fetched:
    """``raw`` as a manifest or an index, or ``BadManifest`` naming what it is instead.

    The Content-Type decides; a generic one (``application/json``...) defers
    to the document's ``mediaType`` and, without one, to its shape.
    """
    document = json_object(raw, where, what="manifest")
    media_type = media_type_of(content_type)
    if media_type in GENERIC_TYPES:
        declared = document.get("mediaType")
        media_type = declared if isinstance(declared, str) and declared else shape_of(document)
    if media_type not in PACKAGE_MANIFEST_TYPES and media_type not in INDEX_TYPES:
        raise BadManifest(
            f"{where}: unexpected media type {media_type or '(none)'}: not a package manifest",
            digest=digest,
        )
    return Fetched(digest=digest, media_type=media_type, raw=raw, document=document)


def annotations_of(document: dict[str, Any], where: str, digest: str) -> dict[str, Any]:
    value = document.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadManifest(f"{where}: manifest annotations are not a JSON object", digest=digest)
    return value


def has_schema(annotations: dict[str, Any], keys: Sequence[str]) -> bool:
    return any(key in annotations for key in keys)


def descriptors(index: Fetched, where: str) -> list[Descriptor]:
    """The index's ``manifests`` entries, each checked (digest, media type, size, annotations)."""
    entries = index.document.get("manifests")
    if not isinstance(entries, list):
        raise BadManifest(f"{where}: index without a 'manifests' list", digest=index.digest)
    found: list[Descriptor] = []
    for number, entry in enumerate(entries):
        problem = _descriptor_problem(entry)
        if problem:
            raise BadManifest(f"{where}: index entry {number}: {problem}", digest=index.digest)
        size = entry.get("size")
        found.append(
            Descriptor(
                digest=entry["digest"],
                media_type=entry.get("mediaType") or "",
                size=size if isinstance(size, int) else None,
                annotations=entry.get("annotations") or {},
            )
        )
    return found


def _descriptor_problem(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "not an object"
    digest = entry.get("digest")
    if not isinstance(digest, str) or not valid_digest(digest):
        return f"digest {str(digest)[:80]!r} is not a sha256 or sha512 digest"
    if not isinstance(entry.get("mediaType", ""), str):
        return "mediaType is not a string"
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        return "size is not a non-negative integer"
    if not isinstance(entry.get("annotations", {}), dict):
        return "annotations are not a JSON object"
    return ""


def resolve(
    top: Fetched,
    where: str,
    keys: Sequence[str],
    fetch_child: Callable[[Descriptor], Fetched],
) -> Manifest:
    """The artifact ``top`` stands for, fetching index children only when needed.

    * an image manifest (OCI or Docker schema2) is the artifact;
    * an index whose annotations carry a schema is the artifact;
    * an index with one platform manifest (plus attestation manifests) stands
      for that manifest: its annotations, falling back key by key to its
      descriptor's in the index (where ``buildah manifest add --annotation``
      writes them), then to the index's;
    * an index with several platform manifests and no schema is not a
      package, unless a child carries a schema: then it is a mistake
      (``MULTI_PLATFORM_SCHEMA``);
    * an index with no platform manifest and no schema is not a package.
    """
    annotations = annotations_of(top.document, where, top.digest)
    if top.media_type not in INDEX_TYPES:
        return _artifact(top, annotations, top.digest)
    if has_schema(annotations, keys):
        return _artifact(top, annotations, top.digest)
    platforms = [entry for entry in descriptors(top, where) if not entry.attestation]
    if not platforms:
        return _artifact(
            top, annotations, top.digest,
            reason="index without a platform manifest and no input schema",
        )
    if len(platforms) == 1:
        child = _child(top, platforms[0], where, fetch_child)
        merged = {**annotations, **platforms[0].annotations,
                  **annotations_of(child.document, where, top.digest)}
        return _artifact(child, merged, top.digest)
    for entry in platforms[:MAX_INDEX_CHILDREN]:
        carried = has_schema(entry.annotations, keys) or has_schema(
            annotations_of(_child(top, entry, where, fetch_child).document, where, top.digest),
            keys,
        )
        if carried:
            raise BadManifest(
                f"{where}: {MULTI_PLATFORM_SCHEMA} ({len(platforms)} platform manifests; "
                f"{entry.digest} carries one)",
                digest=top.digest,
            )
    return _artifact(
        top, annotations, top.digest,
        reason=f"multi-platform index ({len(platforms)} platform manifests) without an input schema",
    )


def _child(
    top: Fetched, entry: Descriptor, where: str, fetch_child: Callable[[Descriptor], Fetched]
) -> Fetched:
    try:
        child = fetch_child(entry)
    except BadManifest as exc:
        # Recorded against what the tag points at, so a re-run's HEAD can compare.
        raise BadManifest(exc.reason, digest=top.digest) from None
    except RegistryNotFound:
        raise BadManifest(
            f"{where}: the index lists {entry.digest}, which the registry does not have",
            digest=top.digest,
        ) from None
    if child.media_type in INDEX_TYPES:
        raise BadManifest(
            f"{where}: the index lists {entry.digest}, itself an index (nested indexes are "
            "not packages)",
            digest=top.digest,
        )
    if entry.size is not None and entry.size != len(child.raw):
        raise BadManifest(
            f"{where}: the index says {entry.digest} has {entry.size} bytes, the registry "
            f"served {len(child.raw)}",
            digest=top.digest,
        )
    return child


def _artifact(
    fetched: Fetched, annotations: dict[str, Any], tag_digest: str, *, reason: str | None = None
) -> Manifest:
    if reason is None:
        reason = DOCKER_SCHEMA2_NO_SCHEMA if fetched.media_type == DOCKER_MANIFEST else NO_SCHEMA
    return Manifest(
        digest=fetched.digest,
        media_type=fetched.media_type,
        raw=fetched.raw,
        document=fetched.document,
        tag_digest=tag_digest,
        annotations=annotations,
        no_schema_reason=reason,
    )


__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "PACKAGE_MANIFEST_TYPES",
    "Descriptor",
    "Fetched",
    "Manifest",
    "checked_digest",
    "classify",
    "json_object",
    "media_type_of",
    "resolve",
    "valid_digest",
    "where",
]

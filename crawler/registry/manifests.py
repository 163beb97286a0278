"""Pure manifest checks: media types, digests, JSON shape.  No I/O here."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from crawler.errors import InvalidArtifact
from crawler.registry.errors import BadManifest

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    digest: str  # "sha256:<hex>" of exactly ``raw``
    media_type: str
    raw: bytes = field(repr=False)
    document: dict[str, Any] = field(repr=False)


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


def package_manifest(raw: bytes, content_type: str | None, digest: str, where: str) -> Manifest:
    """``raw`` as a package manifest, or ``BadManifest`` naming what it is instead."""
    document = json_object(raw, where, what="manifest")
    media_type = media_type_of(content_type)
    if media_type in GENERIC_TYPES and isinstance(document.get("mediaType"), str):
        media_type = document["mediaType"]
    if media_type in INDEX_TYPES:
        raise BadManifest(
            f"{where}: unexpected media type {media_type}: an index, not a package manifest",
            digest=digest,
        )
    if media_type not in PACKAGE_MANIFEST_TYPES:
        raise BadManifest(
            f"{where}: unexpected media type {media_type or '(none)'}: not a package manifest",
            digest=digest,
        )
    return Manifest(digest=digest, media_type=media_type, raw=raw, document=document)


__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "PACKAGE_MANIFEST_TYPES",
    "Manifest",
    "checked_digest",
    "json_object",
    "media_type_of",
    "package_manifest",
    "valid_digest",
    "where",
]

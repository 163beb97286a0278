"""An Akua package's content layer: which layer it is, and its ``package.k``, read in memory.

``akua publish`` pushes one image manifest with config
``application/vnd.akua.package.config.v1+json`` and one layer
``application/vnd.akua.package.content.v1.tar+gzip``: a gzip'd tar of the
package directory (``package.k`` and ``akua.toml`` at its root, vendored
charts below).  Akua reads the regular file named exactly ``package.k``
(the last one, should there be several); so does this module.

The blob comes from the registry and may be hostile, so every step is
bounded and nothing touches the disk: the compressed size is capped before
the fetch (``MAX_LAYER_BYTES``), the decompressed stream is counted as it is
read and stopped at ``MAX_UNPACKED_BYTES`` (a gzip bomb costs that much CPU
and no memory), ``package.k`` itself may be at most ``MAX_SOURCE_BYTES``, and
a member whose path or link leaves the package root makes the whole layer
invalid.  Only ``package.k`` is ever held in memory.  Pure; thread-safe.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from crawler.errors import InvalidArtifact

AKUA_CONFIG_MEDIA_TYPE: Final = "application/vnd.akua.package.config.v1+json"
AKUA_CONTENT_MEDIA_TYPE: Final = "application/vnd.akua.package.content.v1.tar+gzip"
PACKAGE_SOURCE: Final = "package.k"

#: The content layer's compressed size, checked before the fetch and while reading.
MAX_LAYER_BYTES: Final = 16 * 1024 * 1024
#: Everything the tar stream decompresses to (headers and every member), at most.
MAX_UNPACKED_BYTES: Final = 64 * 1024 * 1024
#: package.k itself (the schema derived from it is capped at 1 MiB as well).
MAX_SOURCE_BYTES: Final = 1024 * 1024

_SHA256: Final = re.compile(r"sha256:[0-9a-f]{64}")


class PackageContentInvalid(InvalidArtifact):
    """The content layer is unusable; the reason names the layer and the cause."""


@dataclass(frozen=True, slots=True)
class ContentLayer:
    digest: str  # sha256:<hex>
    size: int


def content_layer(document: Mapping[str, Any]) -> ContentLayer | None:
    """The Akua content layer of a manifest, or None when it has none (not an Akua package).

    Raises PackageContentInvalid for a layer of Akua's type that cannot be
    fetched safely: several of them, a malformed digest or size, or one over
    ``MAX_LAYER_BYTES``.
    """
    layers = document.get("layers")
    if not isinstance(layers, list):
        return None
    ours = [
        layer
        for layer in layers
        if isinstance(layer, Mapping) and layer.get("mediaType") == AKUA_CONTENT_MEDIA_TYPE
    ]
    if not ours:
        return None
    if len(ours) > 1:
        raise PackageContentInvalid(
            f"manifest has {len(ours)} layers of type {AKUA_CONTENT_MEDIA_TYPE}; a package has one"
        )
    digest, size = ours[0].get("digest"), ours[0].get("size")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PackageContentInvalid(
            f"package content layer has no usable sha256 digest ({str(digest)[:80]!r})"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PackageContentInvalid(f"package content layer {digest} has no usable size")
    if size > MAX_LAYER_BYTES:
        raise PackageContentInvalid(
            f"package content layer {digest} is {size} bytes, over the limit of "
            f"{MAX_LAYER_BYTES} bytes"
        )
    return ContentLayer(digest, size)


class _Overflow(Exception):
    pass


class _Counted(io.RawIOBase):
    """A read-only stream that refuses to yield more than ``limit`` bytes."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(min(len(view), self._limit + 1 - self.total))
        self.total += len(data)
        if self.total > self._limit:
            raise _Overflow
        view[: len(data)] = data
        return len(data)


def read_package_source(
    blob: bytes,
    digest: str,
    *,
    max_unpacked: int = MAX_UNPACKED_BYTES,
    max_source: int = MAX_SOURCE_BYTES,
) -> str:
    """The text of ``package.k`` in the content layer ``blob`` (named ``digest`` in reasons).

    Raises PackageContentInvalid with a precise reason otherwise.
    """
    where = f"package content layer {digest}"
    stream = _Counted(gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb"), max_unpacked)
    source: bytes | None = None
    elsewhere: list[str] = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as archive:
            for member in archive:
                _check_inside(member, where)
                # "./package.k" (what `tar -C pkg -czf layer .` writes) is the root file too,
                # as for every tar tool that unpacks it.
                if posixpath.normpath(member.name) != PACKAGE_SOURCE:
                    if posixpath.basename(member.name.rstrip("/")) == PACKAGE_SOURCE:
                        elsewhere.append(member.name)
                    continue
                if not member.isreg():
                    raise PackageContentInvalid(
                        f"{where}: {PACKAGE_SOURCE} is a {_kind(member)}, not a regular file"
                    )
                if member.size > max_source:
                    raise PackageContentInvalid(
                        f"{where}: {PACKAGE_SOURCE} is {member.size} bytes, over the limit of "
                        f"{max_source} bytes"
                    )
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file always has content
                source = extracted.read(max_source + 1)
    except _Overflow:
        raise PackageContentInvalid(
            f"{where}: decompresses to more than {max_unpacked} bytes (a gzip bomb, or a "
            "package over the limit)"
        ) from None
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise PackageContentInvalid(f"{where}: not a gzip stream ({_cause(exc)})") from None
    except tarfile.TarError as exc:
        raise PackageContentInvalid(f"{where}: not a tar archive ({_cause(exc)})") from None
    if source is None:
        hint = f" (found {elsewhere[0]!r}, not at the root)" if elsewhere else ""
        raise PackageContentInvalid(f"{where}: no {PACKAGE_SOURCE} at the package root{hint}")
    try:
        return source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageContentInvalid(
            f"{where}: {PACKAGE_SOURCE} is not UTF-8 (byte {exc.start})"
        ) from None


def _check_inside(member: tarfile.TarInfo, where: str) -> None:
    if _escapes(member.name):
        raise PackageContentInvalid(
            f"{where}: member {member.name[:200]!r} lies outside the package root"
        )
    if member.issym() and _escapes(posixpath.join(posixpath.dirname(member.name), member.linkname)):
        raise PackageContentInvalid(
            f"{where}: symbolic link {member.name[:200]!r} points outside the package root "
            f"({member.linkname[:200]!r})"
        )
    if member.islnk() and _escapes(member.linkname):
        raise PackageContentInvalid(
            f"{where}: hard link {member.name[:200]!r} points outside the package root "
            f"({member.linkname[:200]!r})"
        )


def _escapes(path: str) -> bool:
    if path.startswith("/") or "\x00" in path:
        return True
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "directory"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    return "special file"


def _cause(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


__all__ = [
    "AKUA_CONFIG_MEDIA_TYPE",
    "AKUA_CONTENT_MEDIA_TYPE",
    "MAX_LAYER_BYTES",
    "MAX_SOURCE_BYTES",
    "MAX_UNPACKED_BYTES",
    "PACKAGE_SOURCE",
    "ContentLayer",
    "PackageContentInvalid",
    "content_layer",
    "read_package_source",
]

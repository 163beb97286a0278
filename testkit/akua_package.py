"""Artifacts laid out exactly as ``akua publish`` pushes them, and hostile variants.

``akua publish`` (akuapkg 0.8.x) pushes:

* a gzip'd tar of the package directory, members in sorted path order,
  GNU headers, mode 0644, ``akua.toml`` and ``package.k`` at the root;
* a config blob ``{"akuaVersion":"<version>"}`` of type
  ``application/vnd.akua.package.config.v1+json``;
* a compact image manifest: ``schemaVersion``, ``mediaType``, ``config``,
  ``layers`` (one, ``application/vnd.akua.package.content.v1.tar+gzip``), each
  descriptor as ``mediaType``, ``size``, ``digest``, and **no annotations**.

``seed_published`` stores such an artifact through a ``Seeder``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import struct
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Final

from testkit.registry import AKUA_CONFIG, AKUA_CONTENT, OCI_MANIFEST, Seeder

AKUA_VERSION: Final = "0.8.20"
DEFAULT_AKUA_TOML: Final = (
    b'[package]\nname = "example"\nversion = "0.1.0"\nedition = "akua.dev/v1alpha1"\n'
)


def package_tarball(files: Mapping[str, bytes | str], *, mtime: int = 0) -> bytes:
    """The content layer for ``files`` (path -> content), as akua packs a workspace."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(files):
            content = files[path]
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


#: A gzip member header: deflate, no flags, no time, maximum compression, Unix.
GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"


@functools.cache  # the bytes never change: one bomb of a size per process
def gzip_bomb(member_bytes: int, *, name: str = "vendor/zeros") -> bytes:
    """A content layer whose one member decompresses to ``member_bytes`` zeros (about 1000:1).

    Deflating hundreds of MiB takes seconds, so one MiB of zeros is deflated once, after a
    full flush (which empties the compressor's window, so the same input always deflates to
    the same bytes), and those bytes are repeated; only the gzip trailer's CRC-32 is
    computed over all of it.
    """
    header = tarfile.TarInfo(name)
    header.size = member_bytes
    head = header.tobuf(format=tarfile.GNU_FORMAT)
    block = bytes(1024 * 1024)
    whole, rest = divmod(member_bytes, len(block))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the framing is written here
    parts = [GZIP_HEADER, deflate.compress(head), deflate.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(head)
    if whole:
        repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
        parts.append(repeated * whole)
        for _ in range(whole):
            crc = zlib.crc32(block, crc)
    parts += [deflate.compress(block[:rest]), deflate.flush()]
    crc = zlib.crc32(block[:rest], crc)
    parts.append(struct.pack("<II", crc, (len(head) + member_bytes) & 0xFFFFFFFF))
    return b"".join(parts)


def publish_config(version: str = AKUA_VERSION) -> bytes:
    return json.dumps({"akuaVersion": version}, separators=(",", ":")).encode()


def publish_manifest(config: bytes, layer: bytes, *, layer_media_type: str = AKUA_CONTENT) -> bytes:
    """The manifest bytes akua publish writes for this config and layer."""
    def descriptor(media_type: str, blob: bytes) -> dict[str, object]:
        return {
            "mediaType": media_type,
            "size": len(blob),
            "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        }

    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(AKUA_CONFIG, config),
        "layers": [descriptor(layer_media_type, layer)],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def package_files(
    package_k: str, *, extra: Mapping[str, bytes | str] | None = None
) -> dict[str, bytes | str]:
    """A minimal package directory: akua.toml, package.k and whatever else is given."""
    return {"akua.toml": DEFAULT_AKUA_TOML, "package.k": package_k, **(extra or {})}


def seed_published(
    seeder: Seeder,
    repo: str,
    tags: Sequence[str],
    *,
    package_k: str | None = None,
    layer: bytes | None = None,
) -> str:
    """Store one artifact as akua publish lays it out; return the manifest digest.

    Give ``package_k`` (packed with an akua.toml) or a ready ``layer`` (hostile ones).
    """
    if layer is None:
        if package_k is None:
            raise ValueError("give package_k or layer")
        layer = package_tarball(package_files(package_k))
    config = publish_config()
    return seeder.add_artifact(
        repo,
        tags,
        config_bytes=config,
        layer_bytes=layer,
        manifest_bytes=publish_manifest(config, layer),
    )


__all__ = [
    "AKUA_VERSION",
    "gzip_bomb",
    "package_files",
    "package_tarball",
    "publish_config",
    "publish_manifest",
    "seed_published",
]

"""The Akua content layer: which layer, and package.k read in memory under caps."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tracemalloc

import pytest

from crawler.package_content import (
    AKUA_CONTENT_MEDIA_TYPE,
    MAX_LAYER_BYTES,
    ContentLayer,
    PackageContentInvalid,
    content_layer,
    read_package_source,
)
from testkit.akua_package import gzip_bomb, package_files, package_tarball, publish_config, publish_manifest

DIGEST = "sha256:" + "ab" * 32


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            payload = (data or {}).get(member.name)
            archive.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def _file(name: str, payload: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def test_the_layer_akua_publish_writes_is_found() -> None:
    layer = package_tarball(package_files("schema Input:\n    a: int\n"))
    document = json.loads(publish_manifest(publish_config(), layer))
    found = content_layer(document)
    assert found is not None
    assert found.size == len(layer)
    assert found.digest.startswith("sha256:") and len(found.digest) == 71


@pytest.mark.parametrize(
    "layers",
    [None, [], [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 1}]],
)
def test_a_manifest_without_akua_content_is_not_a_package(layers: object) -> None:
    document = {} if layers is None else {"layers": layers}
    assert content_layer(document) is None


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        ({"digest": "sha256:xyz", "size": 1}, "no usable sha256 digest"),
        ({"digest": DIGEST, "size": "1"}, "no usable size"),
        ({"digest": DIGEST, "size": -1}, "no usable size"),
        ({"digest": DIGEST, "size": MAX_LAYER_BYTES + 1}, f"over the limit of {MAX_LAYER_BYTES} bytes"),
    ],
)
def test_an_unusable_content_descriptor_is_invalid(layer: dict[str, object], reason: str) -> None:
    document = {"layers": [{"mediaType": AKUA_CONTENT_MEDIA_TYPE, **layer}]}
    with pytest.raises(PackageContentInvalid, match=reason):
        content_layer(document)


def test_two_content_layers_are_invalid() -> None:
    one = {"mediaType": AKUA_CONTENT_MEDIA_TYPE, "digest": DIGEST, "size": 1}
    with pytest.raises(PackageContentInvalid, match="2 layers of type"):
        content_layer({"layers": [one, one]})
    assert content_layer({"layers": [one]}) == ContentLayer(DIGEST, 1)


def test_package_k_is_read_from_the_root() -> None:
    source = "schema Input:\n    name: str = \"é\"\n"
    layer = package_tarball(
        package_files(source, extra={"vendor/chart/package.k": "other", "README.md": "hi"})
    )
    assert read_package_source(layer, DIGEST) == source


@pytest.mark.parametrize("name", ["./package.k", ".//package.k"])
def test_package_k_spelled_from_the_current_directory_is_at_the_root(name: str) -> None:
    member, data = _file(name, b"schema Input:\n    name: str\n")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        archive.addfile(member, io.BytesIO(data))
    assert read_package_source(gzip.compress(raw.getvalue()), DIGEST) == data.decode()


def test_the_last_package_k_wins_as_in_akua() -> None:
    first, second = _file("package.k", b"first"), _file("package.k", b"second")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        archive.addfile(first[0], io.BytesIO(first[1]))
        archive.addfile(second[0], io.BytesIO(second[1]))
    layer = gzip.compress(raw.getvalue())
    assert read_package_source(layer, DIGEST) == "second"


def test_missing_package_k_names_where_one_was_found() -> None:
    layer = package_tarball({"akua.toml": "x", "sub/package.k": "y"})
    with pytest.raises(PackageContentInvalid) as caught:
        read_package_source(layer, DIGEST)
    assert caught.value.reason == (
        f"package content layer {DIGEST}: no package.k at the package root (found 'sub/package.k', "
        "not at the root)"
    )
    with pytest.raises(PackageContentInvalid, match=r"no package\.k at the package root$"):
        read_package_source(package_tarball({"akua.toml": "x"}), DIGEST)


@pytest.mark.parametrize("name", ["../package.k", "/etc/passwd", "a/../../b", "./../x"])
def test_a_member_outside_the_root_is_invalid(name: str) -> None:
    info, payload = _file(name, b"x")
    ok, source = _file("package.k", b"schema Input:\n    a: int\n")
    layer = _tar([ok, info], {name: payload, "package.k": source})
    with pytest.raises(PackageContentInvalid, match="lies outside the package root"):
        read_package_source(layer, DIGEST)


def test_links_out_of_the_root_are_invalid() -> None:
    link = tarfile.TarInfo("chart")
    link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
    with pytest.raises(PackageContentInvalid, match="symbolic link 'chart' points outside"):
        read_package_source(_tar([link]), DIGEST)
    hard = tarfile.TarInfo("h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/shadow"
    with pytest.raises(PackageContentInvalid, match="hard link 'h' points outside"):
        read_package_source(_tar([hard]), DIGEST)
    inside = tarfile.TarInfo("vendor/link")
    inside.type, inside.linkname = tarfile.SYMTYPE, "../akua.toml"
    ok, source = _file("package.k", b"src")
    assert read_package_source(_tar([inside, ok], {"package.k": source}), DIGEST) == "src"


def test_package_k_as_a_symlink_is_not_read() -> None:
    link = tarfile.TarInfo("package.k")
    link.type, link.linkname = tarfile.SYMTYPE, "other.k"
    with pytest.raises(PackageContentInvalid, match=r"package\.k is a symbolic link, not a regular file"):
        read_package_source(_tar([link]), DIGEST)


def test_a_huge_package_k_is_refused_by_its_header() -> None:
    big = b"#" * (2 * 1024 * 1024)
    layer = package_tarball({"package.k": big})
    with pytest.raises(PackageContentInvalid, match=r"package.k is 2097152 bytes, over the limit of 1048576"):
        read_package_source(layer, DIGEST)


def test_a_gzip_bomb_stops_at_the_unpacked_cap_without_holding_it() -> None:
    # 256 MiB of zeros in a member the reader never keeps, gzip'd to about 256 KiB.
    bomb = gzip_bomb(256 * 1024**2)
    assert len(bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(PackageContentInvalid, match="decompresses to more than 67108864 bytes"):
            read_package_source(bomb, DIGEST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"not gzip at all", "not a gzip stream"),
        (gzip.compress(b"not a tar archive, only text" * 40, mtime=0), "not a tar archive"),
        (package_tarball(package_files("x"))[:-30], "not a gzip stream"),
    ],
    ids=["not-gzip", "gzip-of-text", "truncated-package"],  # the same on every xdist worker
)
def test_garbage_is_invalid(blob: bytes, reason: str) -> None:
    with pytest.raises(PackageContentInvalid, match=reason):
        read_package_source(blob, DIGEST)


def test_package_k_must_be_utf8() -> None:
    layer = package_tarball({"package.k": b"schema Input:\n    a: str = \"\xff\"\n"})
    with pytest.raises(PackageContentInvalid, match=r"package\.k is not UTF-8 \(byte 28\)"):
        read_package_source(layer, DIGEST)

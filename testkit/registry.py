"""A throwaway OCI registry on loopback, and a fast way to fill it.

Used by the tests, the README demo and the benchmark, so it lives in the
package rather than under tests/.

``LocalRegistry`` runs Debian's ``docker-registry`` (distribution 2.8) as a
direct child process.  ``Seeder`` writes the registry's on-disk storage
layout directly instead of pushing over HTTP: pushing thousands of
artifacts through the API takes minutes, writing the files takes
seconds, and the registry reads its storage afresh on every request (no
cache is configured), so seeding works before or after ``start()``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

REGISTRY_BINARY: Final = Path("/usr/bin/docker-registry")
INSTALL_HINT: Final = (
    "docker-registry not found: install it with `apt-get install -y docker-registry`"
)
START_DEADLINE_S: Final = 15.0
STOP_GRACE_S: Final = 5.0
# htpasswd entries must be bcrypt; cost 4 is the minimum and keeps each
# login check (the registry verifies on every request) cheap in tests.
BCRYPT_COST: Final = 4

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
AKUA_CONFIG: Final = "application/vnd.akua.package.config.v1+json"
AKUA_CONTENT: Final = "application/vnd.akua.package.content.v1.tar+gzip"
#: The default layer type of seeded artifacts: a plain image layer, so an artifact
#: without a schema annotation is "not a package" (skipped).  Artifacts laid out as
#: ``akua publish`` pushes them (the Akua content layer, package.k inside) come from
#: ``testkit.akua_package``.
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
INPUT_SCHEMA_ANNOTATION: Final = "dev.akua.package.input-schema"
DESCRIPTION_ANNOTATION: Final = "org.opencontainers.image.description"


def _empty_tar_gz() -> bytes:
    # A real (empty) tar.gz, built deterministically (mtime 0) so that every
    # seeded artifact shares one layer blob and the digest is stable.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT):
        pass
    return gzip.compress(raw.getvalue(), mtime=0)


DEFAULT_LAYER: Final = _empty_tar_gz()
DEFAULT_CONFIG: Final = b"{}"


class RegistryBinaryMissing(RuntimeError):
    """``docker-registry`` is not installed; the message says how to install it."""


class RegistryStartError(RuntimeError):
    """The registry process exited or did not answer in time; carries its log tail."""


def find_registry_binary(path: Path = REGISTRY_BINARY) -> Path:
    """The registry executable, or ``RegistryBinaryMissing`` with the install hint."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RegistryBinaryMissing(INSTALL_HINT)
    return path


def free_loopback_port() -> int:
    """A port nothing listens on right now (bind port 0, read it, close).

    Another process can take it before it is used, and with several xdist workers
    that happens: tests bind port 0 and keep the socket instead (``LocalRegistry``
    has the registry bind port 0 and reads the port back with ``listening_port``;
    ``refused_host`` in tests/tripwire.py keeps a port bound that nothing listens on).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening_port(pid: int) -> int | None:
    """The port of the TCP socket process ``pid`` listens on, or None while it has none.

    Read from Linux: the process's socket inodes (its fd links in /proc) matched with the
    listening TCP sockets of its network namespace (one of them, should it have several).
    Those come from the kernel's sock_diag interface, which hands over only the listening
    ones; reading /proc/PID/net/tcp instead (the fallback where netlink is refused or the
    process is in another network namespace) makes the kernel walk its whole TCP table,
    milliseconds of CPU for each of the hundreds of polls of a test session.
    """
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    if not inodes:  # no socket yet: nothing to look up
        return None
    global _sock_diag_failed
    listening: dict[int, int] | None = None
    if not _sock_diag_failed and _same_network_namespace(pid):
        try:
            listening = listening_tcp_ports()
        except OSError:
            _sock_diag_failed = True  # refused or silent once: /proc from then on
    if listening is None:
        listening = listening_tcp_ports_from_proc(pid)
    return next((port for inode, port in listening.items() if inode in inodes), None)


_sock_diag_failed = False


def _same_network_namespace(pid: int) -> bool:
    """sock_diag answers for the caller's network namespace; /proc/PID/net for PID's."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): one dump request per address family.
_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST_DUMP: Final = 0x1 | 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_TCP_LISTEN: Final = 10
_NLMSG_HEADER: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_DIAG_REQUEST: Final = struct.Struct("=BBBxI48x")  # family, protocol, ext, states, (socket id)
_DIAG_SPORT: Final = struct.Struct("!H")  # the message's source port, at offset 4
_DIAG_INODE: Final = struct.Struct("=I")  # its inode, at offset 68


def listening_tcp_ports() -> dict[int, int]:
    """Socket inode -> port of every listening TCP socket (IPv4 and IPv6) of this network
    namespace, from sock_diag; OSError where netlink is unavailable, silent or garbled."""
    found: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(0.5)  # the kernel answers a dump while it is sent: silence is failure
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            body = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN)
            nl.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY,
                                       _NLM_F_REQUEST_DUMP, sequence, 0) + body)
            done = False
            while not done:
                data = nl.recv(65536)
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(data):
                    length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                    if length < _NLMSG_HEADER.size:
                        raise OSError(f"sock_diag sent a message of {length} bytes")
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        raise OSError(f"sock_diag refused the dump of address family {family}")
                    message = offset + _NLMSG_HEADER.size
                    (port,) = _DIAG_SPORT.unpack_from(data, message + 4)
                    (inode,) = _DIAG_INODE.unpack_from(data, message + 68)
                    found[inode] = port
                    offset += (length + 3) & ~3
    return found


def listening_tcp_ports_from_proc(pid: int) -> dict[int, int]:
    """The same as ``listening_tcp_ports``, read from /proc/PID/net/tcp and tcp6."""
    found: dict[int, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as entries:
                rows = entries.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # 0A: LISTEN
                found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def package_annotations(
    schema: Mapping[str, Any] | str | None, description: str | None
) -> dict[str, str]:
    """Manifest annotations of a typical Akua package.

    A mapping schema is serialised compactly with sorted keys so the same
    schema always yields the same manifest bytes (and digest).
    """
    annotations: dict[str, str] = {}
    if schema is not None:
        annotations[INPUT_SCHEMA_ANNOTATION] = (
            schema
            if isinstance(schema, str)
            else json.dumps(schema, separators=(",", ":"), sort_keys=True)
        )
    if description is not None:
        annotations[DESCRIPTION_ANNOTATION] = description
    return annotations


def build_manifest(
    *,
    config: bytes,
    config_media_type: str,
    layer: bytes,
    layer_media_type: str = OCI_LAYER,
    annotations: Mapping[str, str] | None = None,
    media_type: str = OCI_MANIFEST,
) -> bytes:
    """The bytes of a schema 2 image manifest with one config and one layer."""
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": config_media_type,
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": layer_media_type,
                "digest": sha256_digest(layer),
                "size": len(layer),
            }
        ],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return json.dumps(document, separators=(",", ":")).encode()


ATTESTATION_ANNOTATIONS: Final = {"vnd.docker.reference.type": "attestation-manifest"}


def index_entry(
    manifest: bytes,
    *,
    media_type: str = OCI_MANIFEST,
    platform: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One ``manifests`` entry of an index, pointing at ``manifest``'s bytes."""
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
    }
    if platform is not None:
        entry["platform"] = dict(platform)
    if annotations:
        entry["annotations"] = dict(annotations)
    return entry


def build_index(
    entries: Sequence[Mapping[str, Any]],
    *,
    annotations: Mapping[str, str] | None = None,
    media_type: str | None = OCI_INDEX,
) -> bytes:
    """The bytes of an image index (or, with the Docker type, a manifest list)."""
    document: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        document["mediaType"] = media_type
    document["manifests"] = [dict(entry) for entry in entries]
    if annotations:
        document["annotations"] = dict(annotations)
    return json.dumps(document, separators=(",", ":")).encode()


class Seeder:
    """Writes artifacts straight into a registry's filesystem storage.

    Layout (distribution 2.x): every blob and every manifest's bytes live
    once under ``blobs/sha256/<hex[:2]>/<hex>/data``; a repository refers
    to them through ``link`` files holding ``sha256:<hex>`` (no newline).

    Speed (thousands of artifacts a second on tmpfs) comes from skipping
    work already done in this Seeder's lifetime: each blob and each
    immutable link file is written once, directories already made are
    remembered, and paths are plain strings written with ``os.open``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._v2 = os.path.join(root, "docker", "registry", "v2")
        self._blobs = os.path.join(self._v2, "blobs", "sha256")
        self._done: set[str] = set()  # files whose content can never change
        self._dirs: set[str] = set()

    def add_blob(self, data: bytes) -> str:
        """Store ``data`` once and return its digest."""
        hexdigest = hashlib.sha256(data).hexdigest()
        folder = os.path.join(self._blobs, hexdigest[:2], hexdigest)
        self._write_once(folder, "data", data)
        return "sha256:" + hexdigest

    def add_artifact(
        self,
        repo: str,
        tags: Sequence[str],
        *,
        annotations: Mapping[str, str] | None = None,
        config_media_type: str = AKUA_CONFIG,
        config_bytes: bytes = DEFAULT_CONFIG,
        layer_bytes: bytes = DEFAULT_LAYER,
        layer_media_type: str = OCI_LAYER,
        manifest_bytes: bytes | None = None,
        media_type: str = OCI_MANIFEST,
    ) -> str:
        """Store one artifact under ``repo`` with ``tags``; return the manifest digest.

        ``manifest_bytes`` replaces the generated manifest verbatim (config and
        layer are still stored) so tests can seed broken or odd manifests.
        """
        repo_dir = self._repository(repo)
        for blob in (config_bytes, layer_bytes):
            self._link(os.path.join(repo_dir, "_layers"), self.add_blob(blob))
        if manifest_bytes is None:
            manifest_bytes = build_manifest(
                config=config_bytes,
                config_media_type=config_media_type,
                layer=layer_bytes,
                layer_media_type=layer_media_type,
                annotations=annotations,
                media_type=media_type,
            )
        digest = self.add_blob(manifest_bytes)
        self._link(os.path.join(repo_dir, "_manifests", "revisions"), digest)
        for tag in tags:
            self._tag(repo_dir, tag, digest)
        return digest

    def add_index(
        self,
        repo: str,
        tags: Sequence[str],
        children: Sequence[tuple[bytes, Mapping[str, Any]]],
        *,
        annotations: Mapping[str, str] | None = None,
        media_type: str | None = OCI_INDEX,
    ) -> str:
        """Store each child manifest (untagged) and an index over them; return its digest.

        ``children`` pairs each child's manifest bytes with the keyword
        arguments of ``index_entry`` (media type, platform, annotations).
        """
        entries = []
        for manifest, entry in children:
            self.add_artifact(repo, (), manifest_bytes=manifest)
            entries.append(index_entry(manifest, **entry))
        index = build_index(entries, annotations=annotations, media_type=media_type)
        return self.add_artifact(repo, tags, manifest_bytes=index)

    def tag(self, repo: str, tag: str, digest: str) -> None:
        """Point ``repo:tag`` at a manifest already stored in ``repo``."""
        self._tag(self._repository(repo), tag, digest)

    def add_empty_repository(self, repo: str) -> str:
        """A repository holding one untagged manifest, as after deleting all its tags.

        distribution 2.8.2 answers tags/list for it with ``"tags": null``
        because the (empty) ``_manifests/tags`` directory exists; without that
        directory it answers 404 NAME_UNKNOWN instead (tests/test_registry.py
        checks both).  Returns the digest of the untagged manifest.
        """
        digest = self.add_artifact(repo, ())
        self._mkdir(os.path.join(self._repository(repo), "_manifests", "tags"))
        return digest

    def add_listed_repository(self, repo: str) -> None:
        """A repository only the catalog sees: an empty ``_layers`` folder, nothing else.

        distribution 2.8.2 builds the catalog by walking the repositories tree and
        lists every folder holding ``_layers`` (an empty ``_manifests`` is not
        enough); nothing inside is read.  Two directories instead of an artifact's
        twenty files and folders, for catalog tests that need a thousand names and
        never read a tag or a manifest.
        """
        self._mkdir(os.path.join(self._repository(repo), "_layers"))

    def _repository(self, repo: str) -> str:
        # Refuse names that would write outside the storage tree.
        if not repo or repo.startswith("/") or ".." in repo.split("/"):
            raise ValueError(f"not a repository name: {repo!r}")
        return os.path.join(self._v2, "repositories", repo)

    def _tag(self, repo_dir: str, tag: str, digest: str) -> None:
        if not tag or "/" in tag or tag.startswith("."):
            raise ValueError(f"not a tag: {tag!r}")
        tag_dir = os.path.join(repo_dir, "_manifests", "tags", tag)
        # "current" moves when a tag is re-pointed, so it is always rewritten.
        self._mkdir(os.path.join(tag_dir, "current"))
        self._write(os.path.join(tag_dir, "current", "link"), digest.encode())
        self._link(os.path.join(tag_dir, "index"), digest)

    def _link(self, parent: str, digest: str) -> None:
        algorithm, _, hexdigest = digest.partition(":")
        self._write_once(os.path.join(parent, algorithm, hexdigest), "link", digest.encode())

    def _write_once(self, folder: str, name: str, data: bytes) -> None:
        path = os.path.join(folder, name)
        if path not in self._done:
            self._mkdir(folder)
            self._write(path, data)
            self._done.add(path)

    def _mkdir(self, folder: str) -> None:
        # os.makedirs stats every level on each call; this remembers what
        # exists and makes missing parents first, so a new directory costs
        # one mkdir call.
        if folder in self._dirs:
            return
        parent = os.path.dirname(folder)
        if parent != folder:
            self._mkdir(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        self._dirs.add(folder)

    @staticmethod
    def _write(path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def write_htpasswd(path: Path, users: Mapping[str, str]) -> None:
    """Write an htpasswd file with bcrypt entries (the only kind the registry takes)."""
    try:
        import bcrypt
    except ImportError as exc:  # only this optional feature needs it
        raise RuntimeError(
            "htpasswd users need the bcrypt package: pip install 'akua-crawler[test]'"
        ) from exc
    lines = []
    for user, password in users.items():
        if ":" in user or "\n" in user:
            raise ValueError(f"htpasswd user names cannot hold ':' or newlines: {user!r}")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST))
        lines.append(f"{user}:{hashed.decode()}\n")
    path.write_text("".join(lines))


def _config_text(
    root: Path, port: int, htpasswd: Path | None, token_auth: Mapping[str, Any] | None = None,
    tls: Mapping[str, Any] | None = None,
) -> str:
    # JSON is valid YAML, and json.dumps quotes paths safely.
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "local-test-only"},
    }
    if tls is not None:  # {"certificate": PEM path, "key": PEM path, "clientcas": [PEM paths]}
        config["http"]["tls"] = dict(tls)
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
    if token_auth is not None:  # e.g. testkit.token_server.TokenServer.registry_auth()
        config["auth"] = dict(token_auth)
    return json.dumps(config, indent=2)


def _registry_environment() -> dict[str, str]:
    """The registry's environment: ours, with Go's collector running less often.

    With Go's default (GOGC=100) the collector takes about 30% of the
    registry's CPU under a crawl (measured: 5.9 s against 4.1 s of CPU for
    2,400 manifest reads at GOGC=400).  The registry shares this machine's
    cores with the crawler under test and the Akua double, so that is CPU
    the crawler does not get; a registry in production runs elsewhere.  An
    explicit GOGC in the environment wins.
    """
    return {**os.environ, "GOGC": os.environ.get("GOGC", "400")}


def _answers(port: int, timeout_s: float, tls: ssl.SSLContext | None = None) -> bool:
    """Whether something speaks HTTP on the port (401 counts: auth is on)."""
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout_s, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status in (200, 401)
    except OSError:
        return False
    finally:
        conn.close()


class LocalRegistry:
    """docker-registry on a free loopback port, for the length of a ``with`` block.

    ``root`` is the storage directory; give one to seed it before starting
    (and to keep it afterwards), or leave it None for a fresh one that is
    removed on exit.  ``workdir`` holds the config, the htpasswd file and the
    process log; None means a temporary directory removed on exit.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
        token_auth: Mapping[str, Any] | None = None,
        tls: Mapping[str, Any] | None = None,
        tls_probe: ssl.SSLContext | None = None,
        workdir: Path | None = None,
        binary: Path | None = None,
        start_deadline_s: float = START_DEADLINE_S,
    ) -> None:
        self._binary = find_registry_binary(binary or REGISTRY_BINARY)
        self._owned_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="akua-registry-"))
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "storage" if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        if self.users and token_auth is not None:
            raise ValueError("give htpasswd users or token auth, not both")
        self.token_auth = dict(token_auth) if token_auth is not None else None
        # Served over TLS with these files; the readiness probe connects with ``tls_probe``
        # (a context trusting the test CA, holding a client certificate when one is required).
        self.tls = dict(tls) if tls is not None else None
        if self.tls is not None and tls_probe is None:
            raise ValueError("a TLS registry needs tls_probe, a context that can connect to it")
        self._tls_probe = tls_probe
        self.log_path = self.workdir / "registry.log"
        self._start_deadline_s = start_deadline_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        state = f"pid={self._process.pid}" if self._process else "stopped"
        return f"LocalRegistry(root={str(self.root)!r}, port={self._port}, {state})"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the local registry is not started")
        return self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def seeder(self) -> Seeder:
        return Seeder(self.root)

    def start(self) -> Self:
        """Start the process and return once ``GET /v2/`` answers."""
        if self._process is not None:
            raise RuntimeError("the local registry is already running")
        htpasswd: Path | None = None
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            write_htpasswd(htpasswd, self.users)
        # Port 0: the registry binds a port the kernel picks and keeps it from then on, so
        # no other test (or worker) can take it between our choosing it and its bind.
        self._port = None
        config = self.workdir / "config.yml"
        config.write_text(_config_text(self.root.resolve(), 0, htpasswd, self.token_auth, self.tls))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self._binary), "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_registry_environment(),
            )
        try:
            self._wait_ready()
        except BaseException:
            # The error already carries the log tail; leave nothing running.
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        # Bounded poll on the real condition (an HTTP answer), not a fixed sleep.
        # First the port its own listening socket has, then an HTTP answer on it.
        assert self._process is not None
        deadline = time.monotonic() + self._start_deadline_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RegistryStartError(
                    f"docker-registry exited with status {self._process.returncode} "
                    f"before answering; log tail:\n{self.log_tail()}"
                )
            if self._port is None:
                self._port = listening_port(self._process.pid)
            if self._port is not None and _answers(self._port, timeout_s=1.0, tls=self._tls_probe):
                return
            time.sleep(0.02)
        where = "" if self._port is None else f" on 127.0.0.1:{self._port}"
        raise RegistryStartError(
            f"docker-registry did not answer GET /v2/{where} within "
            f"{self._start_deadline_s:g}s; log tail:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop our own child by its PID: terminate, wait, then kill if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if cleanup and self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> Self:
        """Stop and start again over the same storage (a new port may be picked)."""
        self.stop(cleanup=False)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "AKUA_CONFIG",
    "AKUA_CONTENT",
    "ATTESTATION_ANNOTATIONS",
    "DEFAULT_LAYER",
    "DESCRIPTION_ANNOTATION",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INPUT_SCHEMA_ANNOTATION",
    "INSTALL_HINT",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "LocalRegistry",
    "RegistryBinaryMissing",
    "RegistryStartError",
    "Seeder",
    "build_index",
    "build_manifest",
    "find_registry_binary",
    "free_loopback_port",
    "index_entry",
    "listening_port",
    "listening_tcp_ports",
    "listening_tcp_ports_from_proc",
    "package_annotations",
    "sha256_digest",
    "write_htpasswd",
]

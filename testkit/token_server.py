"""A Docker-style token server on loopback, issuing scoped RS256 tokens.

Registries that use token auth (Docker Hub, GHCR, Harbor) send a client with
a ``Bearer`` challenge to a token server (the *realm*), which authenticates
the user with Basic credentials and returns a signed JWT whose ``access``
claim lists what the user may do.  The registry checks the signature against
a certificate it trusts and answers 401 ``insufficient_scope`` for anything
the token does not grant.

``TokenServer`` is that server for tests: it grants a requested scope
(``repository:team/app:pull``, ``registry:catalog:*``) only when it is in the
user's grant set, so a test can leave one repository out.  The signing key
and the certificate come from the ``openssl`` command line tool, made once per
process and copied into each server's workdir; the key id is the libtrust
fingerprint distribution looks tokens up by.  ``registry_auth``
gives the ``auth`` section for ``LocalRegistry(token_auth=...)``.

It listens on any loopback address (``host="127.0.0.2"`` puts the realm on
another host than a registry on 127.0.0.1) and records every request it got,
with or without credentials.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlsplit

from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

OPENSSL_HINT: Final = "openssl not found: install it with `apt-get install -y openssl`"
SERVICE: Final = "akua-test-registry"
ISSUER: Final = "akua-test-token-server"
TOKEN_LIFETIME_S: Final = 300


@dataclass(frozen=True, slots=True)
class TokenRequest:
    user: str | None  # None: anonymous, or credentials that did not match
    scopes: tuple[str, ...]
    granted: tuple[str, ...]
    authorization: str  # the header as received ("" when absent)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError(OPENSSL_HINT)
    done = subprocess.run([binary, *args], input=data, capture_output=True, check=False,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def libtrust_key_id(spki_der: bytes) -> str:
    """distribution's key id: base32 of 240 bits of sha256(SPKI), in groups of four."""
    encoded = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


@dataclass(frozen=True, slots=True)
class _SigningKey:
    key_pem: bytes
    cert_pem: bytes
    key_id: str


@functools.cache
def _signing_key() -> _SigningKey:
    """One RSA key and self-signed certificate per process, shared by every server.

    Generating a 2048-bit key takes openssl a good fraction of a second; the key is
    only ever read, so each server gets a copy in its own workdir.
    """
    with tempfile.TemporaryDirectory(prefix="akua-token-key-") as folder:
        key_path, cert_path = Path(folder) / "key.pem", Path(folder) / "cert.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key_path),
                 "-out", str(cert_path), "-days", "2", "-subj", "/CN=akua-test-token")
        spki = _openssl("pkey", "-in", str(key_path), "-pubout", "-outform", "DER")
        return _SigningKey(key_path.read_bytes(), cert_path.read_bytes(), libtrust_key_id(spki))


class TokenServer:
    def __init__(
        self,
        *,
        users: Mapping[str, str],
        grants: Mapping[str, Collection[str]],
        host: str = "127.0.0.1",
        workdir: Path | None = None,
    ) -> None:
        self.users = dict(users)
        self.grants = {user: frozenset(scopes) for user, scopes in grants.items()}
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._owned = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="akua-token-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key_path = self.workdir / "token-key.pem"
        self.cert_path = self.workdir / "token-cert.pem"
        key = _signing_key()
        self.key_path.write_bytes(key.key_pem)
        self.key_path.chmod(0o600)
        self.cert_path.write_bytes(key.cert_pem)
        self.key_id = key.key_id
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = serve_in_thread(self._server, "token-server", start=False)

    @property
    def host(self) -> str:
        address, port = self._server.server_address[:2]
        return f"{address!s}:{port}"

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    def registry_auth(self) -> dict[str, Any]:
        """The registry's ``auth`` config section trusting this server."""
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert_path.resolve())}}

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        stop_serving(self._server, self._thread)
        if self._owned:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- issuing

    def _user(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if self.users.get(user) == password else None

    def issue(self, user: str | None, scopes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        allowed = self.grants.get(user, frozenset()) if user is not None else frozenset()
        granted = tuple(scope for scope in scopes if scope in allowed)
        access = []
        for scope in granted:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.key_id}
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + TOKEN_LIFETIME_S,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, claims))
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key_path),
                             data=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}", granted

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(LoopbackHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                authorization = self.headers.get("Authorization") or ""
                user = server._user(authorization)
                scopes = tuple(query.get("scope", []))
                if parts.path != "/token":
                    self._send(404, {"details": "not found"})
                    return
                if authorization and user is None:
                    with server._lock:
                        server.requests.append(TokenRequest(None, scopes, (), authorization))
                    self._send(401, {"details": "wrong user or password"})
                    return
                token, granted = server.issue(user, scopes)
                with server._lock:
                    server.requests.append(TokenRequest(user, scopes, granted, authorization))
                self._send(200, {"token": token, "access_token": token,
                                 "expires_in": TOKEN_LIFETIME_S})

            def _send(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


__all__ = ["ISSUER", "OPENSSL_HINT", "SERVICE", "TokenRequest", "TokenServer", "libtrust_key_id"]

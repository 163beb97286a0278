"""Reading one OCI registry: catalog, tags and manifests.

Two layers:

* ``RegistryClient`` is synchronous and owns one ``requests`` session, so
  it must stay on one thread (oras-py and its auth backends keep mutable
  per-session state).  It makes exactly one attempt per call and turns
  every failure into one of the exceptions below.
* ``Registry`` is the async facade the crawler uses: it keeps one client
  per worker thread, bounds concurrency with a named capacity limiter,
  counts requests, and is the only place that retries (with
  ``crawler.backoff``).

oras-py 0.2.43 is used for what it is good at (the token dance against
Docker Hub-style registries, reading docker config credentials) and
fenced off where it is not: its ``do_request`` is wrapped in a retry
decorator that sleeps up to ~2 minutes on any error and it sets no
timeout, so we call the undecorated function and give the session a
default timeout.  Manifests are fetched by hand because oras returns
only parsed JSON (no digest, no media type, no size limit).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import anyio
import anyio.to_thread
import oras.auth
import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from crawler.backoff import RetryPolicy, parse_retry_after
from crawler.errors import ConfigError, CrawlerError, InvalidArtifact, TransientFailure
from crawler.ratelimit import AdaptiveRateLimiter

# oras logs every non-2xx answer at ERROR (404 for a missing tag included)
# through the "oras" logger tree.  Those are our expected outcomes, which we
# report ourselves, so that tree must print nothing.
_oras_log = logging.getLogger("oras")
_oras_log.addHandler(logging.NullHandler())
_oras_log.propagate = False
_oras_log.setLevel(logging.CRITICAL + 1)

log = logging.getLogger(__name__)

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
_GENERIC_TYPES: Final = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

PAGE_SIZE: Final = 1000  # n= for catalog and tags; distribution caps the catalog at 1000
# Page caps stop a registry that keeps inventing new pages: 1000 tag pages
# of 1000 is a million tags in one repository, far past any real package.
MAX_TAG_PAGES: Final = 1000
MAX_CATALOG_PAGES: Final = 100_000
MAX_LISTING_BYTES: Final = 32 * 1024 * 1024  # one catalog or tags page
DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024  # what distribution itself accepts on push
_ERROR_BODY_BYTES: Final = 64 * 1024  # enough for any registry error document

_DIGEST_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
_DIGEST_RE: Final = re.compile(r"(sha256|sha512):([0-9a-f]+)")

T = TypeVar("T")


# --------------------------------------------------------------------- errors


class RegistryUnavailable(TransientFailure):
    """No usable answer: refused, timed out, cut off, 5xx, 408 or 429; worth retrying."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RegistryNotFound(InvalidArtifact):
    """404: the repository or the reference does not exist (``code`` says which)."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class RegistryAuthFailed(CrawlerError):
    """401/403 after authenticating: wrong or missing credentials, or no access.

    Not an ItemError: retrying the item cannot help, and the caller decides
    whether one repository being forbidden stops the run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadManifest(InvalidArtifact):
    """The manifest is not a usable package manifest (size, encoding, JSON, type, digest).

    ``digest`` is set when the bytes were read whole, so the state can record the
    outcome and a re-run need not read an unchanged manifest again.
    """

    def __init__(self, reason: str, *, digest: str | None = None) -> None:
        super().__init__(reason)
        self.digest = digest


class RegistryProtocolError(InvalidArtifact):
    """An answer the crawler cannot use: unexpected status, unreadable listing, foreign Link."""


# ------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEndpoint:
    """How to reach one registry.  ``host`` is "host[:port]", no scheme or path."""

    host: str
    plain_http: bool = False
    insecure: bool = False  # HTTPS without certificate verification
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_docker_config: bool = False  # ignored when username/password are given
    timeout_s: float = 30.0  # connect and per-read timeout of every request
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/@ \t\r\n?#"):
            raise ConfigError(f"registry host must be host[:port] without scheme: {self.host!r}")
        if (self.username is None) != (self.password is None):
            raise ConfigError(f"registry {self.host}: give both username and password, or neither")
        if not self.timeout_s > 0:
            raise ConfigError(f"registry {self.host}: timeout_s must be > 0")
        if self.max_manifest_bytes <= 0:
            raise ConfigError(f"registry {self.host}: max_manifest_bytes must be > 0")

    def __repr__(self) -> str:
        # Hand-written so the password can never appear, even by accident.
        secret = None if self.password is None else "***"
        return (
            f"RegistryEndpoint(host={self.host!r}, plain_http={self.plain_http}, "
            f"insecure={self.insecure}, username={self.username!r}, password={secret!r}, "
            f"use_docker_config={self.use_docker_config}, timeout_s={self.timeout_s}, "
            f"max_manifest_bytes={self.max_manifest_bytes})"
        )

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    digest: str  # "sha256:<hex>" of exactly ``raw``
    media_type: str
    raw: bytes = field(repr=False)
    document: dict[str, Any] = field(repr=False)


# ------------------------------------------------------------ oras plumbing


class _TimeoutAdapter(HTTPAdapter):
    """Applies a default (connect, read) timeout to every request of the session.

    Mounted on the session itself because oras' auth backends share it and
    make their own calls (token requests) that pass no timeout either.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout = (timeout_s, timeout_s)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


class _ChallengeAuth(oras.auth.TokenAuth):  # type: ignore[misc]
    """oras token auth that also answers ``Basic`` challenges (htpasswd registries).

    Stock TokenAuth treats a Basic challenge's realm as a token URL and
    fetches it ("https://basic-realm"); the stock basic backend cannot do
    tokens.  Which one a registry wants is only known from its challenge.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_scheme = False

    def basic_header(self) -> str | None:
        encoded = getattr(self, "_basic_auth", None)
        return f"Basic {encoded}" if encoded else None

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str], refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        challenge = original.headers.get("Www-Authenticate", "")
        if challenge.split(" ", 1)[0].lower() != "basic":
            result: tuple[dict[str, str], bool] = super().authenticate_request(
                original, headers, refresh
            )
            return result
        self.basic_scheme = True
        header = self.basic_header()
        if header is None:
            return headers or {}, False
        return {**(headers or {}), "Authorization": header}, True


class _OrasRegistry(oras.provider.Registry):  # type: ignore[misc]
    """oras' Registry with one attempt per request and a fresh token per scope."""

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        super().__init__(
            hostname=endpoint.host,
            insecure=endpoint.plain_http,
            tls_verify=not endpoint.insecure,
        )
        adapter = _TimeoutAdapter(endpoint.timeout_s)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # With trust_env, requests re-reads proxies, no_proxy and ~/.netrc from the
        # environment on every request; for one registry, read them once here instead.
        self.session.proxies.update(requests.utils.get_environ_proxies(endpoint.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle and not endpoint.insecure:
            self._tls_verify = ca_bundle  # oras passes it to every request as verify=
        self.session.trust_env = False
        # Same wiring as oras.auth.get_auth_backend, with our backend.
        auth = _ChallengeAuth()
        auth.session = self.session
        auth.prefix = self.prefix
        auth._tls_verify = self._tls_verify
        self.auth = auth
        if endpoint.username is not None and endpoint.password is not None:
            auth.set_basic_auth(endpoint.username, endpoint.password)
        elif endpoint.use_docker_config:
            # oras only loads docker config inside some of its own calls
            # (not get_tags, not our hand-made requests): load it once here.
            container = oras.container.Container("akua/probe")
            container.registry = endpoint.host  # the parser mistakes "localhost" for a path
            auth.load_configs(container)

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        # __wrapped__ is the function under oras' @retry: our caller retries.
        attempt = oras.provider.Registry.do_request.__wrapped__
        auth: _ChallengeAuth = self.auth

        def once() -> requests.Response:
            # oras mutates the headers dict it is given: hand it a fresh copy.
            fresh = dict(headers or {})
            basic = auth.basic_header() if auth.basic_scheme else None
            if basic is not None:
                fresh["Authorization"] = basic  # skip the 401 round trip
            response: requests.Response = attempt(self, url, method, data, fresh, json, stream)
            return response

        response = once()
        if response.status_code == 401 and auth.token:
            # oras keeps the first token for every later scope (another
            # repository): drop it and let the challenge fetch a fitting one.
            response.close()
            auth.token = None
            response = once()
        return response


# ------------------------------------------------------------- sync client


class RegistryClient:
    """One registry, one session, one thread.  Makes one attempt per call.

    ``on_request(kind)`` is called before each HTTP request we send (kinds:
    catalog, tags, manifest_get, manifest_head) so a caller can count them.
    """

    def __init__(
        self, endpoint: RegistryEndpoint, *, on_request: Callable[[str], None] | None = None
    ) -> None:
        self.endpoint = endpoint
        self._base = endpoint.base_url
        self._origin = _origin(self._base)
        self._on_request = on_request
        self._oras = _OrasRegistry(endpoint)

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r}, username={self.endpoint.username!r})"

    def close(self) -> None:
        self._oras.session.close()

    # -- listings

    def catalog_page(self, url: str | None = None) -> tuple[list[str], str | None]:
        """One page of repository names and the absolute URL of the next page (None at the end)."""
        where = f"{self.endpoint.host} catalog"
        url = url or f"{self._base}/v2/_catalog?n={PAGE_SIZE}"
        document, next_url = self._get_listing("catalog", url, where)
        names = _string_list(document, "repositories", where)
        return names, next_url

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``, in the registry's order, each once.

        Follows ``Link: rel="next"``; stops when the next URL was already
        fetched, when a page adds no new tag, or after ``MAX_TAG_PAGES``
        pages, so a registry that repeats or loops cannot hold us forever.
        """
        where = f"{self.endpoint.host}/{repository} tags"
        url: str | None = f"{self._base}/v2/{_path(repository)}/tags/list?n={PAGE_SIZE}"
        seen_urls: set[str] = set()
        tags: list[str] = []
        known: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            if url is None or url in seen_urls:
                return tags
            seen_urls.add(url)
            document, url = self._get_listing("tags", url, where)
            fresh = [t for t in _string_list(document, "tags", where) if t not in known]
            if not fresh:
                return tags
            known.update(fresh)
            tags.extend(fresh)
        log.warning("%s: stopped after %d pages of tags", where, MAX_TAG_PAGES)
        return tags

    # -- manifests

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest's exact bytes, digest, media type and parsed document.

        Refuses (``BadManifest``) anything that is not a package manifest:
        too large, not UTF-8 JSON object, an index, or bytes that do not
        match the digest the registry (or the reference) names.
        """
        where = _where(self.endpoint.host, repository, reference)
        limit = self.endpoint.max_manifest_bytes
        url = self._manifest_url(repository, reference)
        with self._translated(where):
            response = self._send("manifest_get", "GET", url, MANIFEST_ACCEPT, stream=True)
            try:
                self._check_status(response, where)
                declared = _content_length(response)
                if declared is not None and declared > limit:
                    raise BadManifest(
                        f"{where}: manifest is {declared} bytes, over the limit of {limit} bytes"
                    )
                raw = _read_at_most(response, limit)
            finally:
                response.close()
        if len(raw) > limit:
            raise BadManifest(f"{where}: manifest is over the limit of {limit} bytes")
        digest = _checked_digest(raw, response.headers.get("Docker-Content-Digest"), reference, where)
        document = _json_object(raw, where, what="manifest")
        media_type = _media_type(response.headers.get("Content-Type"))
        if media_type in _GENERIC_TYPES and isinstance(document.get("mediaType"), str):
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

    def head_manifest(self, repository: str, reference: str) -> str:
        """The manifest digest from a HEAD request (never a GET)."""
        where = _where(self.endpoint.host, repository, reference)
        url = self._manifest_url(repository, reference)
        with self._translated(where):
            response = self._send("manifest_head", "HEAD", url, MANIFEST_ACCEPT, stream=False)
            try:
                self._check_status(response, where)
            finally:
                response.close()
        header = (response.headers.get("Docker-Content-Digest") or "").strip()
        if not _valid_digest(header):
            raise RegistryProtocolError(
                f"{where}: HEAD answered without a usable Docker-Content-Digest "
                f"({header[:80] or 'none'})"
            )
        return header

    # -- plumbing

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self._base}/v2/{_path(repository)}/manifests/{quote(reference, safe=':')}"

    def _send(
        self, kind: str, method: str, url: str, accept: str, *, stream: bool
    ) -> requests.Response:
        if self._on_request is not None:
            self._on_request(kind)
        try:
            return self._oras.do_request(url, method, headers={"Accept": accept}, stream=stream)
        except requests.RequestException:
            raise  # translated by _translated()
        except ValueError as exc:
            # oras raises a bare ValueError when it cannot answer a 401
            # challenge: no credentials, or the token endpoint refused them.
            raise _AuthChallengeFailed(str(exc)) from exc

    def _get_listing(
        self, kind: str, url: str, where: str
    ) -> tuple[dict[str, Any], str | None]:
        if _origin(url) != self._origin:
            raise RegistryProtocolError(f"{where}: refusing to follow a link off the registry")
        with self._translated(where):
            response = self._send(kind, "GET", url, "application/json", stream=True)
            try:
                self._check_status(response, where)
                body = _read_at_most(response, MAX_LISTING_BYTES)
            finally:
                response.close()
        if len(body) > MAX_LISTING_BYTES:
            raise RegistryProtocolError(f"{where}: page is over {MAX_LISTING_BYTES} bytes")
        document = _json_object(body, where, what="listing", error=RegistryProtocolError)
        link = response.links.get("next", {}).get("url")
        if not link:
            return document, None
        # Relative links are resolved against the page that carried them
        # (RFC 8288); distribution sends "/v2/...", which lands on the base.
        next_url = urljoin(url, link)
        if _origin(next_url) != self._origin:
            raise RegistryProtocolError(
                f"{where}: the next-page Link points off the registry ({_origin(next_url)})"
            )
        return document, next_url

    def _check_status(self, response: requests.Response, where: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        code, message = _registry_error(response)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        detail = self._scrub(detail)
        if status in (401, 403):
            raise RegistryAuthFailed(f"{where}: {self._auth_hint()} ({detail})")
        if status == 404:
            if code is None and response.request.method == "HEAD":
                detail += " (a HEAD answer carries no error code)"
            raise RegistryNotFound(f"{where}: not found ({detail})", code=code)
        if status in (408, 429) or status >= 500:
            raise RegistryUnavailable(
                f"{where}: registry unavailable ({detail})",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        raise RegistryProtocolError(f"{where}: unexpected answer ({detail})")

    def _scrub(self, text: str) -> str:
        """A registry echoing our Authorization header must not put credentials in a message."""
        auth = self._oras.auth
        for secret in (self.endpoint.password, getattr(auth, "_basic_auth", None), auth.token):
            # Basic credentials are base64("user:password"): as secret as the password.
            if isinstance(secret, str) and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _auth_hint(self) -> str:
        if self.endpoint.username is not None:
            return f"the registry refused the credentials of user {self.endpoint.username!r}"
        if self.endpoint.use_docker_config:
            return "the registry refused the docker config credentials (or found none)"
        return "the registry requires credentials and none are configured"

    @contextmanager
    def _translated(self, where: str) -> Iterator[None]:
        """Turn transport and oras failures into this module's exceptions."""
        try:
            yield
        except _AuthChallengeFailed:
            raise RegistryAuthFailed(f"{where}: {self._auth_hint()}") from None
        except requests.Timeout as exc:
            raise RegistryUnavailable(
                f"{where}: no answer within {self.endpoint.timeout_s:g}s"
            ) from exc
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise RegistryUnavailable(f"{where}: cannot reach the registry ({_cause(exc)})") from exc
        except requests.RequestException as exc:
            raise RegistryProtocolError(f"{where}: request failed ({_cause(exc)})") from exc


class _AuthChallengeFailed(Exception):
    """Internal: oras gave up on a 401 challenge (carries no credentials)."""


# ------------------------------------------------------------ pure helpers


def _where(host: str, repository: str, reference: str) -> str:
    separator = "@" if _DIGEST_RE.fullmatch(reference) else ":"
    return f"{host}/{repository}{separator}{reference}"


def _path(repository: str) -> str:
    return quote(repository, safe="/")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _cause(exc: BaseException) -> str:
    # urllib3 nests the useful part ("Connection refused") deep inside; the
    # whole text is long but holds no credentials (those travel in headers).
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _read_at_most(response: requests.Response, limit: int) -> bytes:
    """The body, or its first ``limit + 1`` bytes when longer (so "too large" is visible)."""
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            break
    return b"".join(chunks)[: limit + 1]


def _registry_error(response: requests.Response) -> tuple[str | None, str | None]:
    """The first ``errors[]`` code and message of a registry error answer, if any."""
    if response.request.method == "HEAD":
        return None, None
    try:
        body = _read_at_most(response, _ERROR_BODY_BYTES)
        document = json.loads(body)
    except (requests.RequestException, ValueError):
        return None, None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    code, message = errors[0].get("code"), errors[0].get("message")
    return (
        code if isinstance(code, str) else None,
        message[:200] if isinstance(message, str) else None,
    )


def _retry_after(value: str | None) -> float | None:
    # parse_retry_after lets str.isdigit() pass non-ASCII digits such as "²"
    # to float(), which raises; a hostile header must not crash the crawl.
    try:
        return parse_retry_after(value)
    except ValueError:
        return None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _valid_digest(value: str) -> bool:
    match = _DIGEST_RE.fullmatch(value)
    return match is not None and len(match[2]) == _DIGEST_HEX_LENGTH[match[1]]


def _matches(raw: bytes, digest: str) -> bool:
    algorithm, _, hexdigest = digest.partition(":")
    return hashlib.new(algorithm, raw).hexdigest() == hexdigest


def _checked_digest(raw: bytes, header: str | None, reference: str, where: str) -> str:
    """sha256 of ``raw``, after checking it against every digest the registry or caller named."""
    computed = "sha256:" + hashlib.sha256(raw).hexdigest()
    header = (header or "").strip()
    for claimed, source in ((header, "Docker-Content-Digest"), (reference, "reference")):
        if _valid_digest(claimed) and not _matches(raw, claimed):
            raise BadManifest(
                f"{where}: the {source} says {claimed} but the {len(raw)} bytes received "
                f"hash to {computed}"
            )
    return computed


def _json_object(
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


def _string_list(document: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = document.get(key)
    if value is None:  # distribution answers "tags": null once every tag is deleted
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryProtocolError(f"{where}: {key!r} is not a list of strings")
    return value


# ------------------------------------------------------------ async facade


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryStatistics:
    limiter_name: str
    max_in_flight: int
    in_flight: int  # worker threads running a registry call right now
    waiting: int  # calls queued on the limiter
    requests: Mapping[str, int]  # HTTP requests sent, by kind
    retries: int  # calls tried again after RegistryUnavailable
    failures: int  # calls that raised after their last attempt

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


REQUEST_KINDS: Final = ("catalog", "tags", "manifest_get", "manifest_head")


class Registry:
    """Async access to one registry: bounded concurrency, retries, counters.

    The sync clients run on anyio worker threads, at most ``max_in_flight``
    at once (limiter ``"registry"``), one client per thread.  Only
    ``RegistryUnavailable`` is retried, after ``RetryPolicy.delay`` or the
    registry's Retry-After; the last error is re-raised.  Use it within one
    event loop (the limiter binds to the first loop that uses it).
    """

    limiter_name: Final = "registry"

    def __init__(
        self,
        endpoint: RegistryEndpoint,
        *,
        max_in_flight: int = 8,
        policy: RetryPolicy | None = None,
        rate: AdaptiveRateLimiter | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"registry {endpoint.host}: max_in_flight must be >= 1")
        self.endpoint = endpoint
        self.max_in_flight = max_in_flight
        self.policy = policy or RetryPolicy()
        # The "registry" limiter: bounds worker threads (and so sessions and
        # concurrent requests) for this registry, apart from anyio's default.
        self._limiter = anyio.CapacityLimiter(max_in_flight)
        self._rate = rate  # optional requests-per-second budget, on top of in-flight
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the counters and the client list
        self._clients: list[RegistryClient] = []
        self._requests = dict.fromkeys(REQUEST_KINDS, 0)
        self._retries = 0
        self._failures = 0

    def __repr__(self) -> str:
        return f"Registry({self.endpoint!r}, max_in_flight={self.max_in_flight})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's session (call when no request is running)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def statistics(self) -> RegistryStatistics:
        limiter = self._limiter.statistics()
        with self._lock:
            return RegistryStatistics(
                limiter_name=self.limiter_name,
                max_in_flight=self.max_in_flight,
                in_flight=limiter.borrowed_tokens,
                waiting=limiter.tasks_waiting,
                requests=dict(self._requests),
                retries=self._retries,
                failures=self._failures,
            )

    async def repositories(self) -> AsyncIterator[str]:
        """Every repository name in the catalog, each once, page by page."""
        url: str | None = None
        seen_urls: set[str] = set()
        known: set[str] = set()
        for _ in range(MAX_CATALOG_PAGES):
            page = functools.partial(RegistryClient.catalog_page, url=url)
            names, url = await self._call(page)
            fresh = [name for name in names if name not in known]
            known.update(fresh)
            for name in fresh:
                yield name
            # Same loop guard as list_tags: a repeated URL or a page with
            # nothing new means the registry is going round in circles.
            if not fresh or url is None or url in seen_urls:
                return
            seen_urls.add(url)
        log.warning("%s: stopped after %d catalog pages", self.endpoint.host, MAX_CATALOG_PAGES)

    async def tags(self, repository: str) -> list[str]:
        return await self._call(functools.partial(RegistryClient.list_tags, repository=repository))

    async def manifest(self, repository: str, reference: str) -> Manifest:
        return await self._call(
            functools.partial(
                RegistryClient.get_manifest, repository=repository, reference=reference
            )
        )

    async def manifest_then(
        self, repository: str, reference: str, then: Callable[[Manifest], T]
    ) -> tuple[Manifest, T]:
        """The manifest, and ``then(manifest)`` computed on the same worker thread.

        Saves a second hop between the event loop and a thread for the per-artifact
        work that follows every manifest (schema checks), which is most of a crawl.
        """

        def fetch(client: RegistryClient) -> tuple[Manifest, T]:
            manifest = client.get_manifest(repository, reference)
            return manifest, then(manifest)

        return await self._call(fetch)

    async def head(self, repository: str, reference: str) -> str:
        return await self._call(
            functools.partial(
                RegistryClient.head_manifest, repository=repository, reference=reference
            )
        )

    async def _call(self, operation: Callable[[RegistryClient], T]) -> T:
        attempts = max(1, self.policy.attempts)
        for attempt in range(attempts):
            if self._rate is not None:
                await self._rate.acquire()
            try:
                return await anyio.to_thread.run_sync(
                    self._run, operation, limiter=self._limiter
                )
            except RegistryUnavailable as exc:
                if self._rate is not None and exc.retry_after is not None:
                    self._rate.throttled()
                if attempt + 1 >= attempts:
                    self._count_failure()
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.policy.delay(attempt)
                with self._lock:
                    self._retries += 1
                await anyio.sleep(delay)
            except CrawlerError:
                self._count_failure()
                raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _count_failure(self) -> None:
        with self._lock:
            self._failures += 1

    def _run(self, operation: Callable[[RegistryClient], T]) -> T:
        # Runs on a worker thread: each thread builds and keeps its own client.
        client: RegistryClient | None = getattr(self._local, "client", None)
        if client is None:
            client = RegistryClient(self.endpoint, on_request=self._count_request)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return operation(client)

    def _count_request(self, kind: str) -> None:
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1


__all__ = [
    "DEFAULT_MAX_MANIFEST_BYTES",
    "MANIFEST_ACCEPT",
    "MAX_CATALOG_PAGES",
    "MAX_TAG_PAGES",
    "PAGE_SIZE",
    "BadManifest",
    "Manifest",
    "Registry",
    "RegistryAuthFailed",
    "RegistryClient",
    "RegistryEndpoint",
    "RegistryNotFound",
    "RegistryProtocolError",
    "RegistryStatistics",
    "RegistryUnavailable",
]

"""The synchronous registry client: one session, one thread, one attempt per call.

``RegistryClient`` owns one oras-py session (``oras_compat.OrasSession``), so
it must stay on one thread (oras-py and its auth backends keep mutable
per-session state).  It makes exactly one attempt per call and turns every
failure into one of ``crawler.registry.errors``.  Manifests are fetched by
hand because oras returns only parsed JSON (no digest, no media type, no
size limit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import quote, urlsplit

import requests

from crawler.deadline import Deadline, request_deadline
from crawler.errors import RepositoryRefused
from crawler.registry import auth as credentials
from crawler.registry.endpoint import RegistryEndpoint
from crawler.registry.errors import (
    BadBlob,
    BadManifest,
    RegistryAuthFailed,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
)
from crawler.registry.listing import (
    MAX_TAG_PAGES,
    MAX_TAGS,
    PAGE_SIZE,
    SMALLER_PAGE_SIZES,
    Page,
    Pager,
    next_link,
    origin,
    page_size,
    with_query,
)
from crawler.registry.manifests import (
    MANIFEST_ACCEPT,
    SCHEMA_ANNOTATION,
    Descriptor,
    Fetched,
    Manifest,
    checked_digest,
    classify,
    json_object,
    resolve,
    valid_digest,
    where,
)
from crawler.registry.oras_compat import AuthChallengeFailed, OrasSession
from crawler.retry import parse_retry_after

log = logging.getLogger(__name__)

MAX_LISTING_BYTES: Final = 32 * 1024 * 1024  # one catalog or tags page
_ERROR_BODY_BYTES: Final = 64 * 1024  # enough for any registry error document
_BLOB_ACCEPT: Final = "application/octet-stream, */*"


class RegistryClient:
    """One registry, one session, one thread.  Makes one attempt per call.

    ``on_request(kind)`` is called before each HTTP request we send (kinds:
    catalog, tags, manifest_get, manifest_head, blob_get) so a caller can count them.
    """

    def __init__(
        self, endpoint: RegistryEndpoint, *, on_request: Callable[[str], None] | None = None
    ) -> None:
        self.endpoint = endpoint
        self._base = endpoint.base_url
        self._origin = origin(self._base)
        self._page_size = PAGE_SIZE  # made smaller for good once the registry refuses it
        self._on_request = on_request
        self._oras = OrasSession(endpoint)

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r}, username={self.endpoint.username!r})"

    def close(self) -> None:
        self._oras.close()

    # -- access

    def check_access(self) -> None:
        """``GET /v2/``: the registry speaks the API and accepts these credentials.

        A refusal here is about the credentials, not about one repository:
        ``RegistryAuthFailed`` (the run stops).
        """
        here = f"{self.endpoint.host} API (GET /v2/)"
        with self._translated(here):
            response = self._send("base", "GET", f"{self._base}/v2/", "application/json",
                                  stream=True)
            try:
                self._check_status(response, here)
            finally:
                response.close()

    # -- listings

    def catalog_page(self, url: str | None = None) -> Page:
        """One page of repository names (``url`` None: the first page).

        ``Page.url`` is what was fetched (the page size may have been made
        smaller), ``Page.link`` the next page's absolute URL, if any.
        """
        here = f"{self.endpoint.host} catalog"
        url = url or f"{self._base}/v2/_catalog?n={self._page_size}"
        document, page_url, link = self._get_listing("catalog", url, here)
        return Page(page_url, _string_list(document, "repositories", here), link)

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``, in the registry's order, each once (see ``listing``)."""
        here = f"{self.endpoint.host}/{repository} tags"
        first = f"{self._base}/v2/{_path(repository)}/tags/list?n={self._page_size}"
        pager = Pager("tags", here, first, MAX_TAGS, MAX_TAG_PAGES)
        tags: list[str] = []
        while pager.next_url is not None:
            try:
                document, page_url, link = self._get_listing(
                    "tags", pager.next_url, here, repository=repository
                )
            except (RegistryNotFound, RegistryProtocolError):
                if pager.probe_refused():
                    break
                raise
            tags.extend(pager.take(Page(page_url, _string_list(document, "tags", here), link)))
        return tags

    # -- manifests

    def get_manifest(
        self, repository: str, reference: str, schema_keys: Sequence[str] = (SCHEMA_ANNOTATION,)
    ) -> Manifest:
        """The artifact ``reference`` resolves to (see ``manifests.resolve``).

        An index's children are fetched only when the index alone cannot
        decide, each with the same size limit and digest checks.
        """
        here = where(self.endpoint.host, repository, reference)
        top = self.fetch_manifest(repository, reference)

        def child(entry: Descriptor) -> Fetched:
            return self.fetch_manifest(repository, entry.digest)

        return resolve(top, here, schema_keys, child)

    def fetch_manifest(self, repository: str, reference: str) -> Fetched:
        """One manifest or index: exact bytes, checked digest, kind and document.

        Refuses (``BadManifest``) what is too large, not a UTF-8 JSON object,
        of another media type, or does not match the digest the registry (or
        the reference) names.
        """
        here = where(self.endpoint.host, repository, reference)
        raw, digest, content_type = self._manifest_bytes(repository, reference, here)
        return classify(raw, content_type, digest, here)

    def _manifest_bytes(
        self, repository: str, reference: str, here: str
    ) -> tuple[bytes, str, str | None]:
        """A manifest's exact bytes (within the size limit), checked digest and Content-Type."""
        limit = self.endpoint.max_manifest_bytes
        url = self._manifest_url(repository, reference)
        with self._translated(here, repository):
            response = self._send("manifest_get", "GET", url, MANIFEST_ACCEPT, stream=True)
            try:
                self._check_status(response, here, repository)
                raw = _read_capped(response, limit, BadManifest, here, "manifest")
            finally:
                response.close()
        digest = checked_digest(raw, response.headers.get("Docker-Content-Digest"), reference, here)
        return raw, digest, response.headers.get("Content-Type")

    def head_manifest(self, repository: str, reference: str) -> str:
        """The manifest digest from a HEAD request.

        A GET follows only when the HEAD answer lacks a usable
        ``Docker-Content-Digest`` (the header is optional in the spec).
        """
        here = where(self.endpoint.host, repository, reference)
        url = self._manifest_url(repository, reference)
        with self._translated(here, repository):
            response = self._send("manifest_head", "HEAD", url, MANIFEST_ACCEPT, stream=False)
            try:
                self._check_status(response, here, repository)
            finally:
                response.close()
        header = (response.headers.get("Docker-Content-Digest") or "").strip()
        if valid_digest(header):
            return header
        # The header is optional: without it, GET the bytes and hash them.
        log.debug("%s: HEAD without a usable Docker-Content-Digest, reading the manifest", here)
        _raw, digest, _type = self._manifest_bytes(repository, reference, here)
        return digest

    # -- blobs

    def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        """A blob's bytes, checked against ``digest`` (``sha256:<hex>``), at most ``max_bytes``.

        Held in memory, never written anywhere.  Raises BadBlob when the
        registry declares or sends more than ``max_bytes``, or bytes that hash
        to something else.  Registries often answer a blob GET with a redirect
        to storage; requests follows it and drops the Authorization header
        when the host changes.
        """
        here = f"{self.endpoint.host}/{repository}@{digest}"
        if not digest.startswith("sha256:") or not valid_digest(digest):
            raise BadBlob(f"{here}: not a sha256 digest")
        url = f"{self._base}/v2/{_path(repository)}/blobs/{quote(digest, safe=':')}"
        with self._translated(here):
            response = self._send("blob_get", "GET", url, _BLOB_ACCEPT, stream=True)
            try:
                self._check_status(response, here)
                raw = _read_capped(response, max_bytes, BadBlob, here, "blob")
            finally:
                response.close()
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        if computed != digest:
            raise BadBlob(f"{here}: the {len(raw)} bytes received hash to {computed}")
        return raw

    # -- plumbing

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self._base}/v2/{_path(repository)}/manifests/{quote(reference, safe=':')}"

    def _send(
        self, kind: str, method: str, url: str, accept: str, *, stream: bool
    ) -> requests.Response:
        if self._on_request is not None:
            self._on_request(kind)
        # W11: manifest URLs are built here, so they can take the lean path.
        return self._oras.send(method, url, accept, stream=stream, lean=kind.startswith("manifest"))

    def _get_listing(
        self, kind: str, url: str, here: str, *, repository: str | None = None
    ) -> tuple[dict[str, Any], str, str | None]:
        """A listing page's document, the URL it came from, and the next page's URL."""
        if origin(url) != self._origin:
            raise RegistryProtocolError(f"{here}: refusing to follow a link off the registry")
        smaller = iter(SMALLER_PAGE_SIZES)
        while True:
            with self._translated(here, repository):
                response = self._send(kind, "GET", url, "application/json", stream=True)
                try:
                    refused_n = self._page_size_refused(response, url)
                    if refused_n is None:
                        self._check_status(response, here, repository)
                        body = _read_at_most(response, MAX_LISTING_BYTES)
                finally:
                    response.close()
            if refused_n is None:
                break
            size = next((n for n in smaller if n < refused_n), None)
            if size is None:
                raise RegistryProtocolError(
                    f"{here}: the registry refuses every page size (HTTP 400 PAGINATION_NUMBER_INVALID)"
                )
            log.info("%s: page size %d refused, asking for %d", here, refused_n, size)
            self._page_size = min(self._page_size, size)
            url = with_query(url, n=size)
        if len(body) > MAX_LISTING_BYTES:
            raise RegistryProtocolError(f"{here}: page is over {MAX_LISTING_BYTES} bytes")
        document = json_object(body, here, what="listing", error=RegistryProtocolError)
        # requests joins repeated Link headers with ", ", which is also the
        # separator between link-values inside one header.
        header = response.headers.get("Link")
        link = next_link([header] if header else [], url)
        if link is not None and origin(link) != self._origin:
            raise RegistryProtocolError(
                f"{here}: the next-page Link points off the registry ({_netloc(link)})"
            )
        return document, url, link

    def _page_size_refused(self, response: requests.Response, url: str) -> int | None:
        """The refused ``n`` of a 400 PAGINATION_NUMBER_INVALID answer, else None."""
        n = page_size(url)
        if response.status_code != 400 or n is None or n <= 1:
            return None
        code, _ = _registry_error(response)
        return n if code == "PAGINATION_NUMBER_INVALID" else None

    def _check_status(
        self, response: requests.Response, here: str, repository: str | None = None
    ) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        code, message = _registry_error(response)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        detail = credentials.scrub(detail, self.endpoint, self._oras.secrets())
        if status in (401, 403):
            self._refused(here, repository, detail)
        if status == 404:
            if code is None and response.request.method == "HEAD":
                detail += " (a HEAD answer carries no error code)"
            raise RegistryNotFound(f"{here}: not found ({detail})", code=code)
        if status in (408, 429) or status >= 500:
            raise RegistryUnavailable(
                f"{here}: registry unavailable ({detail})",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        raise RegistryProtocolError(f"{here}: unexpected answer ({detail})")

    def _refused(self, here: str, repository: str | None, detail: str | None = None) -> None:
        """401/403: one repository refused (the run goes on), or the registry itself."""
        reason = f"{here}: {credentials.refusal_hint(self.endpoint)}"
        reason += f" ({detail})" if detail else ""
        if repository is None:
            raise RegistryAuthFailed(reason)
        raise RepositoryRefused(
            f"{here}: the registry refused access to repository {repository!r} for user "
            f"{credentials.user_of(self.endpoint)}" + (f" ({detail})" if detail else ""),
            repository=repository,
            user=self.endpoint.username,
        )

    @contextmanager
    def _translated(self, here: str, repository: str | None = None) -> Iterator[Deadline]:
        """Turn transport and oras failures into this package's exceptions.

        The block is one request with its total deadline (``endpoint.timeout_s``):
        connect, auth round trips, headers and the body read inside the block.
        """
        with request_deadline(self.endpoint.timeout_s) as deadline:
            try:
                yield deadline
            except AuthChallengeFailed:
                self._refused(here, repository)
            except credentials.RealmRefused as exc:
                raise RegistryAuthFailed(f"{here}: {exc}") from None
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                if deadline.expired or isinstance(exc, requests.Timeout):
                    raise RegistryUnavailable(
                        f"{here}: no complete answer within {self.endpoint.timeout_s:g}s"
                    ) from exc
                if (not self.endpoint.plain_http and not self._oras.session.proxies
                        and (_failed_netloc(exc) or "").lower() == self.endpoint.host.lower()
                        and _answered_without_tls(exc)):
                    # The registry itself, reached directly (not a token realm, not a proxy).
                    raise RegistryUnavailable(
                        f"{here}: the registry answered without TLS; if it serves plain HTTP "
                        "(a local or in-cluster registry), set plain_http = true (--plain-http) "
                        f"({_cause(exc)})"
                    ) from exc
                raise RegistryUnavailable(
                    f"{here}: cannot reach the registry ({_cause(exc)})"
                ) from exc
            except requests.RequestException as exc:
                raise RegistryProtocolError(f"{here}: request failed ({_cause(exc)})") from exc


# ------------------------------------------------------------ response helpers


def _path(repository: str) -> str:
    return quote(repository, safe="/")


def _netloc(url: str) -> str:
    return urlsplit(url).netloc[:200]


def _cause(exc: BaseException) -> str:
    # urllib3 nests the useful part ("Connection refused") deep inside; the
    # whole text is long but holds no credentials (those travel in headers).
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _failed_netloc(exc: BaseException) -> str | None:
    """host[:port] of the request that failed, as requests attaches it."""
    url = getattr(getattr(exc, "request", None), "url", None)
    return urlsplit(url).netloc if isinstance(url, str) else None


def _answered_without_tls(exc: BaseException) -> bool:
    """Whether the TLS handshake failed because the server sent something that is not
    TLS (OpenSSL's WRONG_VERSION_NUMBER): typically a plain-HTTP registry's answer.

    requests and urllib3 nest the ``ssl.SSLError`` in exception arguments and
    ``reason`` attributes rather than in ``__cause__``; this looks in all three.
    """
    pending: list[object] = [exc]
    seen = 0
    while pending and seen < 20:
        item = pending.pop()
        seen += 1
        if isinstance(item, ssl.SSLError):
            return getattr(item, "reason", None) == "WRONG_VERSION_NUMBER"
        if isinstance(item, BaseException):
            pending.extend([*item.args, getattr(item, "reason", None), item.__cause__])
    return False


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _read_capped(
    response: requests.Response, limit: int, error: Callable[[str], Exception], here: str,
    what: str,
) -> bytes:
    """The body, at most ``limit`` bytes: a declared Content-Length over the cap is refused
    before reading, a body that runs past it (a lying or missing header) after."""
    declared = _content_length(response)
    if declared is not None and declared > limit:
        raise error(f"{here}: {what} is {declared} bytes, over the limit of {limit} bytes")
    raw = _read_at_most(response, limit)
    if len(raw) > limit:
        raise error(f"{here}: {what} is over the limit of {limit} bytes")
    return raw


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


def _string_list(document: Mapping[str, Any], key: str, here: str) -> list[str]:
    value = document.get(key)
    if value is None:  # distribution answers "tags": null once every tag is deleted
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryProtocolError(f"{here}: {key!r} is not a list of strings")
    return value


__all__ = ["MAX_LISTING_BYTES", "RegistryClient"]

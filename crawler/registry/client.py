"""The synchronous registry client: one session, one thread, one attempt per call.

``RegistryClient`` owns one oras-py session (``oras_compat.OrasSession``), so
it must stay on one thread (oras-py and its auth backends keep mutable
per-session state).  It makes exactly one attempt per call and turns every
failure into one of ``crawler.registry.errors``.  Manifests are fetched by
hand because oras returns only parsed JSON (no digest, no media type, no
size limit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import quote, urljoin, urlsplit

import requests

from crawler.backoff import parse_retry_after
from crawler.registry import auth as credentials
from crawler.registry.endpoint import RegistryEndpoint
from crawler.registry.errors import (
    BadManifest,
    RegistryAuthFailed,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
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

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 1000  # n= for catalog and tags; distribution caps the catalog at 1000
# Page caps stop a registry that keeps inventing new pages: 1000 tag pages
# of 1000 is a million tags in one repository, far past any real package.
MAX_TAG_PAGES: Final = 1000
MAX_CATALOG_PAGES: Final = 100_000
MAX_LISTING_BYTES: Final = 32 * 1024 * 1024  # one catalog or tags page
_ERROR_BODY_BYTES: Final = 64 * 1024  # enough for any registry error document


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
        self._oras = OrasSession(endpoint)

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r}, username={self.endpoint.username!r})"

    def close(self) -> None:
        self._oras.session.close()

    # -- listings

    def catalog_page(self, url: str | None = None) -> tuple[list[str], str | None]:
        """One page of repository names and the absolute URL of the next page (None at the end)."""
        here = f"{self.endpoint.host} catalog"
        url = url or f"{self._base}/v2/_catalog?n={PAGE_SIZE}"
        document, next_url = self._get_listing("catalog", url, here)
        names = _string_list(document, "repositories", here)
        return names, next_url

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``, in the registry's order, each once.

        Follows ``Link: rel="next"``; stops when the next URL was already
        fetched, when a page adds no new tag, or after ``MAX_TAG_PAGES``
        pages, so a registry that repeats or loops cannot hold us forever.
        """
        here = f"{self.endpoint.host}/{repository} tags"
        url: str | None = f"{self._base}/v2/{_path(repository)}/tags/list?n={PAGE_SIZE}"
        seen_urls: set[str] = set()
        tags: list[str] = []
        known: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            if url is None or url in seen_urls:
                return tags
            seen_urls.add(url)
            document, url = self._get_listing("tags", url, here)
            fresh = [t for t in _string_list(document, "tags", here) if t not in known]
            if not fresh:
                return tags
            known.update(fresh)
            tags.extend(fresh)
        log.warning("%s: stopped after %d pages of tags", here, MAX_TAG_PAGES)
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
        limit = self.endpoint.max_manifest_bytes
        url = self._manifest_url(repository, reference)
        with self._translated(here):
            response = self._send("manifest_get", "GET", url, MANIFEST_ACCEPT, stream=True)
            try:
                self._check_status(response, here)
                declared = _content_length(response)
                if declared is not None and declared > limit:
                    raise BadManifest(
                        f"{here}: manifest is {declared} bytes, over the limit of {limit} bytes"
                    )
                raw = _read_at_most(response, limit)
            finally:
                response.close()
        if len(raw) > limit:
            raise BadManifest(f"{here}: manifest is over the limit of {limit} bytes")
        digest = checked_digest(raw, response.headers.get("Docker-Content-Digest"), reference, here)
        return classify(raw, response.headers.get("Content-Type"), digest, here)

    def head_manifest(self, repository: str, reference: str) -> str:
        """The manifest digest from a HEAD request (never a GET)."""
        here = where(self.endpoint.host, repository, reference)
        url = self._manifest_url(repository, reference)
        with self._translated(here):
            response = self._send("manifest_head", "HEAD", url, MANIFEST_ACCEPT, stream=False)
            try:
                self._check_status(response, here)
            finally:
                response.close()
        header = (response.headers.get("Docker-Content-Digest") or "").strip()
        if not valid_digest(header):
            raise RegistryProtocolError(
                f"{here}: HEAD answered without a usable Docker-Content-Digest "
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
        return self._oras.send(method, url, accept, stream=stream)

    def _get_listing(
        self, kind: str, url: str, here: str
    ) -> tuple[dict[str, Any], str | None]:
        if _origin(url) != self._origin:
            raise RegistryProtocolError(f"{here}: refusing to follow a link off the registry")
        with self._translated(here):
            response = self._send(kind, "GET", url, "application/json", stream=True)
            try:
                self._check_status(response, here)
                body = _read_at_most(response, MAX_LISTING_BYTES)
            finally:
                response.close()
        if len(body) > MAX_LISTING_BYTES:
            raise RegistryProtocolError(f"{here}: page is over {MAX_LISTING_BYTES} bytes")
        document = json_object(body, here, what="listing", error=RegistryProtocolError)
        link = response.links.get("next", {}).get("url")
        if not link:
            return document, None
        # Relative links are resolved against the page that carried them
        # (RFC 8288); distribution sends "/v2/...", which lands on the base.
        next_url = urljoin(url, link)
        if _origin(next_url) != self._origin:
            raise RegistryProtocolError(
                f"{here}: the next-page Link points off the registry ({_origin(next_url)})"
            )
        return document, next_url

    def _check_status(self, response: requests.Response, here: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        code, message = _registry_error(response)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        detail = credentials.scrub(detail, self.endpoint, self._oras.secrets())
        if status in (401, 403):
            raise RegistryAuthFailed(f"{here}: {credentials.refusal_hint(self.endpoint)} ({detail})")
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

    @contextmanager
    def _translated(self, here: str) -> Iterator[None]:
        """Turn transport and oras failures into this package's exceptions."""
        try:
            yield
        except AuthChallengeFailed:
            raise RegistryAuthFailed(f"{here}: {credentials.refusal_hint(self.endpoint)}") from None
        except requests.Timeout as exc:
            raise RegistryUnavailable(
                f"{here}: no answer within {self.endpoint.timeout_s:g}s"
            ) from exc
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise RegistryUnavailable(f"{here}: cannot reach the registry ({_cause(exc)})") from exc
        except requests.RequestException as exc:
            raise RegistryProtocolError(f"{here}: request failed ({_cause(exc)})") from exc


# ------------------------------------------------------------ response helpers


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


def _string_list(document: Mapping[str, Any], key: str, here: str) -> list[str]:
    value = document.get(key)
    if value is None:  # distribution answers "tags": null once every tag is deleted
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryProtocolError(f"{here}: {key!r} is not a list of strings")
    return value


__all__ = ["MAX_CATALOG_PAGES", "MAX_LISTING_BYTES", "MAX_TAG_PAGES", "PAGE_SIZE", "RegistryClient"]

"""The HTTP side of Akua: one shared ``httpx.AsyncClient``, one retrying layer.

How each answer is treated::

    2xx                      Created / page            done
    409                      Conflict                  caller decides (exists? other digest?)
    404 on create-version    PackageGone               caller re-imports
    401, 403                 RunAborted                the token will not fix itself: stop the run
    other 4xx                Rejected                  never retried; Akua's message kept
    429                      Throttled                 whole pool pauses (Retry-After) or backs off,
                                                       and the rate limiter slows down
    5xx, transport errors    Unavailable               retried with full-jitter backoff;
                                                       "ambiguous" when the request may have
                                                       reached the server
"""

from __future__ import annotations

import json
import math
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import anyio
import httpx
import structlog

from crawler import __version__
from crawler.api.envelope import error_message
from crawler.api.proxy import env_proxy
from crawler.api.transport import LeanPool
from crawler.contract import API_URL_DEFAULT, PAGE_LIMIT_MAX
from crawler.errors import Rejected, RunAborted, TransientFailure
from crawler.ratelimit import AdaptiveRateLimiter, LimiterClosed
from crawler.retry import RETRY_AFTER_MAX_S, GiveUp, Retry, RetryPolicy, parse_retry_after, retrying
from crawler.secret import Secret

T = TypeVar("T")
log = structlog.get_logger("crawler.api")

MAX_PAGES: Final = 100_000
MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
POOL_MIN: Final = 4
URL_CACHE_MAX: Final = 4096  # parsed request URLs kept, one per package path
POOL_MAX: Final = 512
POOL_HEADROOM: Final = 1.5
ASSUMED_LATENCY_S: Final = 0.2

# Failures where the request never left this machine: resending cannot duplicate.
# LocalProtocolError: a request the connection refused to send (a header with a line
# break, a body its Content-Length does not frame).
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                    httpx.LocalProtocolError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiEndpoint:
    url: str
    token: Secret = field(repr=False)
    workspace: str | None = None
    timeout_s: float = 30.0
    ca_file: str | None = None  # CA bundle trusted instead of the system's


@dataclass(frozen=True, slots=True)
class Created:
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Conflict:
    message: str


class PackageGone(Exception):
    """Create-version (or its version list) answered 404: the package id we hold is stale."""


class AmbiguousWrite(Exception):
    """A create-version failed after it may have reached Akua: look before sending it again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Throttled(Exception):
    def __init__(self, retry_after: float | None, *, limit: bool) -> None:
        self.retry_after = retry_after
        self.limit = limit  # the limiter slowed down for it: its Retry-After pauses the pool


class _Unavailable(Exception):
    def __init__(self, reason: str, *, ambiguous: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous


@dataclass(slots=True)
class ApiStatistics:
    requests: int = 0
    connections_opened: int = 0  # by the lean pool (0 through a proxy)
    pool_size: int = 0
    writes_sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0


def pool_size(rate: float, latency_s: float | None) -> int:
    """Connections to Akua by Little's law: requests in flight = rate x latency, with headroom.

    Before any answer, a latency of ``ASSUMED_LATENCY_S`` is assumed; the pool then follows
    the limiter's smoothed latency and current rate.
    """
    latency = ASSUMED_LATENCY_S if latency_s is None else latency_s
    return max(POOL_MIN, min(POOL_MAX, math.ceil(rate * latency * POOL_HEADROOM) + POOL_MIN))


def _verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verification always; with ``ca_file``, against that bundle (not SSL_CERT_FILE or the system's)."""
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=ca_file)


def _pool_tls(url: str, verify: ssl.SSLContext | bool) -> ssl.SSLContext | None:
    """The lean pool's TLS context; None for a plain-HTTP API (redirects are never followed).

    Building the default context loads the CA bundle (about 0.1 s), which a plain-HTTP
    API never needs.
    """
    if isinstance(verify, ssl.SSLContext):
        return verify
    return httpx.create_ssl_context() if url.lower().startswith("https:") else None


class AkuaClient:
    def __init__(
        self,
        endpoint: ApiEndpoint,
        limiter: AdaptiveRateLimiter,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._limiter = limiter
        self._policy = policy or RetryPolicy()
        self._stats = ApiStatistics()
        headers = {
            "Authorization": f"Bearer {endpoint.token.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"akua-crawler/{__version__}",
        }
        if endpoint.workspace:
            headers["akua-context"] = endpoint.workspace
        verify = _verify(endpoint.ca_file)
        self._pool: LeanPool | None = None
        if transport is None and env_proxy(endpoint.url, os.environ) is None:
            # Direct (config checked "loopback reached directly" by the same rules): the lean
            # pool, sized by Little's law as the run goes.  An explicit transport also keeps
            # httpx from reading proxy variables, so the route is the one checked.
            self._pool = transport = LeanPool(
                size=pool_size(limiter.rate, None),
                ssl_context=_pool_tls(endpoint.url, verify),
                max_body_bytes=MAX_RESPONSE_BYTES,
            )
        # The direct route skips httpx.AsyncClient's per-request layers (URL merging,
        # auth and redirect flows, cookies): the request is built here and handed to the
        # lean pool, about a tenth of a write's CPU.  Same headers, same timeouts.
        self._direct_headers = [*headers.items()]
        self._direct_extensions = {"timeout": httpx.Timeout(endpoint.timeout_s).as_dict()}
        self._urls: dict[str, httpx.URL] = {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(endpoint.timeout_s),
            # Through a proxy, httpx's own pool; its per-request cost grows with its size.
            limits=httpx.Limits(max_connections=max(POOL_MIN, concurrency),
                                max_keepalive_connections=max(POOL_MIN, concurrency)),
            follow_redirects=False,  # a redirect must never carry the token elsewhere
            transport=transport,
            verify=verify,
        )

    def __repr__(self) -> str:
        return f"AkuaClient(url={self.endpoint.url!r}, workspace={self.endpoint.workspace!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._http.aclose()

    def statistics(self) -> ApiStatistics:
        if self._pool is not None:
            self._stats.connections_opened = self._pool.opened
            self._stats.pool_size = self._pool.size
        return self._stats

    def writes_wanted(self) -> int:
        """Writes in flight that cover the rate at the latency seen so far (Little's law)."""
        return pool_size(self._limiter.rate, self._limiter.latency_s)

    @property
    def policy(self) -> RetryPolicy:
        """The retry budgets and backoff of Akua calls, for callers that retry on their own."""
        return self._policy

    # -- the calls ----------------------------------------------------------

    async def import_package(self, body: dict[str, Any], idempotency_key: str) -> Created | Conflict:
        what = f"import {body.get('oci_ref')} {body.get('version', {}).get('semver')}"

        async def once() -> Created | Conflict:
            response = await self._send(
                "POST", "packages:import", body=body, headers={"idempotency-key": idempotency_key}
            )
            if response.status_code == 404:  # not a documented answer of import: a wrong URL
                raise self._wrong_url(response, what)
            return self._write_result(response, what)

        # The idempotency key makes a blind resend safe: Akua answers with the package.
        return await self._with_retries(what, once)

    async def create_version(self, package_id: str, body: dict[str, Any]) -> Created | Conflict:
        """One create-version, resent only where resending cannot duplicate it.

        Create-version has no idempotency key: a failure after the request may
        have reached Akua raises ``AmbiguousWrite`` and the caller (the importer)
        decides whether to look before sending again.
        """
        what = f"create version {body.get('semver')} of {package_id}"
        path = f"packages/{quote(package_id, safe='')}/versions"

        async def once() -> Created | Conflict:
            response = await self._send("POST", path, body=body)
            if response.status_code == 404:
                raise PackageGone(package_id)
            return self._write_result(response, what)

        try:
            return await self._with_retries(what, once, resend_ambiguous=False)
        except _Unavailable as trouble:  # ambiguous: left to the caller
            raise AmbiguousWrite(f"{what}: {trouble.reason}") from None

    async def packages(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self._pages("packages", "list packages"):
            yield item

    async def versions(self, package_id: str) -> AsyncIterator[dict[str, Any]]:
        path = f"packages/{quote(package_id, safe='')}/versions"
        async for item in self._pages(path, f"list versions of {package_id}", package_id):
            yield item

    # -- machinery ----------------------------------------------------------

    async def _pages(
        self, path: str, what: str, package_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE_LIMIT_MAX)}
            if cursor:
                params["cursor"] = cursor

            async def once(params: dict[str, str] = params) -> dict[str, Any]:
                response = await self._send("GET", path, params=params)
                if response.status_code == 404:
                    if package_id is not None:
                        raise PackageGone(package_id)  # the package, not the URL, is gone
                    raise self._wrong_url(response, what)
                self._raise_for_refusal(response, what)
                if response.status_code != 200:
                    raise Rejected(f"{what}: {self._message(response)}")
                return self._json_object(response, what)

            page = await self._with_retries(what, once)
            data = page.get("data")
            if not isinstance(data, list):
                raise TransientFailure(f"{what}: page without a data list")
            for item in data:
                if isinstance(item, dict):
                    yield item
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not isinstance(cursor, str) or not cursor:
                return
            if cursor in seen:  # a server handing out the same cursor again would loop forever
                raise TransientFailure(f"{what}: cursor repeated, stopping")
            seen.add(cursor)
        raise TransientFailure(f"{what}: more than {MAX_PAGES} pages")

    async def _with_retries(
        self, what: str, once: Callable[[], Awaitable[T]], *, resend_ambiguous: bool = True
    ) -> T:
        def classify(exc: Exception) -> Retry | None:
            if isinstance(exc, _Throttled):
                return Retry("throttled", "HTTP 429", exc.retry_after, pool_wide=exc.limit)
            if isinstance(exc, _Unavailable) and (resend_ambiguous or not exc.ambiguous):
                return Retry("unavailable", exc.reason)
            return None

        def give_up(exc: Exception, why: GiveUp) -> BaseException:
            if why.too_long:
                reason = (
                    f"Akua asked to wait {why.verdict.retry_after:.0f} s (Retry-After), longer than "
                    f"the {RETRY_AFTER_MAX_S:.0f} s a run waits: unavailable for this run"
                )
                self._limiter.close(reason)  # the calls still queued fail now, without sending
                return TransientFailure(f"{what}: {reason}")
            if why.verdict.kind == "throttled":
                return TransientFailure(f"{what}: still throttled (429) after {why.tries} tries")
            return TransientFailure(f"{what}: {why.verdict.reason} (gave up after {why.tries} tries)")

        return await retrying(
            once, what=what, policy=self._policy, classify=classify, give_up=give_up,
            pause=self._limiter.pause, event="api.retry",
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            sent_at = await self._limiter.acquire()
        except LimiterClosed as closed:
            raise TransientFailure(closed.reason) from None
        is_write = method != "GET"
        self._stats.requests += 1
        if is_write:
            self._stats.writes_sent += 1
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        # httpx's timeouts are per phase; this scope's deadline bounds the whole exchange
        # (a plain scope: anyio.fail_after wraps it in two more context managers).
        whole = anyio.CancelScope(deadline=anyio.current_time() + self.endpoint.timeout_s * 2)
        try:
            with whole:
                if self._pool is not None and params is None:
                    response = await self._pool.handle_async_request(
                        self._direct_request(method, path, content, headers)
                    )
                else:
                    # Joined by hand: as a relative reference "packages:import" would parse as
                    # a scheme.
                    response = await self._http.request(
                        method, f"{self.endpoint.url}/{path}", content=content, headers=headers,
                        params=params,
                    )
        except _NOT_SENT as exc:
            self._stats.transport_errors += 1
            raise _Unavailable(_describe(exc), ambiguous=False) from None
        except (httpx.TransportError, TimeoutError) as exc:
            self._stats.transport_errors += 1
            raise _Unavailable(_describe(exc), ambiguous=is_write) from None
        if whole.cancelled_caught:
            self._stats.transport_errors += 1
            raise _Unavailable(_describe(TimeoutError()), ambiguous=is_write)
        self._stats.by_status[response.status_code] = (
            self._stats.by_status.get(response.status_code, 0) + 1
        )
        if self._pool is not None:
            self._pool.resize(pool_size(self._limiter.rate, self._limiter.latency_s))
        if 300 <= response.status_code < 400:
            # Redirects are never followed (the token would go along), and Akua's API has none:
            # the URL is wrong for every item alike, so the run stops.
            raise self._wrong_url(response, f"{method} {path}")
        if response.status_code == 429:
            # Only a 429 the limiter takes for a limit pauses the pool; one it takes for
            # noise (a few in a hundred) makes this request alone wait its Retry-After.
            limit = self._limiter.throttled(sent_at)
            raise _Throttled(parse_retry_after(response.headers.get("Retry-After")), limit=limit)
        self._limiter.succeeded(sent_at)
        if response.status_code >= 500:
            # A 5xx after a write may come after the write was committed.
            raise _Unavailable(self._message(response), ambiguous=is_write)
        return response

    def _direct_request(
        self, method: str, path: str, content: bytes | None, headers: dict[str, str] | None
    ) -> httpx.Request:
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(f"{self.endpoint.url}/{path}")  # joined by hand, as above
            if len(self._urls) < URL_CACHE_MAX:  # a package's path serves all its versions
                self._urls[path] = url
        merged = [*self._direct_headers, *headers.items()] if headers else self._direct_headers
        return httpx.Request(method, url, content=content, headers=merged,
                             extensions=self._direct_extensions)

    def _write_result(self, response: httpx.Response, what: str) -> Created | Conflict:
        status = response.status_code
        if status in (200, 201):
            return Created(self._json_object(response, what))
        if status == 409:
            return Conflict(self._message(response))
        self._raise_for_refusal(response, what)
        raise Rejected(self._message(response))

    def _wrong_url(self, response: httpx.Response, what: str) -> RunAborted:
        status = response.status_code
        answer = f"a redirect ({status}) to {response.headers.get('Location', '?')!r}" if status < 400 else (
            f"{self._message(response)}"
        )
        text = (
            f"Akua answered {answer} to {what} at {self.endpoint.url}: that answer says nothing about "
            "the artifact, the API URL is wrong; check api_url (the API base with its version, "
            f"e.g. {API_URL_DEFAULT})"
        )
        return RunAborted(text.replace(self.endpoint.token.reveal(), "***"))

    def _raise_for_refusal(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise RunAborted(
                f"Akua refused the token on {what} ({self._message(response)}); "
                "check AKUA_API_TOKEN and the workspace"
            )

    def _message(self, response: httpx.Response) -> str:
        text = error_message(
            response.status_code, response.content[:MAX_RESPONSE_BYTES],
            response.headers.get("Content-Type", ""),
        )
        # A server echoing the Authorization header back must not leak it into our logs.
        return text.replace(self.endpoint.token.reveal(), "***")

    def _json_object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # After a write the server may well have committed; look before resending.
            raise _Unavailable(
                f"{what}: HTTP {response.status_code} without a JSON object body",
                ambiguous=response.request.method != "GET",
            )
        return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

"""The async facade over one registry: bounded concurrency, retries, counters.

The sync clients (``crawler.registry.client``) run on the registry's own
worker threads (``crawler.registry.lane``, named ``"registry"``), one client
per thread, at most ``max_in_flight`` at once.  This is the only layer that
retries.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import anyio.to_thread

from crawler.credentials import end_helper
from crawler.deadline import Call, running
from crawler.errors import ConfigError, CrawlerError
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.registry.auth import with_docker_credentials
from crawler.registry.client import RegistryClient
from crawler.registry.endpoint import RegistryEndpoint
from crawler.registry.errors import RegistryNotFound, RegistryProtocolError, RegistryUnavailable
from crawler.registry.lane import ThreadLane
from crawler.registry.listing import MAX_CATALOG_PAGES, MAX_REPOSITORIES, Pager
from crawler.registry.manifests import SCHEMA_ANNOTATION, Manifest
from crawler.retry import RETRY_AFTER_MAX_S, GiveUp, Retry, RetryPolicy, retrying

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryStatistics:
    limiter_name: str
    max_in_flight: int
    in_flight: int  # worker threads running a registry call right now
    waiting: int  # calls queued for a worker thread
    requests: Mapping[str, int]  # HTTP requests sent, by kind
    retries: int  # calls tried again after RegistryUnavailable
    failures: int  # calls that raised after their last attempt

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


REQUEST_KINDS: Final = ("catalog", "tags", "manifest_get", "manifest_head", "blob_get")


class Registry:
    """Async access to one registry: bounded concurrency, retries, counters.

    The sync clients run on the registry's worker threads, at most
    ``max_in_flight`` at once (lane ``"registry"``), one client per thread.  Only
    ``RegistryUnavailable`` is retried (``crawler.retry``), after ``RetryPolicy.delay`` or the
    registry's Retry-After; the last error is re-raised.  Use it within one
    event loop (the lane binds to the first loop that uses it).
    """

    limiter_name: Final = "registry"

    def __init__(
        self,
        endpoint: RegistryEndpoint,
        *,
        max_in_flight: int = 8,
        policy: RetryPolicy | None = None,
        rate: AdaptiveRateLimiter | None = None,
        schema_keys: Sequence[str] = (SCHEMA_ANNOTATION,),
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"registry {endpoint.host}: max_in_flight must be >= 1")
        self.endpoint = endpoint
        self.max_in_flight = max_in_flight
        self.policy = policy or RetryPolicy()
        # Which annotations make an index the artifact itself (see manifests.resolve).
        self.schema_keys = tuple(schema_keys)
        # The "registry" lane: its threads bound sessions and concurrent requests
        # for this registry, apart from anyio's default pool.
        self._lane = ThreadLane(self.limiter_name, max_in_flight)
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
        self._lane.close()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def statistics(self) -> RegistryStatistics:
        lane = self._lane.statistics()
        with self._lock:
            return RegistryStatistics(
                limiter_name=self.limiter_name,
                max_in_flight=self.max_in_flight,
                in_flight=lane.running,
                waiting=lane.waiting,
                requests=dict(self._requests),
                retries=self._retries,
                failures=self._failures,
            )

    async def resolve_credentials(self) -> RegistryEndpoint:
        """Fill in the Docker config's credentials once, before the first request.

        A credential helper may run (on a worker thread, for at most the request
        timeout).  Cancelled (a signal), the call returns at once and the helper
        is killed.  Call it before any other call; the clients take the endpoint
        as it is when they are made.
        """
        helpers: list[subprocess.Popen[bytes]] = []
        try:
            self.endpoint = await anyio.to_thread.run_sync(
                functools.partial(with_docker_credentials, self.endpoint, helpers.append),
                abandon_on_cancel=True,
            )
        except anyio.get_cancelled_exc_class():
            for process in helpers:
                end_helper(process)
            raise
        return self.endpoint

    async def check_access(self) -> None:
        """``GET /v2/`` with the configured credentials (``RegistryAuthFailed`` if refused)."""
        await self._call(RegistryClient.check_access)

    async def repositories(self) -> AsyncIterator[str]:
        """Every repository name in the catalog, each once, page by page (see ``listing``)."""
        pager: Pager | None = None
        while pager is None or pager.next_url is not None:
            url = None if pager is None else pager.next_url
            try:
                page = await self._call(functools.partial(RegistryClient.catalog_page, url=url))
            except (RegistryNotFound, RegistryProtocolError):
                if pager is not None and pager.probe_refused():
                    return
                raise
            if pager is None:
                pager = Pager(
                    "repositories", f"{self.endpoint.host} catalog", page.url,
                    MAX_REPOSITORIES, MAX_CATALOG_PAGES,
                )
            for name in pager.take(page):
                yield name

    async def tags(self, repository: str) -> list[str]:
        return await self._call(functools.partial(RegistryClient.list_tags, repository=repository))

    async def manifest(self, repository: str, reference: str) -> Manifest:
        return await self._call(
            functools.partial(
                RegistryClient.get_manifest,
                repository=repository,
                reference=reference,
                schema_keys=self.schema_keys,
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
            manifest = client.get_manifest(repository, reference, self.schema_keys)
            return manifest, then(manifest)

        return await self._call(fetch)

    async def blob_then(
        self, repository: str, digest: str, max_bytes: int, then: Callable[[bytes], T]
    ) -> T:
        """``then(blob)`` on the worker thread that fetched the blob (checked against ``digest``).

        The bytes (up to ``max_bytes``) stay on that thread: only ``then``'s
        result comes back to the event loop.
        """

        def fetch(client: RegistryClient) -> T:
            return then(client.get_blob(repository, digest, max_bytes))

        return await self._call(fetch)

    async def head(self, repository: str, reference: str) -> str:
        return await self._call(
            functools.partial(
                RegistryClient.head_manifest, repository=repository, reference=reference
            )
        )

    async def heads(self, repository: str, references: Sequence[str]) -> dict[str, str]:
        """The digest of each reference, by HEAD, all on one worker thread (one hop)."""
        if not references:
            return {}

        def each(client: RegistryClient) -> dict[str, str]:
            return {ref: client.head_manifest(repository, ref) for ref in references}

        return await self._call(each)

    async def _call(self, operation: Callable[[RegistryClient], T]) -> T:
        # Every registry failure shares one budget (``policy.attempts``), 429s included.
        policy = RetryPolicy(attempts=max(1, self.policy.attempts),
                             throttled_attempts=max(1, self.policy.attempts),
                             base_s=self.policy.base_s, cap_s=self.policy.cap_s)
        tries = 0

        async def once() -> T:
            nonlocal tries
            if tries:
                with self._lock:
                    self._retries += 1
            tries += 1
            sent_at = await self._rate.acquire() if self._rate is not None else None
            call = Call()
            try:
                # Abandonable: a cancelled call (signal, grace period over) returns at once;
                # abort() shuts its sockets so the thread stops too, instead of running on
                # until its request deadline.
                return await self._lane.run(
                    functools.partial(self._run, operation, call), on_cancel=call.abort
                )
            except RegistryUnavailable as exc:
                if self._rate is not None and exc.retry_after is not None:
                    self._rate.throttled(sent_at)
                raise

        def classify(exc: Exception) -> Retry | None:
            if isinstance(exc, RegistryUnavailable):
                return Retry("unavailable", exc.reason, exc.retry_after)
            return None

        def give_up(exc: Exception, why: GiveUp) -> BaseException:
            if why.too_long and isinstance(exc, RegistryUnavailable):
                return RegistryUnavailable(
                    f"{exc.reason}; the registry asked to wait {why.verdict.retry_after:.0f} s "
                    f"(Retry-After), longer than the {RETRY_AFTER_MAX_S:.0f} s a run waits: "
                    "unavailable for this run"
                )
            return exc

        try:
            return await retrying(
                once, what="registry request", policy=policy, classify=classify, give_up=give_up,
                event="registry.retry",
            )
        except CrawlerError:
            self._count_failure()
            raise

    def _count_failure(self) -> None:
        with self._lock:
            self._failures += 1

    def _run(self, operation: Callable[[RegistryClient], T], call: Call) -> T:
        # Runs on a worker thread: each thread builds and keeps its own client.
        with running(call):
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


__all__ = ["REQUEST_KINDS", "Registry", "RegistryStatistics"]

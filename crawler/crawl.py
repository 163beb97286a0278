"""The run: producer, repository workers, state writer, all in task groups.

::

    catalog / --repository ──► [repositories: bounded stream] ──► N repository workers
                                                                      │  registry: threads behind the
                                                                      │  "registry" CapacityLimiter
                                                                      │  Akua: one AsyncClient behind
                                                                      │  the adaptive token bucket
                                                                      ▼
                                                  [state writes: bounded stream] ──► single state writer
                                                                                     (SQLite, one thread)

Stopping: the first SIGTERM/SIGINT sets ``stopping`` (the producer stops,
workers finish the version in hand) and starts a grace period; when it ends,
or on a second signal, the work scope is cancelled.  The state writer is
outside that scope and drains what was confirmed before the run returns.
"""

from __future__ import annotations

import base64
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Final

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from crawler.api.client import AkuaClient, ApiEndpoint
from crawler.api.directory import PackageDirectory
from crawler.backoff import RetryPolicy
from crawler.config import Settings
from crawler.errors import (
    CrawlerError,
    ItemError,
    RepositoryRefused,
    RunAborted,
    RunError,
    TransientFailure,
)
from crawler.importer import Importer
from crawler.job import JobContext, RepositoryJob, StateWrite
from crawler.logs import protect
from crawler.outcomes import Outcome
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.registry import Registry, RegistryAuthFailed, RegistryEndpoint, RegistryUnavailable
from crawler.registry.auth import user_of, with_docker_credentials
from crawler.report import Reporter, RunSummary
from crawler.state import ItemRecord, StateStore

log = structlog.get_logger("crawler")

#: This many items in a row failing on the same service means it is down: stop the run.
FAILURE_STREAK_MAX: Final = 10
WRITE_BATCH_MAX: Final = 256


@dataclass(slots=True)
class StopControl:
    """Shared between the signal watcher and the run."""

    stopping: anyio.Event
    work_scope: anyio.CancelScope
    reason: str | None = None


class FailureStreak:
    """Counts consecutive transient failures per service; a success resets it."""

    def __init__(self, limit: int = FAILURE_STREAK_MAX) -> None:
        self.limit = limit
        self._streak = {"registry": 0, "akua": 0}

    def observe(self, outcome: Outcome, exc: BaseException | None) -> None:
        if outcome is Outcome.FAILED and isinstance(exc, TransientFailure):
            service = "registry" if isinstance(exc, RegistryUnavailable) else "akua"
            self._streak[service] += 1
            if self._streak[service] >= self.limit:
                raise RunAborted(
                    f"{service} looks down: {self.limit} items in a row failed; last: {exc.reason}"
                )
        elif outcome.is_success:
            self._streak = dict.fromkeys(self._streak, 0)


#: With no repository granted yet, this many refused repositories mean the run cannot work.
REFUSALS_MAX: Final = 10


class RepositoryAccess:
    """The run-level rule for per-repository refusals (``RepositoryRefused``).

    One refused repository ends alone; the run aborts only when every
    repository so far was refused: at the ``limit``-th refusal with none
    granted, or at the end of a run in which none was granted.
    """

    def __init__(self, user: str, limit: int = REFUSALS_MAX) -> None:
        self.user = user
        self.limit = limit
        self.granted = 0
        self.refused = 0
        self._last: str | None = None

    def observe(self, repository: str, refusal: RepositoryRefused | None) -> None:
        if refusal is None:
            self.granted += 1
            return
        self.refused += 1
        self._last = refusal.reason
        if self.granted == 0 and self.refused >= self.limit:
            raise RunAborted(self._reason())

    def check_end(self) -> None:
        if self.granted == 0 and self.refused > 0:
            raise RunAborted(self._reason())

    def _reason(self) -> str:
        return (
            f"the registry refused every repository so far ({self.refused} of {self.refused}) "
            f"to user {self.user}; last: {self._last}"
        )


REGISTRY_RETRY: Final = RetryPolicy(attempts=4, base_s=0.5, cap_s=10.0)


def _request_counts(registry: Registry, api: AkuaClient | None) -> dict[str, int]:
    """What the run cost each service, for the run.finished event and the benchmark."""
    counts = {f"registry_{kind}": n for kind, n in registry.statistics().requests.items()}
    if api is not None:
        stats = api.statistics()
        counts["api_requests"] = stats.requests
        counts["api_writes"] = stats.writes_sent
        counts["api_429"] = stats.by_status.get(429, 0)
    return counts


def registry_endpoint(settings: Settings) -> RegistryEndpoint:
    return RegistryEndpoint(
        host=settings.registry,
        plain_http=settings.plain_http,
        insecure=settings.insecure,
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        use_docker_config=settings.docker_config and settings.username is None,
        timeout_s=settings.registry_timeout,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        client_cert=str(settings.client_cert) if settings.client_cert else None,
        client_key=str(settings.client_key) if settings.client_key else None,
    )


def target_of(settings: Settings) -> str:
    return f"{settings.api_url} workspace={settings.workspace or '-'}"


async def crawl(
    settings: Settings,
    *,
    mode: str,
    reporter: Reporter,
    stop: StopControl,
    state: StateStore | None = None,
) -> RunSummary:
    """Run or plan one crawl; returns the summary, raises RunError subclasses.

    ``state``: already opened by the caller (who records the run in it and closes it);
    None opens and closes it here.
    """
    summary = reporter.summary
    endpoint = registry_endpoint(settings)
    if endpoint.use_docker_config:
        # Files and credential helpers block: one worker thread, once per run, before
        # any registry request; a broken helper aborts here (exit 3) naming itself.
        endpoint = await anyio.to_thread.run_sync(
            with_docker_credentials, endpoint, limiter=anyio.CapacityLimiter(1)
        )
        if endpoint.username is not None and endpoint.password is not None:
            basic = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode())
            protect(endpoint.password, basic.decode())
    registry_rate = None
    if settings.registry_rate is not None:
        registry_rate = AdaptiveRateLimiter(
            settings.registry_rate, max(1, int(settings.registry_rate / 10)), name="registry"
        )
    registry = Registry(
        endpoint,
        max_in_flight=settings.registry_in_flight,
        policy=REGISTRY_RETRY,
        rate=registry_rate,
        schema_keys=settings.schema_annotations,
    )
    owned = state is None  # else the caller opened it (to record the run) and closes it
    if state is None:
        state = await anyio.to_thread.run_sync(
            lambda: StateStore(settings.state, target=target_of(settings), readonly=mode == "plan")
        )
    state_lane = anyio.CapacityLimiter(1)  # the single thread that touches SQLite
    api: AkuaClient | None = None
    limiter: AdaptiveRateLimiter | None = None
    try:
        async with AsyncExitStack() as stack:
            stack.callback(registry.close)
            importer = None
            if mode == "run":
                limiter = AdaptiveRateLimiter(settings.rate, settings.burst)
                reporter.akua_rate = limiter
                api = await stack.enter_async_context(_api(settings, limiter))
                importer = Importer(api, PackageDirectory(api))
            await _pipeline(settings, mode, registry, importer, state, state_lane, reporter, stop)
    except RunAborted as exc:
        summary.aborted = str(exc)
        raise
    finally:
        summary.requests = _request_counts(registry, api)
        if limiter is not None:
            rate = limiter.statistics()
            summary.throttling = {"throttled": rate.throttled, "pauses": rate.pauses,
                                  "paused_s": round(rate.paused_s, 3)}
        if owned:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.close, limiter=state_lane)
    return summary


def _api(settings: Settings, limiter: AdaptiveRateLimiter) -> AkuaClient:
    if settings.token is None:
        raise RunAborted("no Akua token")  # config checks this first; kept for type safety
    endpoint = ApiEndpoint(
        url=settings.api_url,
        token=settings.token,
        workspace=settings.workspace,
        timeout_s=settings.api_timeout,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
    )
    return AkuaClient(endpoint, limiter, concurrency=settings.concurrency)


async def _pipeline(
    settings: Settings,
    mode: str,
    registry: Registry,
    importer: Importer | None,
    state: StateStore,
    state_lane: anyio.CapacityLimiter,
    reporter: Reporter,
    stop: StopControl,
) -> None:
    workers = settings.concurrency
    repo_send, repo_receive = anyio.create_memory_object_stream[str](workers)
    write_send, write_receive = anyio.create_memory_object_stream[StateWrite](workers * 4)
    streak = FailureStreak()
    access = RepositoryAccess(user_of(registry.endpoint))

    async def read_items(repository: str) -> dict[str, list[ItemRecord]]:
        return await anyio.to_thread.run_sync(
            state.repository_items, settings.registry, repository, limiter=state_lane
        )

    async def read_package(oci_ref: str) -> str | None:
        return await anyio.to_thread.run_sync(state.package_id, oci_ref, limiter=state_lane)

    ctx = JobContext(
        registry_host=settings.registry,
        registry=registry,
        importer=importer,
        reporter=reporter,
        writes=write_send if mode == "run" else None,
        schema_keys=settings.schema_annotations,
        remote_refs=settings.remote_refs,
        recheck_digests=settings.recheck_digests,
        read_items=read_items,
        read_package=read_package,
        stopping=stop.stopping,
        on_result=streak.observe,
        on_access=access.observe,
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as outer:
        outer.start_soon(_state_writer, state, state_lane, write_receive)
        async with write_send:
            try:
                with stop.work_scope:
                    async with anyio.create_task_group() as work:
                        work.start_soon(_produce, settings, registry, repo_send, stop, reporter)
                        for _ in range(workers):
                            work.start_soon(_work, ctx, repo_receive.clone(), write_send.clone())
                        repo_receive.close()
            except Exception as exc:  # noqa: BLE001 - re-raised once the writer has drained
                failure = exc
    if failure is not None:
        raise _unwrap(failure)
    if not stop.stopping.is_set():
        access.check_end()


def _unwrap(exc: Exception) -> Exception:
    """A RunError from inside the task groups, unwrapped; anything else unchanged."""
    if isinstance(exc, ExceptionGroup):
        for inner in exc.exceptions:
            found = _unwrap(inner)
            if isinstance(found, RunError):
                return found
    return exc


async def _produce(
    settings: Settings,
    registry: Registry,
    send: MemoryObjectSendStream[str],
    stop: StopControl,
    reporter: Reporter,
) -> None:
    async with send:
        await _check_access(settings, registry)
        seen: set[str] = set()
        async for repository in _repositories(settings, registry):
            if stop.stopping.is_set():
                return
            if repository in seen:
                continue
            seen.add(repository)
            try:
                await send.send(repository)
            except anyio.BrokenResourceError:  # every worker stopped (signal): nothing to feed
                return
        reporter.repositories_total = len(seen)


async def _check_access(settings: Settings, registry: Registry) -> None:
    """GET /v2/ first: refused credentials stop the run before any repository is tried."""
    try:
        await registry.check_access()
    except RegistryAuthFailed as exc:
        raise RunAborted(exc.reason) from None
    except ItemError as exc:
        raise RunAborted(
            f"cannot list the repositories of {settings.registry}: {exc.reason}"
        ) from None


async def _repositories(settings: Settings, registry: Registry) -> AsyncIterator[str]:
    if settings.repositories:
        for repository in settings.repositories:
            yield repository
        return
    try:
        async for repository in registry.repositories():
            yield repository
    except (ItemError, CrawlerError) as exc:
        reason = getattr(exc, "reason", str(exc))
        raise RunAborted(f"cannot list the repositories of {settings.registry}: {reason}") from None


async def _work(
    ctx: JobContext,
    repositories: MemoryObjectReceiveStream[str],
    writes: MemoryObjectSendStream[StateWrite],
) -> None:
    async with repositories, writes:
        async for repository in repositories:
            if ctx.stopping.is_set():
                return
            await RepositoryJob(ctx, repository).run()
            ctx.reporter.repository_done()


async def _state_writer(
    state: StateStore,
    lane: anyio.CapacityLimiter,
    receive: MemoryObjectReceiveStream[StateWrite],
) -> None:
    """The only writer: batches what is waiting into one durable transaction."""
    async with receive:
        async for first in receive:
            batch = [first]
            while len(batch) < WRITE_BATCH_MAX:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            items = [item for write in batch for item in write.items]
            packages = [package for write in batch for package in write.packages]
            # Shielded: a confirmed outcome is recorded even while the run is being cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.write, items, packages, limiter=lane)


def make_stop_control() -> StopControl:
    return StopControl(stopping=anyio.Event(), work_scope=anyio.CancelScope())


async def watch_signals(
    stop: StopControl, grace_period: float, signals: tuple[signal.Signals, ...], task_group: TaskGroup,
    on_signal: Callable[[str], None],
) -> None:
    """First signal: stop taking work, cancel after the grace period. Second: cancel now."""
    with anyio.open_signal_receiver(*signals) as received:
        async for signum in received:
            name = signal.Signals(signum).name
            if not stop.stopping.is_set():
                stop.reason = name
                stop.stopping.set()
                on_signal(name)
                task_group.start_soon(_cancel_after, stop, grace_period)
            else:
                log.warning("run.stopping_now", signal=name)
                stop.work_scope.cancel()


async def _cancel_after(stop: StopControl, grace_period: float) -> None:
    await anyio.sleep(grace_period)
    log.warning("run.grace_period_over", grace_period_s=grace_period)
    stop.work_scope.cancel()

"""The run: producer, listers, repository jobs, state writer, all in task groups.

::

    catalog / --repository ──► [repositories: bounded] ──► listers (``concurrency``)
                                                               │ tags, state, decide: settled
                                                               │ versions end here
                                                               ▼
                                        a task per repository with versions to read
                                          reads ahead through [read-ahead: bounded slots]
                                            registry: threads behind the "registry" limiter
                                          writes in SemVer order, one package per task
                                            Akua: one AsyncClient, adaptive token bucket
                                                               ▼
                                         Ledger.finish ──► [state writes: bounded] ──► state writer
                                                                                     (SQLite, one thread)

Stopping (``signals.py``): the first SIGTERM/SIGINT sets ``stopping`` (the
producer and the listers stop, each repository finishes the version in hand)
and gives the work scope a deadline at the end of the grace period; a second
signal cancels it at once.  The state writer is outside that scope and
drains what was confirmed before the run returns.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from crawler import decision
from crawler.config import Settings, SourceSettings
from crawler.errors import (
    ItemError,
    RepositoryRefused,
    RunAborted,
    RunError,
    SourceFailed,
    StateWriteFailed,
    TransientFailure,
)
from crawler.job import ReadAhead, RepositoryJob, RepositoryRecords, RunContext, Version
from crawler.kcl_pool import KclWorkers
from crawler.ledger import ItemResult, Ledger, StateWrite
from crawler.logs import protect
from crawler.outcomes import Outcome
from crawler.package_schema import KCL_SLOTS, SOURCE_PACKAGE, PackageSchemas
from crawler.payload import repository_name_problem
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.registry import Registry, RegistryEndpoint, RegistryUnavailable
from crawler.registry.auth import user_of
from crawler.report import ItemReport, Reporter, RunSummary
from crawler.retry import RetryPolicy
from crawler.selection import select
from crawler.signals import StopControl
from crawler.source import Source
from crawler.source_health import SourceHealth
from crawler.state import StateStore
from crawler.write_order import WriteOrder, current_rank

if TYPE_CHECKING:  # the Akua client (httpx) is imported by a run only, not by plan
    from crawler.api.client import AkuaClient
    from crawler.importer import Importer

log = structlog.get_logger("crawler")
T = TypeVar("T")

#: Items of this many distinct repositories failing in a row on one service: it is down.
FAILURE_STREAK_MAX: Final = 10
WRITE_BATCH_MAX: Final = 256
#: Read-ahead slots per unit of max(concurrency, registry_in_flight): versions read and
#: waiting for their write, across all repositories.
READ_AHEAD_FACTOR: Final = 4


class FailureStreak:
    """Whether a service looks down: transient failures in a row across distinct repositories.

    Per service (Akua, and each registry apart), the repositories whose items failed
    since the last success on that service are counted; a success resets Akua's and
    its registry's count.  ``limit`` distinct repositories failing in a row means the
    service is down: Akua aborts the run, a registry stops its source (SourceFailed).
    One repository whose every manifest answers 500 counts once: it ends failed and
    the others go on.
    """

    def __init__(self, limit: int = FAILURE_STREAK_MAX) -> None:
        self.limit = limit
        self._failing: dict[str, set[str]] = {}

    def observe(self, result: ItemResult) -> None:
        exc = result.error
        registry = f"registry {result.registry}"
        if result.outcome is Outcome.FAILED and isinstance(exc, TransientFailure):
            service = registry if isinstance(exc, RegistryUnavailable) else "akua"
            failing = self._failing.setdefault(service, set())
            failing.add(result.repository)
            if len(failing) >= self.limit:
                what = (
                    f"{service} looks down: items of {self.limit} repositories in a row failed; "
                    f"last: {exc.reason}"
                )
                raise SourceFailed(what) if service == registry else RunAborted(what)
        elif result.outcome.is_success:
            self._failing.pop("akua", None)
            self._failing.pop(registry, None)


#: With no repository granted yet, this many refused repositories mean the run cannot work.
REFUSALS_MAX: Final = 10


class RepositoryAccess:
    """The run-level rule for per-repository refusals (``RepositoryRefused``).

    One refused repository ends alone; the run aborts only when every
    repository so far was refused: at the ``limit``-th refusal with none
    granted, or at the end of a run in which none was granted.
    """

    def __init__(self, user: Callable[[], str], limit: int = REFUSALS_MAX) -> None:
        self.user = user  # asked when needed: credentials are resolved after the start
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
            raise SourceFailed(self._reason())

    def check_end(self) -> None:
        if self.granted == 0 and self.refused > 0:
            raise SourceFailed(self._reason())

    def _reason(self) -> str:
        return (
            f"the registry refused every repository so far ({self.refused} of {self.refused}) "
            f"to user {self.user()}; last: {self._last}"
        )


REGISTRY_RETRY: Final = RetryPolicy(attempts=4, base_s=0.5, cap_s=10.0)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much of the run is in flight at once; memory is bounded by these, not the registry."""

    listers: int  # repositories listed and looked up in the state at once
    read_ahead: int  # version reads in flight or waiting for their write, all repositories
    per_repository: int  # how far one repository reads ahead of its own writes

    @classmethod
    def of(cls, settings: Settings) -> Sizes:
        widest = max(settings.concurrency, settings.registry_in_flight)
        return cls(
            listers=settings.concurrency,
            read_ahead=READ_AHEAD_FACTOR * widest,
            per_repository=settings.registry_in_flight,
        )


def _request_counts(registries: list[Registry], api: AkuaClient | None) -> dict[str, int]:
    """What the run cost each service (every registry summed), for run.finished and the benchmark."""
    counts: dict[str, int] = {}
    for registry in registries:
        for kind, n in registry.statistics().requests.items():
            counts[f"registry_{kind}"] = counts.get(f"registry_{kind}", 0) + n
    if api is not None:
        stats = api.statistics()
        counts["api_requests"] = stats.requests
        counts["api_writes"] = stats.writes_sent
        counts["api_429"] = stats.by_status.get(429, 0)
    return counts


def target_of(settings: Settings) -> str:
    return f"{settings.api_url} workspace={settings.workspace or '-'}"


def options_of(settings: Settings, mode: str) -> decision.Options:
    return decision.Options(
        writes=mode == "run",
        recheck_digests=settings.recheck_digests,
        retry_rejected=settings.retry_rejected,
    )


def source_endpoint(source: SourceSettings) -> RegistryEndpoint:
    return RegistryEndpoint(
        host=source.registry,
        plain_http=source.plain_http,
        insecure=source.insecure,
        username=source.username,
        password=source.password.reveal() if source.password else None,
        use_docker_config=source.docker_config and source.username is None,
        allow_plain_http_credentials=source.allow_plain_http_credentials,
        timeout_s=source.registry_timeout,
        ca_file=str(source.ca_file) if source.ca_file else None,
        client_cert=str(source.client_cert) if source.client_cert else None,
        client_key=str(source.client_key) if source.client_key else None,
    )


def source_of(
    settings: Settings,
    configured: SourceSettings,
    endpoint: RegistryEndpoint,
    kcl: tuple[KclWorkers, anyio.CapacityLimiter] | None = None,
) -> Source:
    """One runtime source: its own registry client and limits, tag filter and name rule.

    ``kcl``: the run's KCL processes and their limiter, for the ``package`` schema
    source (without them, or with the source off, it is off).
    """
    registry_rate = None
    if configured.registry_rate is not None:
        registry_rate = AdaptiveRateLimiter(
            configured.registry_rate, max(1, int(configured.registry_rate / 10)), name="registry"
        )
    registry = Registry(
        endpoint,
        max_in_flight=configured.registry_in_flight,
        policy=REGISTRY_RETRY,
        rate=registry_rate,
        schema_keys=settings.schema_annotations,
    )
    sources = settings.schema_sources
    return Source(
        name=configured.name,
        host=configured.registry,
        registry=registry,
        repositories=configured.repositories,
        remote_refs=settings.remote_refs,
        package_name=configured.names.name_of,
        tag_filter=configured.tag_filter.rejects,
        # KCL child processes start only when a package needs one; every source shares them.
        package_schemas=(
            PackageSchemas(registry, workers=kcl[0], limiter=kcl[1])
            if kcl is not None and SOURCE_PACKAGE in sources else None
        ),
        package_first=sources[0] == SOURCE_PACKAGE,
    )


async def _select(
    settings: Settings, built: list[tuple[SourceSettings, Source]], reporter: Reporter,
    health: SourceHealth, read_package_name: Callable[[str], Awaitable[str | None]],
) -> list[Source]:
    """Every source listed, filtered, named (collisions and long names refused) and sharded,
    before any tag list; returns the sources with their repositories to work on."""
    registries = {configured.name: source.registry for configured, source in built}

    async def catalog(configured: SourceSettings) -> AsyncIterator[str]:
        registry = registries[configured.name]
        await _resolve_credentials(registry)
        await registry.check_access()  # GET /v2/ first: refused credentials stop the source here
        async for repository in registry.repositories():
            yield repository

    configured = [c for c, _ in built]
    runtime = {source.name: source for _, source in built}

    async def owner_of(configured: SourceSettings, repository: str) -> str | None:
        return await read_package_name(runtime[configured.name].oci_ref(repository))

    selection = await select(configured, catalog, settings.shard, owner_of)
    if selection.source_problems and len(selection.source_problems) == len(built):
        raise RunAborted("; ".join(selection.source_problems.values()))
    for _, source in built:
        if source.name in selection.source_problems:
            health.contains(source, SourceFailed(selection.source_problems[source.name]))
    for left in selection.filtered:
        reporter.repository_filtered(left.source, left.repository, left.reason)
    for left in selection.refused:
        reporter.item(ItemReport(repository=left.repository, tag=None, outcome=left.outcome,
                                 reason=left.reason, source=left.source))
    chosen: dict[str, dict[str, str]] = {}
    for item in selection.selected:
        chosen.setdefault(item.source.name, {})[item.repository] = item.package_name
    reporter.repositories_total = len(selection.selected)
    out = []
    for _, source in built:
        names = chosen.get(source.name)
        if names:  # a source with nothing to do is not crawled (an empty list means the catalog)
            out.append(dataclasses.replace(source, repositories=tuple(names),
                                           package_name=names.__getitem__,
                                           access_checked=not source.repositories))
    return out


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
    summary.shard = settings.shard.label if settings.shard is not None else None
    sizes = Sizes.of(settings)
    built: list[tuple[SourceSettings, Source]] = []
    kcl = (KclWorkers(), anyio.CapacityLimiter(KCL_SLOTS))  # started only when needed
    for configured in settings.source_list():
        reporter.source(configured.name)
        # Docker config credentials are resolved per registry when it is first used (in the work
        # scope, so a signal ends a hanging helper).
        built.append((configured, source_of(settings, configured, source_endpoint(configured), kcl)))
    owned = state is None  # else the caller opened it (to record the run) and closes it
    if state is None:
        state = await anyio.to_thread.run_sync(
            # plan only reads: any state, on read-only media too, whatever API it is bound
            # to (it needs no --api-url to read what was recorded).
            lambda: StateStore(
                settings.state,
                target=None if mode == "plan" else target_of(settings),
                readonly=mode == "plan",
            )
        )
    state_lane = anyio.CapacityLimiter(1)  # the single thread that touches SQLite
    api: AkuaClient | None = None
    limiter: AdaptiveRateLimiter | None = None
    try:
        async with AsyncExitStack() as stack:
            for _, source in built:
                stack.callback(source.registry.close)
                if source.package_schemas is not None:
                    stack.callback(_close_package_schemas, source.package_schemas, source.name)
            importer = None
            order = WriteOrder()
            if mode == "run":
                from crawler.api.directory import PackageDirectory
                from crawler.importer import Importer

                # Writes get slots in the write order: by the rank of the package whose
                # task asks (write_order.current_rank).
                limiter = AdaptiveRateLimiter(settings.rate, settings.burst,
                                              priority=current_rank.get)
                order.on_change = limiter.reorder
                reporter.akua_rate = limiter
                api = await stack.enter_async_context(_api(settings, sizes, limiter))
                importer = Importer(api, PackageDirectory(api))
            await _pipeline(
                options_of(settings, mode), sizes, built, importer, order, state, state_lane,
                reporter, stop, settings,
            )
    finally:
        summary.requests = _request_counts([source.registry for _, source in built], api)
        if limiter is not None:
            rate = limiter.statistics()
            summary.throttling = {"throttled": rate.throttled, "pauses": rate.pauses,
                                  "paused_s": round(rate.paused_s, 3)}
        if owned:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.close, limiter=state_lane)
    return summary


def _close_package_schemas(schemas: PackageSchemas, source: str) -> None:
    """Stop the KCL processes; say what the package source cost, when it was used."""
    schemas.close()
    stats = schemas.statistics()
    if stats.lookups:
        log.info(
            "schema.package_source", source=source, lookups=stats.lookups, cache_hits=stats.hits,
            blobs_fetched=stats.fetched, fetched_bytes=stats.fetched_bytes,
            derivations=stats.derived, kcl_processes=stats.kcl_processes,
            derive_ms=round(stats.derive_seconds * 1000), fetch_ms=round(stats.fetch_seconds * 1000),
        )


def _api(settings: Settings, sizes: Sizes, limiter: AdaptiveRateLimiter) -> AkuaClient:
    from crawler.api.client import AkuaClient, ApiEndpoint

    if settings.token is None:
        raise RunAborted("no Akua token")  # config checks this first; kept for type safety
    endpoint = ApiEndpoint(
        url=settings.api_url,
        token=settings.token,
        workspace=settings.workspace,
        timeout_s=settings.api_timeout,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
    )
    # Packages are written concurrently up to the read-ahead size; the pool and the
    # rate limit, not a worker count, bound the writes in flight.
    return AkuaClient(endpoint, limiter, concurrency=sizes.read_ahead)


async def _pipeline(
    options: decision.Options,
    sizes: Sizes,
    built: list[tuple[SourceSettings, Source]],
    importer: Importer | None,
    order: WriteOrder,
    state: StateStore,
    state_lane: anyio.CapacityLimiter,
    reporter: Reporter,
    stop: StopControl,
    settings: Settings,
) -> None:
    write_send, write_receive = anyio.create_memory_object_stream[StateWrite](sizes.read_ahead * 4)
    streak = FailureStreak()
    accesses: dict[str, RepositoryAccess] = {}  # per source, once chosen

    def on_access(source: str, repository: str, refusal: RepositoryRefused | None) -> None:
        accesses[source].observe(repository, refusal)

    async def read_repository(registry: str, repository: str, oci_ref: str) -> RepositoryRecords:
        def read() -> RepositoryRecords:  # one thread hop for all three
            return RepositoryRecords(state.repository_items(registry, repository),
                                     state.package_id(oci_ref), state.package_name(oci_ref))

        return await anyio.to_thread.run_sync(read, limiter=state_lane)

    async def read_package_name(oci_ref: str) -> str | None:
        return await anyio.to_thread.run_sync(state.package_name, oci_ref, limiter=state_lane)

    health = SourceHealth(reporter, len(built))
    sources: list[Source] = []  # chosen in the work scope: a signal ends a hanging catalog too

    run = RunContext(
        options=options,
        importer=importer,
        ledger=Ledger(
            reporter=reporter,
            writes=write_send if options.writes else None,
            options=options,
            observe=streak.observe,
        ),
        read_ahead=ReadAhead(sizes.read_ahead, sizes.per_repository),
        write_order=order,
        read_repository=read_repository,
        stopping=stop.stopping,
        on_access=on_access,
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as outer:
        writer = StateWriter(state, state_lane, stop)
        outer.start_soon(writer.run, write_receive)
        async with write_send:
            try:
                with stop.work_scope:
                    sources = await _select(settings, built, reporter, health, read_package_name)
                    for source in sources:
                        # Asked when needed: credentials are resolved after the start.
                        accesses[source.name] = RepositoryAccess(
                            functools.partial(_user_of, source.registry))
                    async with anyio.create_task_group() as work:
                        run.ledger.reporter.sources_expected(len(sources))
                        order.listings_started(len(sources))
                        for source in sources:
                            work.start_soon(_crawl_source, run, sizes, source, stop, work, health)
                stop.after_work()
            except Exception as exc:  # noqa: BLE001 - re-raised, whole, once the writer has drained
                failure = exc
    if failure is not None:
        # The group as it is: the caller takes the RunErrors out with except*, and
        # anything else goes on as the bug it is.
        raise failure
    writer.raise_if_failed()
    if not stop.stopping.is_set():
        for source in sources:
            try:
                accesses[source.name].check_end()
            except SourceFailed as exc:
                if not health.contains(source, exc):
                    raise
    if len(health.failed) == len(built):
        raise RunAborted("every source failed: " + "; ".join(health.failed.values()))


def _user_of(registry: Registry) -> str:
    return user_of(registry.endpoint)


async def _crawl_source(
    run: RunContext, sizes: Sizes, source: Source, stop: StopControl, work: TaskGroup,
    health: SourceHealth,
) -> None:
    """Feed a source's repositories to the listers; each lister starts repository jobs in ``work``."""
    repo_send, repo_receive = anyio.create_memory_object_stream[str](sizes.listers)
    try:
        async with anyio.create_task_group() as listing:
            listing.start_soon(_produce, source, repo_send, stop, run.ledger.reporter)
            for _ in range(sizes.listers):
                listing.start_soon(_list, run, source, repo_receive.clone(), work, health)
            repo_receive.close()
    except (SourceFailed, BaseExceptionGroup) as exc:
        if not health.contains(source, exc):  # one source: the run aborts, as it always did
            raise
    finally:
        run.write_order.listing_ended()  # every repository of the source entered (or it stopped)


async def _produce(
    source: Source, send: MemoryObjectSendStream[str], stop: StopControl, reporter: Reporter
) -> None:
    async with send:
        if not source.access_checked:  # else the catalog was read while choosing repositories
            await _resolve_credentials(source.registry)
            await _check_access(source)
        seen: set[str] = set()
        async for repository in _repositories(source):
            if stop.stopping.is_set():
                return
            if repository in seen:
                continue
            seen.add(repository)
            try:
                await send.send(repository)
            except anyio.BrokenResourceError:  # every lister stopped (signal or source failed)
                return
        reporter.source_listed(len(seen))


async def _resolve_credentials(registry: Registry) -> None:
    """Docker config credentials, once, before any registry request (in the work scope,
    so a signal's cancellation ends a hanging helper too); a broken helper aborts the
    run here (exit 3) naming itself."""
    endpoint = await registry.resolve_credentials()
    if endpoint.username is not None and endpoint.password is not None:
        basic = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode())
        protect(endpoint.password, basic.decode())


async def _check_access(source: Source) -> None:
    """GET /v2/ first: refused credentials stop the run before any repository is tried."""
    try:
        await source.registry.check_access()  # RegistryAuthFailed is a RunAborted: it goes on
    except ItemError as exc:
        raise SourceFailed(f"cannot list the repositories of {source.host}: {exc.reason}") from None


async def _repositories(source: Source) -> AsyncIterator[str]:
    if source.repositories:
        for repository in source.repositories:
            yield repository
        return
    try:
        async for repository in source.registry.repositories():
            yield repository
    except ItemError as exc:
        raise RunAborted(f"cannot list the repositories of {source.host}: {exc.reason}") from None


async def _list(
    run: RunContext, source: Source, repositories: MemoryObjectReceiveStream[str], work: TaskGroup,
    health: SourceHealth,
) -> None:
    async with repositories:
        async for repository in repositories:
            if run.stopping.is_set() or health.is_failed(source):
                return
            problem = repository_name_problem(repository)
            if problem is not None:
                # A catalog entry no registry request can name: invalid, the others go on.
                await run.ledger.finish(ItemResult(
                    registry=source.host, repository=repository, tags=(),
                    outcome=Outcome.INVALID, reason=problem,
                ))
                run.ledger.reporter.repository_done()
                continue
            job = RepositoryJob(run, source, repository)
            try:
                pending = await _contained(job, job.start)
            except (SourceFailed, BaseExceptionGroup) as exc:
                if not health.contains(source, exc):
                    raise
                return
            if not pending:
                run.ledger.reporter.repository_done()
                continue
            # The repository's package token: the back-pressure that bounds how many
            # repositories are read and written at once (twice rate x latency in a run, at most 512).
            if run.importer is not None:
                run.read_ahead.want_packages(run.importer.packages_wanted())
            await run.read_ahead.enter_package(job)
            work.start_soon(_work, job, pending, health)


async def _work(job: RepositoryJob, pending: list[Version], health: SourceHealth) -> None:
    try:
        await _contained(job, functools.partial(job.work, pending, holds_package=True))
    except (SourceFailed, BaseExceptionGroup) as exc:
        if not health.contains(job.source, exc):
            raise
        return
    job.run.ledger.reporter.repository_done()


async def _contained(job: RepositoryJob, step: Callable[[], Awaitable[T]]) -> T | None:
    """``step()``, with a bug in it contained to its repository (which ends failed).

    Run errors go on and stop the run; anything else is a bug: logged with its
    traceback, the repository ends failed, the other repositories go on, and the
    run exits 5.
    """
    result: T | None = None
    bug: BaseException | None = None
    try:
        result = await step()
    except* RunError:
        raise
    except* Exception as group:  # noqa: BLE001 - a bug, contained to its repository
        bug = group.exceptions[0] if len(group.exceptions) == 1 else group
        job.log_crash(bug)  # at once: a run error raised with it must not hide it
    if bug is not None:
        await job.crashed(bug)
    return result


class StateWriter:
    """The only writer: batches what is waiting into one durable transaction.

    When the state cannot be written (disk full, read-only, locked by another
    process), the run stops taking work; the writer goes on trying each batch
    (recording what it can) until the pipeline is done, and the run then aborts
    (StateWriteFailed, exit 3).  What Akua confirmed but the state could not keep
    is met again next run as ``exists``, as after ``kill -9``.
    """

    def __init__(self, state: StateStore, lane: anyio.CapacityLimiter, stop: StopControl) -> None:
        self._state = state
        self._lane = lane
        self._stop = stop
        self.failure: str | None = None
        self.lost = 0  # items whose outcome could not be recorded

    async def run(self, receive: MemoryObjectReceiveStream[StateWrite]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < WRITE_BATCH_MAX:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._write(batch)

    async def _write(self, batch: list[StateWrite]) -> None:
        items = [item for write in batch for item in write.items]
        packages = [package for write in batch for package in write.packages]
        seen = [item for write in batch for item in write.seen]
        # Shielded: a confirmed outcome is recorded even while the run is being cancelled.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(
                    self._state.write, items, packages, seen, limiter=self._lane
                )
            except (sqlite3.Error, OSError) as exc:
                self.lost += len(items)
                if self.failure is None:
                    self.failure = str(exc)
                    log.error("state.write_failed", state=str(self._state.path), reason=self.failure)
                    self._stop.stop_taking_work()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise StateWriteFailed(
                f"cannot write the state {self._state.path}: {self.failure}; stopped taking work, "
                f"{self.lost} outcomes not recorded (Akua's writes are met as exists next run)"
            )

"""One repository, start to finish: the I/O shell around ``decision.py``.

A repository is one Akua package.  Its job has two stages:

1. :meth:`RepositoryJob.start` (a lister task): list the tags, map each to
   SemVer (others are skipped), group tags naming the same SemVer, read the
   state, and :func:`~crawler.decision.decide` each version.  Versions the
   state settles end right here, without a request.
2. :meth:`RepositoryJob.work` (a task of its own): the versions left are read
   (HEAD to recheck, manifest GET, preparation on the registry thread) ahead
   of the writes, through the run's read-ahead buffer, and consumed in
   ascending SemVer order: the lowest is imported first, the later ones are
   created in order, and a repository's first write waits only for its own
   first manifest.  Reads of all repositories share the registry's in-flight
   limit; writes of all packages share Akua's rate limit and connection pool.

Every item ends in :meth:`crawler.ledger.Ledger.finish`, which reports and
records it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from crawler.decision import (
    Ended,
    Fetch,
    FirstStep,
    Options,
    Planned,
    Recheck,
    Settled,
    Write,
    after_fetch,
    after_head,
    decide,
    split_tags,
)
from crawler.errors import InvalidArtifact, ItemError, Rejected, RepositoryRefused
from crawler.ledger import ItemResult, Ledger
from crawler.outcomes import Outcome
from crawler.package_schema import DERIVATIONS_DIFFER, FROM_PACKAGE, prepare_with_sources
from crawler.prepare import Preparation, Prepared, prepare
from crawler.registry import BadManifest, Manifest
from crawler.report import NOT_SEMVER
from crawler.source import Source
from crawler.state import ItemRecord, PackageRecord
from crawler.versions import SemVer, tag_preference, tag_to_semver
from crawler.write_order import PackageRank, WriteOrder, current_rank

if TYPE_CHECKING:
    from crawler.importer import Importer

log = structlog.get_logger("crawler")


class ReadAhead:
    """What a run holds in memory at once: packages being worked on, and reads ahead.

    * **Packages.** A repository being worked on holds one package token from
      the moment its versions are known until its last version ended.  The
      token covers the read of its lowest version not yet ended, so every
      package in flight can always read (and then write) its next version:
      writes in flight are bounded by the number of packages, which follows
      what Akua's rate needs (``want_packages``: twice the connection pool's
      size, rate x latency, so that the write order has packages with a write
      ready), never by how many slots other packages hold.
    * **Slots.** Reads beyond that one (a package reading ahead of its own
      writes) take a slot from a shared, fixed pool, given back once the
      version ended or the token covers it.  ``per_repository`` bounds how far
      one repository reads ahead.

    Memory is bounded by ``packages`` + ``slots`` prepared versions, not by the
    registry's size.
    """

    def __init__(self, slots: int, per_repository: int) -> None:
        self.slots = slots
        self.per_repository = max(1, per_repository)
        self._semaphore = anyio.Semaphore(slots)
        self._packages = anyio.CapacityLimiter(max(1, slots))  # at least as many as slots

    def want_packages(self, count: int) -> None:
        """Allow ``count`` packages in flight (never fewer than ``slots``)."""
        count = max(1, self.slots, count)
        if count != self._packages.total_tokens:
            self._packages.total_tokens = count

    async def enter_package(self, holder: object) -> None:
        await self._packages.acquire_on_behalf_of(holder)

    def leave_package(self, holder: object) -> None:
        self._packages.release_on_behalf_of(holder)

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self._semaphore.release()


@dataclass(slots=True, kw_only=True)
class RunContext:
    """What every repository job of a run shares."""

    options: Options
    importer: Importer | None  # None in plan mode
    ledger: Ledger
    read_ahead: ReadAhead
    write_order: WriteOrder
    #: (registry, repository, oci_ref) -> what the state recorded of the repository
    read_repository: Callable[[str, str, str], Awaitable[RepositoryRecords]]
    stopping: anyio.Event
    #: told once per repository whether the registry granted it (None) or refused it
    #: (source name, repository, refusal or None)
    on_access: Callable[[str, str, RepositoryRefused | None], None] = field(
        default=lambda _s, _r, _e: None)


@dataclass(frozen=True, slots=True)
class RepositoryRecords:
    """What the state recorded of one repository, read in one go (one thread hop)."""

    items: dict[str, list[ItemRecord]]  # tag -> its records, the latest first
    package_id: str | None
    package_name: str | None  # the name it was imported under


@dataclass(frozen=True, slots=True)
class Version:
    semver: str
    tags: tuple[str, ...]  # the preferred tag first
    step: FirstStep


@dataclass(frozen=True, slots=True)
class Fetched:
    """A version whose manifest was read and prepared, waiting for its write."""

    digest: str
    tags: tuple[str, ...]  # the tags that stay with the version
    conflicts: tuple[tuple[str, Ended], ...]  # other tags of the SemVer, pointing elsewhere
    prepared: Prepared | None  # None: ``problem`` says why the artifact is invalid
    problem: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """A read that ended the version with an error (``ended.digest`` when known)."""

    ended: Ended
    error: ItemError


ReadResult = Settled | Ended | Fetched | Failed


@dataclass(slots=True)
class _Read:
    version: Version
    started: float = field(default_factory=time.monotonic)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: ReadResult | None = None


class RepositoryJob:
    def __init__(self, run: RunContext, source: Source, repository: str) -> None:
        self.run = run
        self.source = source
        self.repository = repository
        self.oci_ref = source.oci_ref(repository)
        self.package_name = source.package_name(repository)
        self.package_id: str | None = None
        self.planned_write = False  # plan: an earlier version would have created the package
        self._slots = 0  # shared read-ahead slots this job holds
        self._open = 0  # reads started whose version has not ended yet
        self._slot_wait: anyio.CancelScope | None = None  # a read ahead waiting for a slot
        self._readers = 0  # reader tasks started, while it works
        self._starting = 0  # of them, those not running yet
        self._rank: PackageRank | None = None  # its place in the write order, while it works
        self._latest: dict[str, ItemRecord] = {}  # the state's latest record of each tag

    # -- stage 1: tags, state, decisions --------------------------------------

    async def start(self) -> list[Version]:
        """Settle what the state settles; return the versions that need registry reads."""
        started = time.monotonic()
        recorded = await self.run.read_repository(self.source.host, self.repository, self.oci_ref)
        if await self._renamed(recorded.package_name, started):
            return []
        try:
            tags = await self.source.registry.tags(self.repository)
        except ItemError as exc:
            await self._finish((), None, Ended(exc.outcome, exc.reason, None), started, exc)
            if isinstance(exc, RepositoryRefused):
                self.run.on_access(self.source.name, self.repository, exc)
            return []
        groups: dict[str, list[tuple[str, SemVer]]] = {}
        for tag in tags:
            left_out = self.source.tag_filter(tag)
            semver = None if left_out else tag_to_semver(tag)
            if semver is None:
                reason = left_out or NOT_SEMVER
                await self._finish((tag,), None, Ended(Outcome.SKIPPED, reason, None), started)
                continue
            groups.setdefault(semver.text, []).append((tag, semver))
        if not groups:
            log.debug("repository.no_versions", repository=self.repository, tags=len(tags))
            self.run.on_access(self.source.name, self.repository, None)
            return []
        self.package_id = recorded.package_id
        self._latest = latest = {tag: found[0] for tag, found in recorded.items.items() if found}
        pending: list[Version] = []
        for group in sorted(groups.values(), key=lambda group: group[0][1].sort_key()):
            group.sort(key=lambda pair: (tag_preference(pair[0]), pair[0]))
            tags_of = tuple(tag for tag, _ in group)
            step = decide(tags_of, latest, self.run.options)
            version = Version(group[0][1].text, tags_of, step)
            if isinstance(step, Settled):
                self.package_id = self.package_id or step.prior.package_id
                await self._settled(version, step, started)
            else:
                pending.append(version)
        if not pending:
            self.run.on_access(self.source.name, self.repository, None)
        return pending

    async def _renamed(self, known: str | None, started: float) -> bool:
        """A package already imported under another name (``known``): Akua cannot rename it,
        and a new name would create a second package, so the repository is refused."""
        if known is None or known == self.package_name:
            return False
        reason = (
            f"imported as {known!r}, the name rule now gives {self.package_name!r}: Akua cannot "
            f"rename a package; set name_overrides \"{self.repository}\" = \"{known}\" to keep it"
        )
        await self._finish((), None, Ended(Outcome.REJECTED, reason, None), started)
        return True

    # -- stage 2: reads ahead of writes, in order ----------------------------

    async def work(self, versions: list[Version], *, holds_package: bool = False) -> None:
        """Read ahead and end each version in order; give back every slot and the token."""
        self._slots = 0
        self._open = 0
        if not holds_package:
            await self.run.read_ahead.enter_package(self)
        refused: RepositoryRefused | None = None
        self._rank = self.run.write_order.package(len(versions))
        ranked = current_rank.set(self._rank)  # this task's writes wait in the package's place
        try:
            ahead = self.run.read_ahead.per_repository
            send, receive = anyio.create_memory_object_stream[_Read](ahead)
            todo_send, todo_receive = anyio.create_memory_object_stream[_Read](ahead)
            most = min(ahead, len(versions))
            self._readers = self._starting = 0
            # The original receive end stays open until every reader has stopped:
            # reader_wanted clones it.
            with todo_receive:
                async with anyio.create_task_group() as reads:

                    def reader_wanted() -> None:
                        # A reader task more only while reads wait in the buffer that no
                        # reader about to start will take (a reader waiting for one is
                        # handed it directly, so the buffer holds none then): a package
                        # reading one version at a time keeps one, a far registry or a
                        # long read-ahead gets up to `ahead` (not one task per version).
                        queued = todo_receive.statistics().current_buffer_used
                        if self._readers < most and queued > self._starting:
                            self._readers += 1
                            self._starting += 1
                            reads.start_soon(self._reader, todo_receive.clone())

                    reads.start_soon(self._read_ahead, versions, send, todo_send, reader_wanted)
                    async with receive, aclosing(_ready_first(receive)) as ready:
                        async for read in ready:
                            if not read.done.is_set():  # a read done already costs no loop turn
                                await read.done.wait()
                            assert read.result is not None
                            refused = _refusal(read.result)
                            if refused is not None:
                                # Access to this repository is refused: it ends here, whole.
                                await self._finish((), None, Ended(refused.outcome, refused.reason, None),
                                                   read.started, refused)
                                break
                            await self._end(read.version, read.result, read.started)
                            self._version_ended()
                            if self.run.stopping.is_set():
                                break
                    reads.cancel_scope.cancel()
            self.run.on_access(self.source.name, self.repository, refused)
        finally:
            current_rank.reset(ranked)
            self.run.read_ahead.release(self._slots)
            self._slots = 0
            self.run.read_ahead.leave_package(self)

    def _version_ended(self) -> None:
        if self._rank is not None:
            self._rank.version_ended()
        self._open -= 1
        if self._open == 0 and self._slot_wait is not None:
            self._slot_wait.cancel()  # the next read waits for a slot no more: the token covers it
        if self._slots > max(0, self._open - 1):  # the token now covers the lowest open read
            self._slots -= 1
            self.run.read_ahead.release()

    async def _read_ahead(
        self,
        versions: list[Version],
        send: MemoryObjectSendStream[_Read],
        todo: MemoryObjectSendStream[_Read],
        reader_wanted: Callable[[], None],
    ) -> None:
        async with send, todo:
            for version in versions:
                if self.run.stopping.is_set():
                    return
                if self._open > 0:  # the token covers one open read; more take a slot
                    with anyio.CancelScope() as waiting:
                        # Given up when every earlier version ends first (_version_ended):
                        # the token covers this read then, and no slot is needed.
                        self._slot_wait = waiting
                        await self.run.read_ahead.acquire()
                    self._slot_wait = None
                    if not waiting.cancelled_caught:
                        if self._open > 0:
                            self._slots += 1
                        else:  # every earlier version ended meanwhile: the token covers this one
                            self.run.read_ahead.release()
                self._open += 1
                read = _Read(version)
                await todo.send(read)
                reader_wanted()
                await send.send(read)

    async def _reader(self, todo: MemoryObjectReceiveStream[_Read]) -> None:
        # On an exception (a run error, a bug) ``done`` stays unset: the exception
        # cancels the repository's task group, the waiting consumer with it.
        self._starting -= 1
        async with todo, aclosing(_ready_first(todo)) as ready:
            async for read in ready:
                read.result = await self._read_version(read.version)
                read.done.set()

    async def _read_version(self, version: Version) -> ReadResult:
        registry = self.source.registry
        tags = version.tags
        digest: str | None = None
        try:
            if isinstance(version.step, Recheck):
                digest = await registry.head(self.repository, version.step.tag)
                after = after_head(version.step, digest)
                if not isinstance(after, Fetch):
                    return after
            how = Preparation(
                name=self.package_name,
                oci_ref=self.oci_ref,
                semver=version.semver,
                schema_keys=self.source.schema_keys,
                remote_refs=self.source.remote_refs,
            )

            def prepare_or_problem(manifest: Manifest) -> Prepared | InvalidArtifact:
                try:
                    return prepare(manifest, how)
                except InvalidArtifact as exc:
                    return exc

            # Preparation runs on the registry's worker thread right after the fetch:
            # off the event loop, and without a second thread hop per artifact.
            manifest, prepared = await registry.manifest_then(
                self.repository, tags[0], prepare_or_problem
            )
            # The state keeps what the tag points at (what a HEAD answers); Akua gets the
            # artifact's own digest (the request's), which differs for the platform
            # manifest of an index.
            digest = manifest.tag_digest
            # Schema sources after the annotation: package.k, for Akua's content layer.
            prepared = await prepare_with_sources(
                self.source.package_schemas, self.source.package_first, self.repository,
                manifest, prepared, how,
            )
            others = await registry.heads(self.repository, tags[1:])  # one thread hop
        except BadManifest as exc:
            return Failed(Ended(exc.outcome, exc.reason, exc.digest), exc)
        except ItemError as exc:
            return Failed(Ended(exc.outcome, exc.reason, digest), exc)
        kept, conflicts = split_tags(tags, version.semver, digest, others)
        if isinstance(prepared, InvalidArtifact):
            return Fetched(digest, tuple(kept), tuple(conflicts), None, prepared.reason)
        return Fetched(digest, tuple(kept), tuple(conflicts), prepared, None)

    # -- a bug -----------------------------------------------------------------

    def log_crash(self, bug: BaseException) -> None:
        """The traceback, through the redacting logger."""
        log.error("repository.crashed", repository=self.repository, reason=_bug_reason(bug),
                  exc_info=bug)

    async def crashed(self, bug: BaseException) -> None:
        """The repository ends failed; the run goes on and exits 5."""
        self.run.ledger.reporter.summary.contained_bugs += 1
        await self._finish(
            (), None,
            Ended(Outcome.FAILED, f"{_bug_reason(bug)}; see the repository.crashed event", None),
            time.monotonic(), bug,
        )

    # -- ending a version ------------------------------------------------------

    async def _end(self, version: Version, result: ReadResult, started: float) -> None:
        if isinstance(result, Settled):
            await self._settled(version, result, started)
        elif isinstance(result, Ended):
            await self._finish(version.tags, version.semver, result, started)
        elif isinstance(result, Failed):
            await self._finish(version.tags, version.semver, result.ended, started, result.error)
        else:
            await self._fetched(version, result, started)

    async def _fetched(self, version: Version, fetched: Fetched, started: float) -> None:
        for tag, conflict in fetched.conflicts:
            await self._finish((tag,), version.semver, conflict, started)
        prepared = fetched.prepared
        if prepared is not None and prepared.description_cut:
            log.warning(
                "item.description_cut", repository=self.repository, tag=fetched.tags[0],
                semver=version.semver,
                reason="org.opencontainers.image.description is longer than 1000 characters; cut",
            )
        request = prepared.request if prepared is not None else None

        def prepared_reason(reason: str) -> str:
            return prepared.noted(reason) if prepared is not None else reason

        step = after_fetch(
            digest=fetched.digest,
            problem=fetched.problem,
            not_a_package=prepared.no_schema if prepared is not None and request is None else None,
            package_known=self.package_id is not None or self.planned_write,
            options=self.run.options,
        )
        if isinstance(step, Ended):
            # A skip that depends on this run's setup (a schema source off or not
            # installed) is not settled: the next run reads the version again.
            record = prepared is None or prepared.settled or step.outcome is not Outcome.SKIPPED
            await self._finish(fetched.tags, version.semver, step, started, record=record)
            return
        source = prepared.schema_source if prepared is not None else ""
        said = f"; schema from {source}" if source else ""
        if isinstance(step, Planned):
            self.planned_write = True
            await self.run.ledger.finish(
                self._result(fetched.tags, version.semver, fetched.digest, started,
                             outcome=Outcome.IMPORTED, reason=prepared_reason(step.reason) + said,
                             action=step.action)
            )
            return
        assert isinstance(step, Write) and request is not None and self.run.importer is not None
        try:
            written = await self.run.importer.write(request, package_id=self.package_id)
        except ItemError as exc:
            reason = exc.reason
            if isinstance(exc, Rejected) and source == FROM_PACKAGE and reason.startswith("HTTP 422"):
                reason = f"{reason}; {DERIVATIONS_DIFFER}"
            ended = Ended(exc.outcome, reason, fetched.digest)
            await self._finish(fetched.tags, version.semver, ended, started, exc)
            return
        self.package_id = written.package_id
        package = None
        if written.package_found:
            package = PackageRecord(self.oci_ref, written.package_id, self.package_name)
        await self.run.ledger.finish(
            self._result(
                fetched.tags, version.semver, fetched.digest, started,
                outcome=written.outcome, reason=prepared_reason(written.reason) + said,
                package_id=written.package_id, version_id=written.version_id, package=package,
            )
        )

    async def _settled(self, version: Version, step: Settled, started: float) -> None:
        # Tags of the version recorded with another digest (a conflicting tag rejected
        # next to the imported one) are reported with their own record.
        groups: dict[str, list[str]] = {}
        records: dict[str, ItemRecord] = {step.prior.digest: step.prior}
        for tag in version.tags:
            record = self._latest.get(tag) or step.prior
            groups.setdefault(record.digest, []).append(tag)
            records.setdefault(record.digest, record)
        for digest, tags in groups.items():
            settled = Settled(records[digest])
            await self.run.ledger.finish(
                self._result(tuple(tags), version.semver, digest, started,
                             outcome=settled.outcome, reason=settled.reason, from_state=True,
                             before=settled.prior)
            )

    async def _finish(
        self,
        tags: tuple[str, ...],
        semver: str | None,
        ended: Ended,
        started: float,
        error: BaseException | None = None,
        *,
        record: bool = True,
    ) -> None:
        await self.run.ledger.finish(
            self._result(tags, semver, ended.digest, started,
                         outcome=ended.outcome, reason=ended.reason, error=error, record=record)
        )

    def _result(
        self,
        tags: tuple[str, ...],
        semver: str | None,
        digest: str | None,
        started: float,
        *,
        outcome: Outcome,
        reason: str,
        from_state: bool = False,
        action: str | None = None,
        package_id: str | None = None,
        version_id: str | None = None,
        package: PackageRecord | None = None,
        error: BaseException | None = None,
        before: ItemRecord | None = None,
        record: bool = True,
    ) -> ItemResult:
        return ItemResult(
            source=self.source.name,
            package_name=self.package_name if self.package_name != self.repository else None,
            registry=self.source.host,
            repository=self.repository,
            tags=tags,
            semver=semver,
            digest=digest,
            outcome=outcome,
            reason=reason,
            from_state=from_state,
            action=action,
            package_id=package_id,
            version_id=version_id,
            package=package,
            started=started,
            error=error,
            before=before or (self._latest.get(tags[0]) if tags else None),
            record=record,
        )



async def _ready_first(stream: MemoryObjectReceiveStream[_Read]) -> AsyncGenerator[_Read, None]:
    """The stream's items, taking what is buffered without a loop turn (a checkpoint) each.

    Cancellation still reaches the consumer at the next wait, and at most
    the buffer's size (``registry_in_flight``) is taken in one go.
    """
    while True:
        try:
            yield stream.receive_nowait()
            continue
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            return
        try:
            yield await stream.receive()
        except anyio.EndOfStream:
            return


def _refusal(result: ReadResult) -> RepositoryRefused | None:
    if isinstance(result, Failed) and isinstance(result.error, RepositoryRefused):
        return result.error
    return None


def _bug_reason(bug: BaseException) -> str:
    leaf = bug
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    return f"a bug in the crawler stopped work on this repository: {type(leaf).__name__}: {leaf}"

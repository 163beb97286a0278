"""One repository, start to finish: tags, versions, manifests, schemas, writes.

A repository is one Akua package, so one task owns it: its versions are
written in ascending SemVer order, the lowest through import.  Steps:

1. list the tags; map each to SemVer (others are skipped);
2. group tags naming the same SemVer, order the groups;
3. per group, consult the state: settled items cost no registry or API
   request (SemVer tags are immutable); invalid or rejected ones are
   re-checked with a HEAD and retried only when their digest changed;
4. fetch the manifest, take the schema, build and check the body;
5. write to Akua (``run``) or say what would be written (``plan``);
6. hand the outcome to the single state writer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from crawler.errors import InvalidArtifact, ItemError, Rejected, RepositoryRefused, RunAborted
from crawler.importer import Importer, PackageTarget
from crawler.outcomes import Outcome
from crawler.payload import ContractViolation, check_version_body, description_from, oci_ref, version_body
from crawler.registry import BadManifest, Manifest, Registry, RegistryAuthFailed
from crawler.report import NOT_SEMVER, ItemReport, Reporter
from crawler.schema import REMOTE_REFS_DEFAULT, RemoteRefs, extract_input_schema
from crawler.state import ItemRecord, PackageRecord
from crawler.versions import SemVer, tag_preference, tag_to_semver

# Outcomes that settle a tag for good while its digest stays the same.
_SETTLED = frozenset({Outcome.IMPORTED, Outcome.EXISTS, Outcome.SKIPPED})
# Outcomes worth a HEAD on the next run: the publisher may have fixed the artifact.
_RECHECKED = frozenset({Outcome.INVALID, Outcome.REJECTED})

log = structlog.get_logger("crawler")


@dataclass(frozen=True, slots=True)
class StateWrite:
    items: tuple[ItemRecord, ...]
    packages: tuple[PackageRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """What step 4 makes of a manifest: a checked body, or why there is none."""

    version: dict[str, Any] | None  # None: not a package (no schema annotation)
    description: str | None
    description_cut: bool
    note: str | None = None  # for the item's reason: what the schema check let through


@dataclass(slots=True)
class JobContext:
    registry_host: str
    registry: Registry
    importer: Importer | None  # None in plan mode
    reporter: Reporter
    writes: MemoryObjectSendStream[StateWrite] | None
    schema_keys: Sequence[str]
    recheck_digests: bool
    read_items: Callable[[str], Awaitable[dict[str, list[ItemRecord]]]]
    read_package: Callable[[str], Awaitable[str | None]]
    stopping: anyio.Event
    on_result: Callable[[Outcome, BaseException | None], None]
    remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT
    # Told once per repository whether the registry granted it (None) or refused it.
    on_access: Callable[[str, RepositoryRefused | None], None] | None = None


def prepare(
    manifest: Manifest, semver: str, keys: Sequence[str], remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT
) -> Prepared:
    """Pure step 4; safe in a worker thread."""
    annotations = manifest.annotations  # resolved by the registry layer (index, platform)
    found = extract_input_schema(annotations, keys, remote_refs=remote_refs)
    description, cut = description_from(annotations or {})
    if found is None:
        return Prepared(None, description, cut)
    body = version_body(semver, manifest.digest, found.schema)
    try:
        check_version_body(body)
    except ContractViolation as exc:
        raise InvalidArtifact(f"cannot form a valid Akua request: {exc}") from None
    return Prepared(body, description, cut, found.note)


class RepositoryJob:
    def __init__(self, ctx: JobContext, repository: str) -> None:
        self.ctx = ctx
        self.repository = repository
        self.oci_ref = oci_ref(ctx.registry_host, repository)
        self.package_id: str | None = None
        self.planned_import = False
        self._digest: str | None = None  # of the version being worked on, once known
        self._action: str | None = None

    async def run(self) -> None:
        ctx = self.ctx
        started = time.monotonic()
        try:
            await self._versions(started)
        except RepositoryRefused as exc:
            # Access to this repository is refused: it ends here, the others go on.
            self._report_repository(exc, started)
            if ctx.on_access is not None:
                ctx.on_access(self.repository, exc)
            return
        if ctx.on_access is not None:
            ctx.on_access(self.repository, None)

    async def _versions(self, started: float) -> None:
        ctx = self.ctx
        try:
            tags = await ctx.registry.tags(self.repository)
        except RepositoryRefused:
            raise
        except ItemError as exc:
            self._report_repository(exc, started)
            return
        except RegistryAuthFailed as exc:
            # Credentials that the registry refuses will not work for the next repository either.
            raise RunAborted(str(exc)) from None
        groups: dict[str, list[tuple[str, SemVer]]] = {}
        for tag in tags:
            semver = tag_to_semver(tag)
            if semver is None:
                ctx.reporter.item(
                    ItemReport(
                        repository=self.repository,
                        tag=tag,
                        outcome=Outcome.SKIPPED,
                        reason=NOT_SEMVER,
                    )
                )
                continue
            groups.setdefault(semver.text, []).append((tag, semver))
        if not groups:
            log.debug("repository.no_versions", repository=self.repository, tags=len(tags))
            return
        records = await ctx.read_items(self.repository)
        self.package_id = await ctx.read_package(self.oci_ref)
        ordered = sorted(groups.values(), key=lambda group: group[0][1].sort_key())
        for group in ordered:
            if ctx.stopping.is_set():
                return
            group.sort(key=lambda pair: (tag_preference(pair[0]), pair[0]))
            await self._version(group, records)

    def _report_repository(self, exc: ItemError, started: float) -> None:
        outcome = _outcome_of(exc)
        self.ctx.on_result(outcome, exc)
        self.ctx.reporter.item(
            ItemReport(
                repository=self.repository,
                tag=None,
                outcome=outcome,
                reason=exc.reason,
                duration_ms=_ms(started),
            )
        )

    async def _version(
        self, group: list[tuple[str, SemVer]], records: dict[str, list[ItemRecord]]
    ) -> None:
        ctx = self.ctx
        started = time.monotonic()
        tags = [tag for tag, _ in group]
        semver = group[0][1].text
        latest = [records.get(tag, [None])[0] for tag in tags]
        self._digest = None
        self._action = None
        try:
            prior = await self._prior_if_unchanged(tags, latest)
            if prior is not None:
                return self._settled(tags, semver, prior, started)
            outcome, reason = await self._fresh(tags, semver)
            ctx.on_result(outcome, None)
        except RegistryAuthFailed as exc:
            raise RunAborted(str(exc)) from None
        except RepositoryRefused:
            raise  # ends the whole repository, not this version
        except ItemError as exc:
            outcome, reason = _outcome_of(exc), exc.reason
            ctx.on_result(outcome, exc)
            if self._digest is not None:
                await self._record(tags, semver, self._digest, outcome, reason)
        before = latest[0]
        known = before is not None and before.outcome is outcome and before.digest == self._digest
        ctx.reporter.item(
            ItemReport(
                repository=self.repository,
                tag=tags[0],
                tags=tuple(tags[1:]),
                semver=semver,
                digest=self._digest,
                outcome=outcome,
                reason=reason,
                duration_ms=_ms(started),
                action=self._action,
                known_since=before.first_seen if known and before is not None else None,
            )
        )

    async def _prior_if_unchanged(
        self, tags: list[str], latest: list[ItemRecord | None]
    ) -> ItemRecord | None:
        """The state's record when it still holds, else None (the version is worked on)."""
        known = [record for record in latest if record is not None]
        if len(known) < len(latest):
            return None
        if all(record.outcome in _SETTLED for record in known):
            prior = known[0]
            self.package_id = self.package_id or prior.package_id
            if not self.ctx.recheck_digests:
                return prior
            self._digest = await self.ctx.registry.head(self.repository, tags[0])
            if self._digest == prior.digest:
                return prior
            if prior.outcome is Outcome.SKIPPED:  # never in Akua: the new content is simply new
                self._digest = None
                return None
            raise Rejected(
                f"tag moved from {prior.digest} to {self._digest}; Akua versions are "
                "immutable, publish a new SemVer instead"
            )
        if all(record.outcome in _SETTLED | _RECHECKED for record in known):
            prior = next(record for record in known if record.outcome in _RECHECKED)
            digest = await self.ctx.registry.head(self.repository, tags[0])
            if digest == prior.digest:
                return prior
        return None

    def _settled(self, tags: list[str], semver: str, prior: ItemRecord, started: float) -> None:
        imported = prior.outcome is Outcome.IMPORTED
        self.ctx.reporter.item(
            ItemReport(
                repository=self.repository,
                tag=tags[0],
                tags=tuple(tags[1:]),
                semver=semver,
                digest=prior.digest,
                outcome=Outcome.EXISTS if imported else prior.outcome,
                reason="imported by an earlier run" if imported else prior.reason,
                duration_ms=_ms(started),
                from_state=True,
                known_since=prior.first_seen if prior.outcome.is_problem else None,
            )
        )

    async def _fresh(self, tags: list[str], semver: str) -> tuple[Outcome, str]:
        ctx = self.ctx
        keys, remote_refs = ctx.schema_keys, ctx.remote_refs

        def prepare_or_problem(manifest: Manifest) -> Prepared | InvalidArtifact:
            try:
                return prepare(manifest, semver, keys, remote_refs)
            except InvalidArtifact as exc:
                return exc

        try:
            # Step 4 runs on the registry's worker thread right after the fetch: off the
            # event loop, and without a second thread hop per artifact.
            manifest, outcome = await ctx.registry.manifest_then(
                self.repository, tags[0], prepare_or_problem
            )
        except BadManifest as exc:
            self._digest = exc.digest
            raise
        # The state keeps what the tag points at (what a HEAD answers); Akua gets the
        # artifact's own digest, which differs for the platform manifest of an index.
        self._digest = digest = manifest.tag_digest
        for other in tags[1:]:
            other_digest = await ctx.registry.head(self.repository, other)
            if other_digest != digest:
                # Two tags claim one SemVer with different content: only the preferred one counts.
                await self._conflicting_tag(other, semver, other_digest, tags[0], digest)
                tags.remove(other)
        if isinstance(outcome, InvalidArtifact):
            raise outcome
        prepared = outcome
        if prepared.description_cut:
            log.warning(
                "item.description_cut", repository=self.repository, tag=tags[0], semver=semver,
                reason="org.opencontainers.image.description is longer than 1000 characters; cut",
            )
        if prepared.version is None:
            reason = manifest.no_schema_reason
            await self._record(tags, semver, digest, Outcome.SKIPPED, reason)
            return Outcome.SKIPPED, reason
        if ctx.importer is None:
            self._action = "create-version" if self.package_id or self.planned_import else "import"
            self.planned_import = True
            return Outcome.IMPORTED, _noted(f"would {self._action}", prepared.note)
        target = PackageTarget(
            name=self.repository, oci_ref=self.oci_ref, description=prepared.description
        )
        result = await ctx.importer.write(
            target, prepared.version, digest=manifest.digest, package_id=self.package_id
        )
        self.package_id = result.package_id
        reason = _noted(result.reason, prepared.note)
        await self._record(
            tags, semver, digest, result.outcome, reason,
            package_id=result.package_id, version_id=result.version_id,
            package_found=result.package_found,
        )
        return result.outcome, reason

    async def _conflicting_tag(
        self, tag: str, semver: str, digest: str, winner: str, winner_digest: str
    ) -> None:
        reason = (
            f"tag {tag} maps to SemVer {semver} like {winner}, but points to {digest} "
            f"instead of {winner_digest}"
        )
        self.ctx.on_result(Outcome.REJECTED, None)
        await self._record([tag], semver, digest, Outcome.REJECTED, reason)
        self.ctx.reporter.item(
            ItemReport(
                repository=self.repository, tag=tag, semver=semver, digest=digest,
                outcome=Outcome.REJECTED, reason=reason,
            )
        )

    async def _record(
        self,
        tags: list[str],
        semver: str,
        digest: str,
        outcome: Outcome,
        reason: str,
        *,
        package_id: str | None = None,
        version_id: str | None = None,
        package_found: bool = False,
    ) -> None:
        if self.ctx.writes is None:
            return
        outcome, reason = self.ctx.reporter.ignoring(self.repository, tags, digest, outcome, reason)
        items = tuple(
            ItemRecord(
                registry=self.ctx.registry_host,
                repository=self.repository,
                tag=tag,
                digest=digest,
                semver=semver,
                outcome=outcome,
                reason=reason,
                package_id=package_id,
                version_id=version_id,
            )
            for tag in tags
        )
        packages = (PackageRecord(self.oci_ref, package_id),) if package_found and package_id else ()
        await self.ctx.writes.send(StateWrite(items, packages))


def _outcome_of(exc: ItemError) -> Outcome:
    if isinstance(exc, InvalidArtifact):
        return Outcome.INVALID
    if isinstance(exc, Rejected):
        return Outcome.REJECTED
    return Outcome.FAILED


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _noted(reason: str, note: str | None) -> str:
    return reason if note is None else f"{reason}; {note}" if reason else note

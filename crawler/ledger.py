"""The one place where an item ends: it is reported and, in ``run``, recorded.

Every item of a run (a version, a tag that is not one, a repository that
could not be listed) passes through :meth:`Ledger.finish` exactly once.
That call

1. hands the record to the single state writer, when the item is recorded
   (:func:`crawler.decision.recorded`); an item settled by an earlier run only
   has its ``last_seen`` moved,
2. reports the item (one event; counts; plan lines; the progress line), and
3. tells the failure streak (a service that looks down aborts the run).

Hooks that apply to every item (ignore lists, new/known counts) belong here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from crawler.decision import Options, recorded
from crawler.outcomes import Outcome
from crawler.report import ItemReport, Reporter
from crawler.state import ItemRecord, PackageRecord, SeenItem


@dataclass(frozen=True, slots=True)
class StateWrite:
    items: tuple[ItemRecord, ...]
    packages: tuple[PackageRecord, ...] = ()
    seen: tuple[SeenItem, ...] = ()  # settled items: only their last_seen moves


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemResult:
    """How one item ended, with everything the report and the record need."""

    registry: str
    repository: str
    tags: tuple[str, ...]  # empty: the repository itself (it could not be listed)
    source: str = ""  # the configured source's name
    package_name: str | None = None  # the Akua package name, when not the repository path
    semver: str | None = None
    digest: str | None = None
    outcome: Outcome
    reason: str = ""
    from_state: bool = False  # settled by an earlier run: reported, not recorded again
    record: bool = True  # False: reported only (a verdict that depends on this run's setup)
    action: str | None = None  # plan only: "import" or "create-version"
    package_id: str | None = None
    version_id: str | None = None
    package: PackageRecord | None = None  # a package id new to the state
    started: float = field(default_factory=time.monotonic)
    error: BaseException | None = None  # what ended it, for the failure streak
    #: the state's record this item is compared with (new or known problem)
    before: ItemRecord | None = None

    @property
    def known_since(self) -> float | None:
        """A problem the state already held in this outcome for this digest: since when.

        A ``failed`` item is never known: a failure is transient by definition and is
        retried every run, so one that persists is an outage, new every run it lasts
        (``--fail-on new`` exits 1 and the run is no "last success")."""
        before = self.before
        if (
            before is None
            or not self.outcome.is_problem
            or self.outcome is Outcome.FAILED
            or before.outcome is not self.outcome
            or before.digest != self.digest
        ):
            return None
        return before.first_seen


class Ledger:
    def __init__(
        self,
        *,
        reporter: Reporter,
        writes: MemoryObjectSendStream[StateWrite] | None,
        options: Options,
        observe: Callable[[ItemResult], None],
    ) -> None:
        self.reporter = reporter
        self._writes = writes
        self._options = options
        self._observe = observe

    async def finish(self, result: ItemResult) -> None:
        """Report and record one item; raises RunAborted when its service looks down."""
        if self._writes is not None and result.record and recorded(
            self._options, digest=result.digest, from_state=result.from_state
        ):
            # The ignore list applies to what is recorded as to what is reported.
            outcome, reason = self.reporter.ignoring(
                result.repository, result.tags, result.digest, result.outcome, result.reason
            )
            await self._record(_state_write(result, outcome, reason))
        elif self._writes is not None and result.from_state and result.digest is not None:
            seen = tuple(SeenItem(result.registry, result.repository, tag, result.digest)
                         for tag in result.tags)
            await self._record(StateWrite((), seen=seen))
        self.reporter.item(
            ItemReport(
                repository=result.repository,
                tag=result.tags[0] if result.tags else None,
                tags=result.tags[1:],
                semver=result.semver,
                digest=result.digest,
                outcome=result.outcome,
                reason=result.reason,
                duration_ms=int((time.monotonic() - result.started) * 1000),
                from_state=result.from_state,
                action=result.action,
                known_since=result.known_since,
                source=result.source,
                package=result.package_name,
            )
        )
        self._observe(result)


    async def _record(self, write: StateWrite) -> None:
        assert self._writes is not None
        try:  # no loop turn while the writer keeps up; its bounded buffer still holds it back
            self._writes.send_nowait(write)
        except anyio.WouldBlock:
            await self._writes.send(write)


def _state_write(result: ItemResult, outcome: Outcome, reason: str) -> StateWrite:
    assert result.digest is not None and result.semver is not None
    items = tuple(
        ItemRecord(
            registry=result.registry,
            repository=result.repository,
            tag=tag,
            digest=result.digest,
            semver=result.semver,
            outcome=outcome,
            reason=reason,
            package_id=result.package_id,
            version_id=result.version_id,
        )
        for tag in result.tags
    )
    packages = (result.package,) if result.package is not None else ()
    return StateWrite(items, packages)

"""Which sources stopped: one source's failure stops only it when a run has several.

A source fails when its registry refuses the credentials or stays down, or its
credentials cannot be had; with one source that failure aborts the run.
"""

from __future__ import annotations

from crawler.credentials import CredentialsUnavailable
from crawler.errors import SourceFailed
from crawler.registry import RegistryAuthFailed
from crawler.report import Reporter
from crawler.source import Source


class SourceHealth:
    """Which sources stopped (credentials refused, registry down).  With one source its failure
    aborts the run, as it always did; with several, only that source stops."""

    def __init__(self, reporter: Reporter, sources: int) -> None:
        self._reporter = reporter
        self._several = sources > 1
        self.failed: dict[str, str] = {}

    def is_failed(self, source: Source) -> bool:
        return source.name in self.failed

    def contains(self, source: Source, exc: BaseException) -> bool:
        """True when ``exc`` is a failure of ``source`` alone (reported once) that stops only it;
        False: the caller re-raises it (one source: the run aborts, as it always did)."""
        failed = source_failure(exc)
        if failed is None or not self._several:
            return False
        if source.name not in self.failed:
            self.failed[source.name] = str(failed)
            self._reporter.source_failed(source.name, source.host, str(failed))
        return True


def source_failure(exc: BaseException) -> SourceFailed | None:
    """``exc`` as a failure of one source (its registry refused or down, its credentials
    unobtainable), or the first of a task group's exceptions when all are."""
    if isinstance(exc, SourceFailed):
        return exc
    if isinstance(exc, RegistryAuthFailed | CredentialsUnavailable):
        return SourceFailed(str(exc))
    if isinstance(exc, BaseExceptionGroup):
        leaves = [source_failure(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None

"""The ways one item (a package version) can end, and the record of it."""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    IMPORTED = "imported"  # this run wrote it to Akua
    EXISTS = "exists"  # Akua already had it (or the state says we wrote it before)
    SKIPPED = "skipped"  # not a package version: non-SemVer tag, no schema annotation
    INVALID = "invalid"  # the artifact is broken: unusable schema, bad manifest
    REJECTED = "rejected"  # Akua answered 4xx; its message is the reason
    FAILED = "failed"  # transient errors outlasted the retries; the next run retries
    IGNORED = "ignored"  # a problem the config's ignore list accepts; never alerts

    @property
    def is_success(self) -> bool:
        return self in (Outcome.IMPORTED, Outcome.EXISTS, Outcome.SKIPPED)

    @property
    def is_problem(self) -> bool:
        """Someone has to look at it (ignored items were looked at: they are not problems)."""
        return self in (Outcome.INVALID, Outcome.REJECTED, Outcome.FAILED)

"""What a run tells its operator: one event per item, one per run.

Item events are named ``item.<outcome>`` and carry ``repository``, ``tag``,
``semver``, ``digest``, ``outcome``, ``reason`` and ``duration_ms``.  Items
the state already settled (a nightly re-run) are logged at debug level only,
so a cron log holds what changed and what went wrong, not the whole registry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from crawler.outcomes import Outcome

PROBLEMS_LISTED_MAX: Final = 100

log = structlog.get_logger("crawler")


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemReport:
    repository: str
    tag: str | None
    semver: str | None = None
    digest: str | None = None
    outcome: Outcome
    reason: str = ""
    duration_ms: int = 0
    from_state: bool = False
    action: str | None = None  # plan only: "import" or "create-version"


@dataclass(slots=True)
class RunSummary:
    mode: str
    counts: Counter[str] = field(default_factory=Counter)
    from_state: int = 0
    problems: list[ItemReport] = field(default_factory=list)
    problems_total: int = 0
    started: float = field(default_factory=time.monotonic)
    aborted: str | None = None
    interrupted: str | None = None
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return sum(self.counts.values())

    @property
    def has_problems(self) -> bool:
        return self.problems_total > 0

    def as_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {o.value: self.counts.get(o.value, 0) for o in Outcome}
        fields["items"] = self.items
        fields["from_state"] = self.from_state
        fields["duration_ms"] = int((time.monotonic() - self.started) * 1000)
        fields["requests"] = dict(self.requests)
        if self.problems_total:
            fields["problems"] = [
                f"{p.repository}:{p.tag or '-'} {p.outcome.value}: {p.reason}" for p in self.problems
            ]
            if self.problems_total > len(self.problems):
                fields["problems_not_listed"] = self.problems_total - len(self.problems)
        return fields


class Reporter:
    def __init__(self, mode: str, *, on_item: Callable[[ItemReport], None] | None = None) -> None:
        self.summary = RunSummary(mode=mode)
        self._on_item = on_item
        self.quiet_items = False  # a live progress display replaces per-item info lines

    def item(self, report: ItemReport) -> None:
        summary = self.summary
        summary.counts[report.outcome.value] += 1
        if report.from_state:
            summary.from_state += 1
        if not report.outcome.is_success:
            summary.problems_total += 1
            if len(summary.problems) < PROBLEMS_LISTED_MAX:
                summary.problems.append(report)
        fields = {
            "repository": report.repository,
            "tag": report.tag,
            "semver": report.semver,
            "digest": report.digest,
            "outcome": report.outcome.value,
            "reason": report.reason,
            "duration_ms": report.duration_ms,
        }
        if report.action is not None:
            fields["action"] = report.action
        event = f"item.{report.outcome.value}"
        if not report.outcome.is_success:
            log.warning(event, **fields)
        elif report.from_state or report.action is not None:
            # Settled by an earlier run, or a plan line already printed on stdout.
            log.debug(event, from_state=report.from_state, **fields)
        elif not self.quiet_items:
            log.info(event, **fields)
        if self._on_item is not None:
            self._on_item(report)

"""What a run tells its operator: one event per item, one closing event per run.

Item events are named ``item.<outcome>`` and carry ``repository``, ``tag``
(one tag), ``tags`` (the version's other tags), ``semver``, ``digest``,
``outcome``, ``reason``, ``duration_ms`` and, for problems, ``new``.  A problem
is **new** when it was not already recorded in the same outcome before this run,
**known** otherwise.  Log levels are chosen for a cron mail at ``warning``:

* new problems: warning;
* known problems, ignored items: info;
* items settled by an earlier run, plan lines (already on stdout), tags that are
  not SemVer: debug.

Tags and repositories left out by a source's filters are **filtered**: a debug event
naming the filter, never a problem, counted as ``filtered`` / ``filtered_repositories``.
With several sources, ``run.finished`` carries ``sources``: each source's counts and, when
it could not be crawled, its ``problem``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from crawler.ignore import IgnoreRule, first_match
from crawler.item_log import ItemLog
from crawler.outcomes import Outcome
from crawler.ratelimit import AdaptiveRateLimiter

PROBLEMS_LISTED_MAX: Final = 100
NOT_SEMVER: Final = "tag is not SemVer"
FILTERED: Final = "filtered: "  # how a filter's reason starts (crawler.filters)

log = structlog.get_logger("crawler")


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemReport:
    repository: str
    tag: str | None
    tags: tuple[str, ...] = ()  # the version's other tags (same SemVer, same digest)
    semver: str | None = None
    digest: str | None = None
    outcome: Outcome
    reason: str = ""
    duration_ms: int = 0
    from_state: bool = False
    action: str | None = None  # plan only: "import" or "create-version"
    known_since: float | None = None  # a problem already recorded in this outcome, since then
    source: str = ""  # the [[source]] it came from (its name)
    package: str | None = None  # the Akua package name, when it is not the repository path

    @property
    def filtered(self) -> bool:
        return self.outcome is Outcome.SKIPPED and self.reason.startswith(FILTERED)

    @property
    def all_tags(self) -> tuple[str, ...]:
        return ((self.tag,) if self.tag else ()) + self.tags

    @property
    def is_new_problem(self) -> bool:
        return self.outcome.is_problem and self.known_since is None

    def name(self) -> str:
        return f"{self.repository}:{self.tag or '-'}"

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository, "tag": self.tag, "tags": list(self.tags),
            "semver": self.semver, "digest": self.digest, "outcome": self.outcome.value,
            "reason": self.reason, "new": self.is_new_problem if self.outcome.is_problem else None,
            "known_since": self.known_since, "from_state": self.from_state,
        }


def count_key(report: ItemReport) -> str:
    """``imported`` etc.; a plan counts ``would_import`` / ``would_create_version`` instead."""
    if report.action is not None:
        return "would_" + report.action.replace("-", "_")
    if report.filtered:
        return "filtered"
    return report.outcome.value


@dataclass(slots=True)
class RunSummary:
    mode: str
    counts: Counter[str] = field(default_factory=Counter)
    from_state: int = 0
    # Every problem and ignored item, for --report: the first ones held, the rest on disk.
    problems: ItemLog = field(default_factory=ItemLog)
    ignored: ItemLog = field(default_factory=ItemLog)
    # The first PROBLEMS_LISTED_MAX new and known problems: what run.finished lists.
    listed_new: list[ItemReport] = field(default_factory=list, repr=False)
    listed_known: list[ItemReport] = field(default_factory=list, repr=False)
    new_problems: int = 0
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    aborted: str | None = None
    interrupted: str | None = None
    contained_bugs: int = 0  # repositories a bug in the crawler stopped (exit 5)
    requests: dict[str, int] = field(default_factory=dict)
    throttling: dict[str, float] = field(default_factory=dict)  # 429s, pauses, paused seconds
    filtered_repositories: int = 0
    by_source: dict[str, Counter[str]] = field(default_factory=dict)
    source_problems: dict[str, str] = field(default_factory=dict)  # source name -> why it failed
    shard: str | None = None  # "INDEX/COUNT"

    @property
    def items(self) -> int:
        return sum(n for key, n in self.counts.items() if key != "filtered")

    def filter_counts(self) -> dict[str, int]:
        """What the filters left out; empty when they left out nothing (plans stay as they were)."""
        counts = {"filtered": self.counts.get("filtered", 0),
                  "filtered_repositories": self.filtered_repositories}
        return counts if any(counts.values()) else {}

    def add_problem(self, report: ItemReport) -> None:
        self.problems.append(report)
        listed = self.listed_new if report.is_new_problem else self.listed_known
        if report.is_new_problem:
            self.new_problems += 1
        if len(listed) < PROBLEMS_LISTED_MAX:
            listed.append(report)

    @property
    def problems_total(self) -> int:
        return len(self.problems)

    @property
    def known_problems(self) -> int:
        return self.problems_total - self.new_problems

    @property
    def has_problems(self) -> bool:
        return self.problems_total > 0

    @property
    def duration_s(self) -> float:
        return time.monotonic() - self.started

    def outcome_counts(self) -> dict[str, int]:
        """Every outcome, zeros included; a plan's would-be writes instead of ``imported``."""
        keys = [o.value for o in Outcome]
        if self.mode == "plan":
            keys.remove(Outcome.IMPORTED.value)
            keys[:0] = ["would_import", "would_create_version"]
        return {key: self.counts.get(key, 0) for key in keys}

    def as_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = self.outcome_counts()
        fields["items"] = self.items
        fields["filtered"] = self.counts.get("filtered", 0)
        fields["filtered_repositories"] = self.filtered_repositories
        if self.shard is not None:
            fields["shard"] = self.shard
        if len(self.by_source) > 1 or self.source_problems:
            fields["sources"] = {
                name: {**dict(counts), **({"problem": self.source_problems[name]}
                                          if name in self.source_problems else {})}
                for name, counts in sorted(self.by_source.items())
            }
        fields["from_state"] = self.from_state
        fields["new_problems"] = self.new_problems
        fields["known_problems"] = self.known_problems
        fields["duration_ms"] = int(self.duration_s * 1000)
        fields["requests"] = dict(self.requests)
        if self.throttling:
            fields["throttling"] = dict(self.throttling)
        if self.aborted:
            fields["abort_reason"] = self.aborted
        if self.contained_bugs:
            fields["contained_bugs"] = self.contained_bugs
        if self.interrupted:
            fields["interrupted"] = self.interrupted
        fields["problems_total"] = self.problems_total
        if self.problems:
            # New ones first: they are what the operator has not seen yet.
            listed = (self.listed_new + self.listed_known)[:PROBLEMS_LISTED_MAX]
            fields["problems"] = [
                f"{p.name()} {p.outcome.value} ({'new' if p.is_new_problem else 'known'}): {p.reason}"
                for p in listed
            ]
            if self.problems_total > len(listed):
                fields["problems_not_listed"] = self.problems_total - len(listed)
        return fields


def apply_ignore(rules: Sequence[IgnoreRule], report: ItemReport) -> ItemReport:
    """A problem matching the ignore list becomes ``ignored``, its rule's reason first."""
    if not rules or not report.outcome.is_problem:
        return report
    rule = first_match(rules, report.repository, report.all_tags, report.digest)
    if rule is None:
        return report
    return dataclasses.replace(
        report, outcome=Outcome.IGNORED, known_since=None,
        reason=f"{rule.reason} (ignored; {report.outcome.value}: {report.reason})",
    )


class Reporter:
    def __init__(
        self, mode: str, *, on_item: Callable[[ItemReport], None] | None = None,
        ignore: Sequence[IgnoreRule] = (),
    ) -> None:
        self.summary = RunSummary(mode=mode)
        self._on_item = on_item
        self._ignore = tuple(ignore)
        self.quiet_items = False  # a live progress display replaces per-item info lines
        self.repositories_total: int | None = None  # known once the catalog is fully listed
        self.repositories_done = 0
        self._sources_left = 1
        self._listed = 0
        self.akua_rate: AdaptiveRateLimiter | None = None  # for the live line: is Akua pausing us?
        self._log: Any = None  # bound at the first item, under the run's logging setup

    def ignoring(
        self, repository: str, tags: Sequence[str], digest: str | None, outcome: Outcome, reason: str
    ) -> tuple[Outcome, str]:
        """The outcome and reason to record for an item, the ignore list applied."""
        report = ItemReport(repository=repository, tag=None, tags=tuple(tags), digest=digest,
                            outcome=outcome, reason=reason)
        ignored = apply_ignore(self._ignore, report)
        return ignored.outcome, ignored.reason

    def sources_expected(self, count: int) -> None:
        self._sources_left = count
        self._listed = 0

    def source_listed(self, repositories: int) -> None:
        """One source's repository list is complete; with the last one the total is known."""
        self._listed += repositories
        self._sources_left -= 1
        if self._sources_left <= 0:
            self.repositories_total = self._listed

    def repository_done(self) -> None:
        self.repositories_done += 1

    def source(self, name: str) -> None:
        """A source of this run: it appears in the per-source counts even when it yields nothing."""
        self.summary.by_source.setdefault(name, Counter())

    def repository_filtered(self, source: str, repository: str, reason: str) -> None:
        self.summary.filtered_repositories += 1
        self.summary.by_source.setdefault(source, Counter())["filtered_repositories"] += 1
        log.debug("repository.filtered", source=source, repository=repository, reason=reason)

    def source_failed(self, source: str, registry: str, reason: str) -> None:
        """A source that could not be crawled: one problem item; the other sources go on."""
        self.summary.source_problems[source] = reason
        log.warning("source.failed", source=source, registry=registry, reason=reason)
        self.item(ItemReport(repository=registry, tag=None, outcome=Outcome.FAILED,
                             reason=f"source {source!r}: {reason}", source=source))

    def item(self, report: ItemReport) -> ItemReport:
        """Count, log and pass on one item's outcome; returns it as reported (ignore applied)."""
        report = apply_ignore(self._ignore, report)
        summary = self.summary
        key = count_key(report)
        summary.counts[key] += 1
        if report.source:
            summary.by_source.setdefault(report.source, Counter())[key] += 1
        if report.filtered:  # left out by a filter: a debug line, never a plan line or progress
            log.debug(f"item.{report.outcome.value}", source=report.source or None,
                      repository=report.repository, tag=report.tag, reason=report.reason)
            return report
        if report.from_state:
            summary.from_state += 1
        if report.outcome.is_problem:
            summary.add_problem(report)
        elif report.outcome is Outcome.IGNORED:
            summary.ignored.append(report)
        items_log = self._log
        if items_log is None:  # bound once: the module's lazy proxy binds again on every call
            items_log = self._log = log.bind()
        debug_only = not report.outcome.is_problem and (
            report.from_state or report.action is not None or report.reason == NOT_SEMVER
            or (self.quiet_items and report.outcome is not Outcome.IGNORED))
        if debug_only and not items_log.is_enabled_for(logging.DEBUG):
            if self._on_item is not None:
                self._on_item(report)
            return report
        fields: dict[str, Any] = {
            "repository": report.repository,
            "tag": report.tag,
            "tags": list(report.tags),
            "semver": report.semver,
            "digest": report.digest,
            "outcome": report.outcome.value,
            "reason": report.reason,
            "duration_ms": report.duration_ms,
        }
        if report.action is not None:
            fields["action"] = report.action
        event = f"item.{report.outcome.value}"
        if report.outcome.is_problem:
            fields["new"] = report.is_new_problem
            emit = items_log.warning if report.is_new_problem else items_log.info
            emit(event, **fields)
        elif report.from_state or report.action is not None or report.reason == NOT_SEMVER:
            # Settled by an earlier run, a plan line already printed on stdout, or a tag
            # such as `latest` that every run meets again.
            items_log.debug(event, from_state=report.from_state, **fields)
        elif not self.quiet_items or report.outcome is Outcome.IGNORED:
            items_log.info(event, **fields)
        if self._on_item is not None:
            self._on_item(report)
        return report

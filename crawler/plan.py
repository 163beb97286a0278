"""``plan``'s output: what a run would do, for people to read and diff, and for scripts.

Lines are collected while the crawl runs (in whatever order the workers
finish) and printed at the end sorted by repository, then SemVer, then tag,
followed by the totals, so two plans of an unchanged registry are
byte-identical.  Nothing in a line depends on time or on scheduling.

Text: ``ACTION REPOSITORY TAG SEMVER DIGEST REASON``, the action padded for the eye.
``-o json``: one object per line with sorted keys, the totals as the last object.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from crawler.report import ItemReport, RunSummary
from crawler.versions import SortKey, tag_to_semver

_NO_SEMVER: Any = (1,)  # sorts after every version of the repository


def action_of(report: ItemReport) -> str:
    if report.action is not None:
        return report.action.upper()
    if report.from_state:
        return "DONE" if report.outcome.is_success else report.outcome.value.upper()
    return report.outcome.value.upper()


def _planned_outcome(report: ItemReport) -> str:
    """A plan writes nothing: a version it would write is ``would_import`` or
    ``would_create_version`` (the TOTAL's words), never ``imported``."""
    if report.action is not None:
        return "would_" + report.action.replace("-", "_")
    return report.outcome.value


def _order(report: ItemReport) -> tuple[str, tuple[int, SortKey | Any], str, str]:
    semver = tag_to_semver(report.semver) if report.semver else None
    key: tuple[int, SortKey | Any] = (0, semver.sort_key()) if semver else (1, _NO_SEMVER)
    return (report.repository, key, report.tag or "", report.digest or "")


class PlanPrinter:
    def __init__(self, stream: TextIO, *, json_lines: bool = False) -> None:
        self._stream = stream
        self._json = json_lines
        self._reports: list[ItemReport] = []

    def add(self, report: ItemReport) -> None:
        self._reports.append(report)

    def lines(self, summary: RunSummary) -> list[str]:
        ordered = sorted(self._reports, key=_order)
        totals = {**summary.outcome_counts(), **summary.filter_counts()}
        if self._json:
            out = [json.dumps({
                "action": action_of(r), "repository": r.repository, "tag": r.tag,
                "tags": list(r.tags), "semver": r.semver, "digest": r.digest,
                "outcome": _planned_outcome(r), "reason": r.reason,
                **({"package": r.package} if r.package else {}),
            }, sort_keys=True) for r in ordered]
            out.append(json.dumps({"totals": totals}, sort_keys=True))
            return out
        out = []
        for r in ordered:
            tag = r.tag or "-"
            if r.tags:
                tag += "," + ",".join(r.tags)
            # The package name when a name rule makes it differ from the repository path.
            where = f"{r.repository} -> {r.package}" if r.package else r.repository
            out.append(
                f"{action_of(r):<15} {where} {tag} {r.semver or '-'} {r.digest or '-'} "
                f"{r.reason}".rstrip()
            )
        out.append("TOTAL           " + ", ".join(f"{key} {n}" for key, n in totals.items()))
        return out

    def finish(self, summary: RunSummary) -> None:
        self._stream.write("".join(line + "\n" for line in self.lines(summary)))
        self._stream.flush()

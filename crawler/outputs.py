"""Files written at the end of every run: the JSON report and the Prometheus metrics.

Both are written atomically (a temporary file in the same directory, fsync,
rename), so a reader (a script, node_exporter's textfile collector) sees the
previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported where used: only a run that writes metrics pays for it
    from prometheus_client import CollectorRegistry, Gauge

from crawler import __version__
from crawler.report import RunSummary

METRIC_PREFIX: Final = "akua_crawler"


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run as the output files see it."""

    summary: RunSummary
    exit_status: int
    finished_at: float
    last_success_at: float | None  # the latest run with exit status 0, this one included


def write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """``data``: the bytes, or chunks of them (written as they come)."""
    path = path.expanduser()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in (data,) if isinstance(data, bytes) else data:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def report_document(result: RunResult) -> dict[str, Any]:
    """The whole report as one value (``write_report`` streams the same document)."""
    summary = result.summary
    return {**_report_head(result), "problems": list(summary.problems.rows()),
            "ignored": list(summary.ignored.rows())}


def _report_head(result: RunResult) -> dict[str, Any]:
    summary = result.summary
    return {
        "crawler_version": __version__,
        "mode": summary.mode,
        "exit_status": result.exit_status,
        "started_at": summary.started_at,
        "finished_at": result.finished_at,
        "duration_s": round(summary.duration_s, 3),
        "counts": summary.outcome_counts(),
        "items": summary.items,
        "from_state": summary.from_state,
        "new_problems": summary.new_problems,
        "known_problems": summary.known_problems,
        "problems_total": summary.problems_total,
        "abort_reason": summary.aborted,
        "interrupted": summary.interrupted,
        "requests": dict(summary.requests),
        "throttling": dict(summary.throttling),
        "last_success_at": result.last_success_at,
    }


def write_report(path: Path, result: RunResult) -> None:
    write_atomic(path, _report_chunks(result))


def _report_chunks(result: RunResult) -> Iterator[bytes]:
    """``json.dumps(report_document(result), indent=2)`` and a newline, byte for byte, one
    problem or ignored item at a time (those lists can be long; see crawler.item_log)."""
    summary = result.summary
    head = json.dumps(_report_head(result), indent=2)
    yield head[:-2].encode()  # without the closing "\n}"
    for key, items in (("problems", summary.problems), ("ignored", summary.ignored)):
        yield f',\n  "{key}": '.encode()
        first = True
        for row in items.rows():
            text = json.dumps(row, indent=2).replace("\n", "\n    ")
            yield (b"[\n    " if first else b",\n    ") + text.encode()
            first = False
        yield b"[]" if first else b"\n  ]"
    yield b"\n}\n"


def metrics_registry(result: RunResult) -> CollectorRegistry:
    """The metrics of one run, in a registry of their own (never the process-wide one)."""
    summary = result.summary
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"{METRIC_PREFIX}_{name}", doc, labels, registry=registry)

    mode = summary.mode
    gauge("info", "The crawler's version", ("version",)).labels(__version__).set(1)
    gauge("last_run_timestamp_seconds", "When the last run ended (Unix time)", ("mode",)).labels(
        mode).set(result.finished_at)
    success = gauge("last_success_timestamp_seconds",
                    "When the last run with exit status 0 ended (Unix time)", ("mode",))
    if result.last_success_at is not None:
        success.labels(mode).set(result.last_success_at)
    gauge("exit_status", "Exit status of the last run", ("mode",)).labels(mode).set(
        result.exit_status)
    gauge("run_duration_seconds", "Duration of the last run", ("mode",)).labels(mode).set(
        summary.duration_s)
    items = gauge("items", "Items of the last run by outcome", ("outcome",))
    for outcome, count in summary.outcome_counts().items():
        items.labels(outcome).set(count)
    problems = gauge("problems", "Problem items of the last run, new or known", ("kind",))
    problems.labels("new").set(summary.new_problems)
    problems.labels("known").set(summary.known_problems)
    requests = gauge("requests", "HTTP requests sent by the last run", ("service", "kind"))
    for key, count in sorted(summary.requests.items()):
        service, _, kind = key.partition("_")
        if service == "api":
            if kind == "429":
                continue  # akua_throttled_responses
            service, kind = "akua", {"requests": "all"}.get(kind, kind)
        requests.labels(service, kind).set(count)
    throttling = summary.throttling
    gauge("akua_throttled_responses", "429 answers from Akua in the last run").set(
        throttling.get("throttled", 0))
    gauge("akua_pauses", "Pauses of the whole pool asked by Akua (Retry-After)").set(
        throttling.get("pauses", 0))
    gauge("akua_paused_seconds", "Seconds the pool was paused by Akua").set(
        throttling.get("paused_s", 0.0))
    return registry


def write_metrics(path: Path, result: RunResult) -> None:
    from prometheus_client import generate_latest

    write_atomic(path, generate_latest(metrics_registry(result)))

"""``akua-crawler status``: what happened last night, from the state alone.

Offline and read-only: it opens the state without the run lock (WAL lets it
read while a run writes) and contacts nothing.  It shows the last run, the
last successful one (exit status 0), then the current problems and ignored
items by repository: outcome, reason, since when, and whether each is **new**
(entered its outcome during the last run) or **known**.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from crawler.config import OPTIONS, default_state_path, read_config_file
from crawler.errors import ConfigError
from crawler.outcomes import Outcome
from crawler.shards import Shard
from crawler.state import SCHEMA_VERSION, ItemRecord, RunRecord, StateStore

SHOWN: Final = (Outcome.INVALID, Outcome.REJECTED, Outcome.FAILED, Outcome.IGNORED)
_STATE_OPTION: Final = next(option for option in OPTIONS if option.key == "state")
_SHARD_COUNT: Final = next(option for option in OPTIONS if option.key == "shard_count")


@dataclass(frozen=True, slots=True)
class Filters:
    outcomes: tuple[Outcome, ...] = SHOWN
    repository: str | None = None
    since: float | None = None


def state_path(flag: str | None, environ: Mapping[str, str], config_file: Path | None) -> Path:
    """The state's path with the usual precedence: flag > environment > config file > default."""
    if flag is not None:
        return _STATE_OPTION.parse(flag, "--state")  # type: ignore[no-any-return]
    if _STATE_OPTION.env in environ:
        return _STATE_OPTION.parse(environ[_STATE_OPTION.env], _STATE_OPTION.env)  # type: ignore[no-any-return]
    if config_file is not None:
        data = read_config_file(config_file)
        if "state" in data:
            return _STATE_OPTION.parse(data["state"], f"{config_file}: state")  # type: ignore[no-any-return]
    return default_state_path()


def parse_since(text: str, now: dt.datetime | None = None) -> float:
    """``2026-12-01``, ``2026-12-01T03:00:00Z``, or an age: ``36h``, ``2d``, ``90m``."""
    text = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        now = now or dt.datetime.now(dt.UTC)
        return now.timestamp() - int(text[:-1]) * units[text[-1]]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since: {text!r} is neither an ISO date/time nor an age such as 36h or 2d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_outcome(text: str) -> Outcome:
    try:
        outcome = Outcome(text.strip().lower())
    except ValueError:
        outcome = None
    if outcome not in SHOWN:
        raise ConfigError(f"--outcome: {text!r} is not one of {', '.join(o.value for o in SHOWN)}")
    assert outcome is not None
    return outcome


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _run_json(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    doc = run.as_json()
    doc["started"] = _iso(run.started_at)
    doc["finished"] = _iso(run.finished_at)
    return doc


def _is_new(item: ItemRecord, last: RunRecord | None) -> bool:
    if last is None:
        return False
    if item.outcome is Outcome.FAILED:  # never known: new in every run that meets it
        return item.last_seen >= last.started_at
    return item.first_seen >= last.started_at


def status_document(store: StateStore, filters: Filters) -> dict[str, Any]:
    last = store.last_run()
    items = store.current_items(filters.outcomes, repository=filters.repository, since=filters.since)
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_repository.setdefault(item.repository, []).append({
            "tag": item.tag, "semver": item.semver, "digest": item.digest,
            "outcome": item.outcome.value, "reason": item.reason,
            "first_seen": _iso(item.first_seen), "last_seen": _iso(item.last_seen),
            "new": _is_new(item, last) if item.outcome.is_problem else None,
            # False: the last run did not meet it (its tag is gone, or the run stopped early
            # or covered other repositories).
            "seen_in_last_run": last is not None and item.last_seen >= last.started_at,
        })
    problems = [i for i in items if i.outcome.is_problem]
    new = sum(1 for i in problems if _is_new(i, last))
    return {
        "state": str(store.path),
        "schema_version": store.schema_version,
        "last_run": _run_json(last),
        "last_successful_run": _run_json(store.last_run(successful=True)),
        "problems": {"total": len(problems), "new": new, "known": len(problems) - new},
        "ignored": sum(1 for i in items if i.outcome is Outcome.IGNORED),
        "repositories": [{"repository": name, "items": rows}
                         for name, rows in sorted(by_repository.items())],
    }


def _run_line(label: str, run: Mapping[str, Any] | None) -> str:
    if run is None:
        return f"{label:<16} none recorded"
    exit_status = run["exit_status"]
    when = run["finished"] or run["started"]
    what = "still running or killed" if exit_status is None else f"exit {exit_status}"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run["counts"].items()) if v)
    line = f"{label:<16} #{run['id']} {when} {what}"
    if counts:
        line += f"; {counts}"
    if exit_status is not None and run["counts"]:
        line += f"; problems new {run['new_problems']}, known {run['known_problems']}"
    if run["abort_reason"]:
        line += f"; aborted: {run['abort_reason']}"
    return line


def render_text(doc: Mapping[str, Any]) -> str:
    lines = [f"state            {doc['state']}"]
    if doc["schema_version"] < SCHEMA_VERSION:
        lines.append(
            f"                 written before run history (schema {doc['schema_version']}); "
            "the next run upgrades it in place"
        )
    lines += [
        _run_line("last run", doc["last_run"]),
        _run_line("last success", doc["last_successful_run"]),
    ]
    for shard in doc.get("states", ()):  # merged shards: one line each
        lines.append(_run_line(f"  {Path(shard['state']).name}", shard["last_run"]))
    problems = doc["problems"]
    lines.append(
        f"problems         {problems['total']} ({problems['new']} new, {problems['known']} known); "
        f"ignored {doc['ignored']}"
    )
    for repo in doc["repositories"]:
        lines.append("")
        lines.append(repo["repository"])
        for row in repo["items"]:
            flag = {True: "NEW", False: "known", None: ""}[row["new"]]
            gone = "" if row.get("seen_in_last_run", True) else "(not seen by the last run) "
            lines.append(
                f"  {row['tag']:<20} {row['outcome']:<9} {flag:<6} since {row['first_seen']}  "
                f"{gone}{row['reason']}"
            )
    return "\n".join(lines) + "\n"


def run_status(
    *, state_flag: str | Sequence[str] | None, config_file: Path | None, filters: Filters,
    output: str, environ: Mapping[str, str] | None = None,
) -> str:
    """The status text (or JSON); raises ConfigError for a bad path, file or filter.

    Several ``--state`` paths (or a configured ``shard_count``) merge the shards' states."""
    environ = os.environ if environ is None else environ
    paths = state_paths(state_flag, environ, config_file)
    for path in paths:
        if not path.exists():
            raise ConfigError(f"state: {path} does not exist (no run has written it yet)")
    docs = []
    for path in paths:
        with StateStore(path, target=None, readonly=True) as store:
            docs.append(status_document(store, filters))
    doc = docs[0] if len(docs) == 1 else merge_documents(docs)
    if output == "json":
        return json.dumps(doc, sort_keys=False) + "\n"
    return render_text(doc)


def state_paths(flag: str | Sequence[str] | None, environ: Mapping[str, str],
                config_file: Path | None) -> list[Path]:
    """Each ``--state`` given; else the one state, or every shard's when a shard count is set."""
    if isinstance(flag, str) or flag is None:
        flags: Sequence[str | None] = [flag]
    else:
        flags = list(flag) or [None]
    if len(flags) > 1:
        return [state_path(f, environ, config_file) for f in flags]
    path = state_path(flags[0], environ, config_file)
    count = _shard_count(environ, config_file)
    if count is None or count == 1:
        return [path]
    return [Shard(index, count).state_path(path) for index in range(count)]


def _shard_count(environ: Mapping[str, str], config_file: Path | None) -> int | None:
    if _SHARD_COUNT.env in environ:
        return int(_SHARD_COUNT.parse(environ[_SHARD_COUNT.env], _SHARD_COUNT.env))
    if config_file is not None:
        data = read_config_file(config_file)
        if "shard_count" in data:
            return int(_SHARD_COUNT.parse(data["shard_count"], f"{config_file}: shard_count"))
    return None


def merge_documents(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several shards' status as one: a repository lives in one shard, so its rows come from one."""

    def latest(key: str) -> dict[str, Any] | None:
        runs = [doc[key] for doc in docs if doc[key] is not None]
        return max(runs, key=lambda run: run["finished"] or run["started"], default=None)

    problems = {k: sum(doc["problems"][k] for doc in docs) for k in ("total", "new", "known")}
    repositories = sorted((repo for doc in docs for repo in doc["repositories"]),
                          key=lambda repo: repo["repository"])
    return {
        "state": ", ".join(doc["state"] for doc in docs),
        "states": [{"state": doc["state"], "last_run": doc["last_run"],
                    "last_successful_run": doc["last_successful_run"],
                    "problems": doc["problems"]} for doc in docs],
        "schema_version": min(doc["schema_version"] for doc in docs),
        "last_run": latest("last_run"),
        # The fleet succeeded when every shard did: the oldest of the shards' last successes.
        "last_successful_run": (None if any(doc["last_successful_run"] is None for doc in docs)
                                else min((doc["last_successful_run"] for doc in docs),
                                         key=lambda run: run["finished"] or run["started"])),
        "problems": problems,
        "ignored": sum(doc["ignored"] for doc in docs),
        "repositories": repositories,
    }



"""``akua-crawler run``, ``plan`` and ``status``.

Exit statuses (documented in the README):
0 nothing to alert on: every item imported, already there, skipped or ignored, or
  (``--fail-on new``, the default) every problem already known before this run;
1 problems to look at: a new one (``--fail-on new``) or any (``--fail-on any``);
2 bad usage or configuration (the state file included), found before anything was contacted;
3 the run aborted (Akua refused the token, the registry or Akua is down, the state
  cannot be written any more: disk full, read-only, locked by another process);
4 another run holds the state store;
5 a bug in the crawler stopped the run (the traceback is logged), also for any exception
  that escapes the run's own handlers (never Python's 1);
130 / 143 stopped by SIGINT / SIGTERM after recording what finished.

Every run that got past reading its configuration ends with exactly one ``run.finished``
event, whatever its exit status, and writes ``--report`` / ``--metrics-file``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn, TextIO

import anyio
import structlog

from crawler import __version__
from crawler.arguments import completion_script, log_level_of, shared_parser
from crawler.config import CONFIG_ENV, Settings, resolve
from crawler.crawl import crawl, target_of
from crawler.errors import ConfigError, RunError
from crawler.logs import configure, use_console
from crawler.logs import finish as finish_logs
from crawler.outputs import RunResult, write_metrics, write_report
from crawler.plan import PlanPrinter
from crawler.progress import ProgressLine
from crawler.report import ItemReport, Reporter, RunSummary
from crawler.signals import StopControl, make_stop_control, watch_signals
from crawler.state import StateStore
from crawler.status import SHOWN, Filters, parse_outcome, parse_since, run_status

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_BUG = 5

log = structlog.get_logger("crawler")


#: How long the process waits at exit for worker threads to finish by themselves.
EXIT_WAIT_S = 1.0

#: Set when the end of a run could not hand its last log lines to a stuck reader.
_log_reader_stuck = False


def entry() -> NoReturn:
    """The process entry point (console script and ``python -m crawler``).

    After the run, registry calls abandoned at a signal may still sit in worker
    threads (a dripping registry, a DNS lookup).  The state is closed and the
    closing event written by then, so the process exits with the run's status
    after at most ``EXIT_WAIT_S`` of waiting for them: SIGTERM always ends it.
    """
    status = main()
    try:
        sys.stdout.flush()
    except OSError:  # the reader went away (`plan | head`): drop what is left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if _log_reader_stuck:
        # The log writer is blocked in a write to standard error and holds its lock: a
        # flush here, or the interpreter's own at shutdown, would wait for ever.
        os._exit(status)
    sys.stderr.flush()
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))  # idle workers end at once
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        os._exit(status)  # a thread still blocked (abandoned at a signal): do not wait for it
    raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
    global _log_reader_stuck
    parser = shared_parser()
    try:
        args = parser.parse_args(argv)
    except ConfigError as exc:
        print(f"akua-crawler: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "completion":
        sys.stdout.write(completion_script(args.shell))
        return EXIT_OK
    if args.config is None and os.environ.get(CONFIG_ENV):
        args.config = Path(os.environ[CONFIG_ENV])
    if args.command == "status":
        return _status(args)
    flags: dict[str, Any] = {
        k: v for k, v in vars(args).items()
        if k not in ("command", "config", "output", "verbose", "quiet", "password_stdin")
    }
    flags["log_level"] = log_level_of(args)
    try:
        stdin_password = _password_from_stdin() if getattr(args, "password_stdin", False) else None
        settings = resolve(
            flags=flags, environ=os.environ, config_file=args.config, need_token=args.command == "run",
            stdin_password=stdin_password, sends_token=args.command == "run",
        )
    except ConfigError as exc:
        print(f"akua-crawler: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    secrets = settings.secrets()
    progress = None
    stream: TextIO = sys.stderr
    if use_console(settings.log_format, sys.stderr) and sys.stderr.isatty():
        progress = ProgressLine(sys.stderr)
        stream = progress  # type: ignore[assignment]  # a write/flush/isatty stream
    configure(log_format=settings.log_format, level=settings.log_level, secrets=secrets,
              stream=stream)
    try:
        return _run(settings, args.command, getattr(args, "output", "text"), progress)
    finally:
        # Every line written, the closing event last, before the process ends.
        _log_reader_stuck = not finish_logs()


def _run(settings: Settings, command: str, output: str, progress: ProgressLine | None) -> int:
    plan = PlanPrinter(sys.stdout, json_lines=output == "json")
    closed: list[bool] = []  # set once run.finished is logged
    try:
        status = anyio.run(_main, settings, command, progress, plan, closed)
    except Exception as exc:  # escaped the run's own handlers: still a bug, never exit 1
        leaf = _first_leaf(exc)
        reason = f"bug: {type(leaf).__name__}: {leaf}"
        log.error("run.crashed", reason=reason, exc_info=exc)
        if not closed:
            log.warning("run.finished", mode=command, exit_status=EXIT_BUG,
                        fail_on=settings.fail_on, abort_reason=reason)
        return EXIT_BUG
    if progress is not None:
        progress.print_summary(status)
    return status


def _password_from_stdin() -> str:
    """One line from standard input (``echo "$PW" | akua-crawler run --password-stdin``)."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise ConfigError("--password-stdin: standard input is empty")
    return line


def _status(args: argparse.Namespace) -> int:
    try:
        filters = Filters(
            outcomes=tuple(parse_outcome(o) for o in args.outcome) if args.outcome else SHOWN,
            repository=args.repository,
            since=parse_since(args.since) if args.since else None,
        )
        text = run_status(state_flag=args.state, config_file=args.config, filters=filters,
                          output=args.output)
    except ConfigError as exc:
        print(f"akua-crawler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(text)
    return EXIT_OK


class RunHistory:
    """The run's row in the state: opened with the lock before the crawl, closed after it."""

    def __init__(self, settings: Settings, mode: str) -> None:
        self.settings = settings
        self.mode = mode
        self.store: StateStore | None = None
        self.run_id: int | None = None

    async def open(self) -> StateStore | None:
        if self.mode != "run":
            return None  # plan writes nothing, not even its own run

        def open_and_start() -> StateStore:
            store = StateStore(self.settings.state, target=target_of(self.settings))
            try:
                self.run_id = store.start_run(mode=self.mode, crawler_version=__version__)
            except BaseException:
                store.close()
                raise
            return store

        self.store = await anyio.to_thread.run_sync(open_and_start)
        return self.store

    async def close(self, summary: RunSummary, exit_status: int) -> float | None:
        """Records the run's end; returns when the latest successful run ended."""
        store = self.store
        if store is None:
            return await anyio.to_thread.run_sync(self._last_success_readonly)

        def finish() -> float | None:
            try:
                if self.run_id is not None:
                    store.finish_run(
                        self.run_id, exit_status=exit_status, counts=summary.outcome_counts(),
                        new_problems=summary.new_problems, known_problems=summary.known_problems,
                        abort_reason=summary.aborted or summary.interrupted,
                    )
                last = store.last_run(successful=True)
                return None if last is None else last.finished_at
            finally:
                store.close()

        with anyio.CancelScope(shield=True):
            try:
                last_success = await anyio.to_thread.run_sync(finish)
            except (sqlite3.Error, OSError) as exc:
                # The state cannot be written (disk full, read-only, locked): the closing
                # event still goes out; the run's row keeps no end.
                log.error("state.run_not_recorded", state=str(store.path), reason=str(exc))
                return None
        return last_success

    def _last_success_readonly(self) -> float | None:
        try:
            with StateStore(self.settings.state, target=None, readonly=True) as reader:
                last = reader.last_run(successful=True)
        except (ConfigError, OSError):
            return None
        return None if last is None else last.finished_at


async def _main(
    settings: Settings, mode: str, progress: ProgressLine | None, plan: PlanPrinter,
    closed: list[bool] | None = None,
) -> int:
    on_item = plan.add if mode == "plan" else None
    reporter = Reporter(mode, on_item=_chain(on_item, progress), ignore=settings.ignore)
    reporter.quiet_items = progress is not None
    if progress is not None:
        progress.attach(reporter)
    summary = reporter.summary
    stop = make_stop_control()
    history = RunHistory(settings, mode)
    status: int | None = None
    log.info("run.started", mode=mode,
             registry=settings.registry or ",".join(s.registry for s in settings.source_list()),
             sources=[s.name for s in settings.source_list()],
             shard=settings.shard.label if settings.shard is not None else None,
             api_url=settings.api_url,
             concurrency=settings.concurrency, rate=settings.rate, state=str(settings.state),
             fail_on=settings.fail_on)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                watch_signals, stop, settings.grace_period, (signal.SIGTERM, signal.SIGINT),
                lambda name: log.warning("run.stopping", signal=name,
                                         grace_period_s=settings.grace_period),
            )
            if progress is not None:
                group.start_soon(progress.run)
            try:
                state = await history.open()
                await crawl(settings, mode=mode, reporter=reporter, stop=stop, state=state)
            except* RunError as errors:
                # The first run error decides; anything else in the group is a bug and
                # goes on to the handler below.
                first = run_errors(errors)[0]
                status = first.exit_status
                summary.aborted = str(first)
                log.error("run.aborted", reason=str(first), exit_status=status)
            finally:
                group.cancel_scope.cancel()
    except Exception as exc:  # a bug: logged with its traceback, exit 5
        status = EXIT_BUG
        leaf = _first_leaf(exc)
        summary.aborted = f"bug: {type(leaf).__name__}: {leaf}"
        log.exception("run.crashed", reason=summary.aborted)
    if stop.reason:
        summary.interrupted = stop.reason
    if status is None:
        status = exit_status(summary, stop, settings.fail_on)
    last_success = await history.close(summary, status)
    if mode == "plan":
        plan.finish(summary)
    finished_at = time.time()
    if status == EXIT_OK:
        last_success = finished_at  # this run (the state's row says the same for `run`)
    _write_outputs(settings, RunResult(summary, status, finished_at, last_success))
    level = log.info if status == EXIT_OK else log.warning
    fields = summary.as_fields()
    if progress is not None:
        # On a terminal the summary table follows; the event keeps its scalar fields only
        # (the problems were logged one by one above it).
        fields = {key: value for key, value in fields.items() if not isinstance(value, dict | list)}
    level("run.finished", mode=mode, exit_status=status, fail_on=settings.fail_on, **fields)
    if closed is not None:
        closed.append(True)
    return status


def run_errors(group: BaseExceptionGroup[RunError]) -> list[RunError]:
    """The run errors of a group, depth first, in the order they were raised."""
    found: list[RunError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(run_errors(exc))
        else:
            found.append(exc)
    return found


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def exit_status(summary: RunSummary, stop: StopControl, fail_on: str) -> int:
    if stop.reason is not None:
        return 128 + signal.Signals[stop.reason].value
    if summary.contained_bugs:
        return EXIT_BUG  # whatever --fail-on says: a bug is never a data problem
    if fail_on == "any":
        return EXIT_PROBLEMS if summary.has_problems else EXIT_OK
    if fail_on == "new":
        return EXIT_PROBLEMS if summary.new_problems else EXIT_OK
    return EXIT_OK


def _write_outputs(settings: Settings, result: RunResult) -> None:
    """The report and metrics files; a failure to write one is logged, never raised."""
    for path, write in ((settings.report, write_report), (settings.metrics_file, write_metrics)):
        if path is None:
            continue
        try:
            write(path, result)
        except OSError as exc:
            log.error("run.output_failed", path=str(path), reason=f"{exc.strerror or exc}")


def _chain(
    first: Any, progress: ProgressLine | None
) -> Any:
    if progress is None:
        return first

    def both(report: ItemReport) -> None:
        if first is not None:
            first(report)
        progress.observe(report)

    return both

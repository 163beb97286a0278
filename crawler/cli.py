"""``akua-crawler run`` and ``akua-crawler plan``.

Exit statuses (documented in the README):
0 every selected artifact imported, already there, or skipped;
1 some item ended invalid, rejected or failed (named in the run summary);
2 bad usage or configuration, found before anything was contacted;
3 the run aborted (Akua refused the token, the registry or Akua is down);
4 another run holds the state store;
130 / 143 stopped by SIGINT / SIGTERM after recording what finished.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog

from crawler import __version__
from crawler.config import OPTIONS, Settings, resolve
from crawler.crawl import crawl, make_stop_control, watch_signals
from crawler.errors import ConfigError, RunError
from crawler.logs import configure, use_console
from crawler.progress import ProgressLine
from crawler.report import ItemReport, Reporter, RunSummary

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

log = structlog.get_logger("crawler")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML file with any option below")
    for option in OPTIONS:
        dest = option.key
        if option.is_switch or option.parse.__name__ == "_bool":
            common.add_argument(
                option.cli_flag, dest=dest, action=argparse.BooleanOptionalAction,
                default=None, help=option.help,
            )
        elif option.repeatable:
            common.add_argument(
                option.cli_flag, dest=dest, action="append", default=None, help=option.help
            )
        else:
            common.add_argument(option.cli_flag, dest=dest, default=None, help=option.help)
    parser = argparse.ArgumentParser(
        prog="akua-crawler",
        description="Import every package version published in an OCI registry into Akua, once.",
    )
    parser.add_argument("--version", action="version", version=f"akua-crawler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="crawl and import into Akua")
    commands.add_parser("plan", parents=[common],
                        help="crawl and validate; print what would be imported, write nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = resolve(
            flags=flags, environ=os.environ, config_file=args.config, need_token=args.command == "run"
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
    return anyio.run(_main, settings, args.command, progress)


async def _main(settings: Settings, mode: str, progress: ProgressLine | None) -> int:
    on_item = None
    if mode == "plan":
        on_item = _print_plan_line
    reporter = Reporter(mode, on_item=_chain(on_item, progress))
    reporter.quiet_items = progress is not None
    stop = make_stop_control()
    status: int | None = None
    log.info("run.started", mode=mode, registry=settings.registry, api_url=settings.api_url,
             concurrency=settings.concurrency, rate=settings.rate, state=str(settings.state))
    async with anyio.create_task_group() as group:
        group.start_soon(
            watch_signals, stop, settings.grace_period, (signal.SIGTERM, signal.SIGINT), group,
            lambda name: log.warning("run.stopping", signal=name,
                                     grace_period_s=settings.grace_period),
        )
        if progress is not None:
            group.start_soon(progress.run)
        try:
            await crawl(settings, mode=mode, reporter=reporter, stop=stop)
        except RunError as exc:
            status = exc.exit_status
            log.error("run.aborted", reason=str(exc), exit_status=status)
        finally:
            group.cancel_scope.cancel()
    summary = reporter.summary
    if status is None:
        status = _exit_status(summary, stop.reason)
    if stop.reason:
        summary.interrupted = stop.reason
    event = "run.finished" if status in (EXIT_OK, EXIT_PROBLEMS) else "run.stopped"
    level = log.info if status == EXIT_OK else log.warning
    level(event, mode=mode, exit_status=status, **summary.as_fields())
    return status


def _exit_status(summary: RunSummary, stopped_by: str | None) -> int:
    if stopped_by is not None:
        return 128 + signal.Signals[stopped_by].value
    return EXIT_PROBLEMS if summary.has_problems else EXIT_OK


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


def _print_plan_line(report: ItemReport) -> None:
    """The plan, one line per version on stdout, for people and for grep."""
    if report.action is not None:
        what = report.action.upper()
    elif report.from_state:
        what = "DONE" if report.outcome.is_success else report.outcome.value.upper()
    else:
        what = report.outcome.value.upper()
    digest = report.digest or "-"
    print(
        f"{what:<15} {report.repository} {report.tag or '-'} {report.semver or '-'} {digest} "
        f"{report.reason}",
        flush=False,
    )

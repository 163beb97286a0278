"""The command line: the parser, its help, ``--version`` and shell completion.

Built from the option table in ``config.py``, so a new option gets its flag, its
help line (environment variable, default, choices) and its completion at once.

* Global options (``-c/--config``, ``-v``/``-q``, ``--log-format``, ``--log-level``)
  are accepted before or after the subcommand.
* Each subcommand lists only the options it uses: ``plan`` never writes to Akua, so
  its help has no ``--rate`` or ``--api-timeout`` (it still accepts them, so one
  command line serves both).
* ``akua-crawler completion bash|zsh|tcsh`` prints a completion script generated
  from this parser by ``shtab``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import shtab

from crawler import __version__
from crawler.config import CONFIG_ENV, OPTIONS, Option, choices_of, default_of
from crawler.errors import ConfigError
from crawler.setting_values import parse_bool

EXIT_STATUSES: Final = """\
exit statuses:
  0    nothing to alert on (every item imported, already there, skipped or ignored;
       with --fail-on new, every problem already known before this run)
  1    problems to look at (new ones with --fail-on new, any with --fail-on any)
  2    bad usage or configuration, found before anything was contacted
  3    the run aborted: Akua refused the token, a registry or Akua is down, or the
       state cannot be written any more (disk full, read-only, locked by another process)
  4    another run holds the state store
  5    a bug in the crawler: contained to one repository (the others went on), or it
       stopped the run
  130  stopped by SIGINT, 143 by SIGTERM, after recording what finished
"""

SECRETS: Final = """\
secrets (never as flags or in the config file):
  AKUA_API_TOKEN or AKUA_API_TOKEN_FILE            the Akua token (run only)
  REGISTRY_PASSWORD or REGISTRY_PASSWORD_FILE      with --username; or --password-stdin
  $CREDENTIALS_DIRECTORY/akua-api-token, .../registry-password   systemd's LoadCredential=
  Docker's config.json and its credential helpers  for a registry without --username

"""

STATUS_EXIT_STATUSES: Final = """\
exit statuses:
  0    the state was read (whatever its runs and problems say)
  2    bad usage, or the state cannot be read
"""

#: Accepted before or after the subcommand.
GLOBAL_KEYS: Final = frozenset({"log_format", "log_level"})
#: Only ``run`` talks to Akua's write endpoints and paces them.
RUN_ONLY_KEYS: Final = frozenset({"rate", "api_timeout", "allow_plain_http_api", "shard_rate"})
#: The dependencies whose versions ``--version`` prints.
KEY_DEPENDENCIES: Final = ("oras", "requests", "httpx", "anyio", "jsonschema", "structlog", "node-semver")

_METAVARS: Final = {
    "registry": "HOST[:PORT]", "api_url": "URL", "state": "PATH", "repositories": "NAME",
    "workspace": "ID", "concurrency": "N", "registry_in_flight": "N", "shard_count": "N",
    "rate": "PER_SECOND", "registry_rate": "PER_SECOND", "shard_rate": "PER_SECOND",
    "grace_period": "SECONDS", "registry_timeout": "SECONDS", "api_timeout": "SECONDS",
    "schema_annotations": "KEY", "username": "USER", "include": "GLOB", "exclude": "GLOB",
    "allow_tags": "REGEX", "deny_tags": "REGEX", "semver": "RANGE", "name_prefix": "PREFIX",
    "name_template": "TEMPLATE", "name_overrides": "REPO=NAME", "password_env": "VARIABLE",
    "shard": "INDEX/COUNT",
}
_FILE_KEYS: Final = frozenset({
    "state", "repositories_file", "password_file", "ca_file", "client_cert", "client_key",
    "report", "metrics_file",
})
_DEFAULT_IN_HELP: Final = re.compile(r"\s*\((?:default|e\.g\.)[^)]*\)\s*$")


def version_text() -> str:
    parts = []
    for name in KEY_DEPENDENCIES:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return f"akua-crawler {__version__} (Python {platform.python_version()}; {', '.join(parts)})"


class _VersionAction(argparse._VersionAction):
    """``--version``, its text made only when asked: each dependency's version is a metadata lookup."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        self.version = version_text()
        super().__call__(parser, namespace, values, option_string)


def _help(option: Option) -> str:
    text = _DEFAULT_IN_HELP.sub("", option.help)
    if re.fullmatch(r"default \S+", text):  # the bracket says it
        text = option.key.replace("_", " ")
    details = [f"env {option.env}"]
    default = default_of(option.key)
    if isinstance(default, bool):
        details.append(f"default {'on' if default else 'off'}")
    elif default not in (None, (), ""):
        shown = ", ".join(default) if isinstance(default, tuple) else str(default)
        details.append(f"default {shown}")
    if option.repeatable:
        details.append("env: comma-separated")
    # argparse expands %-format specifiers in help: keep a literal % literal.
    return f"{text} [{'; '.join(details)}]".replace("%", "%%")


def _add_option(parser: argparse.ArgumentParser, option: Option, *, suppress: bool,
                hidden: bool = False) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    kwargs: dict[str, Any] = {"dest": option.key, "default": default,
                              "help": argparse.SUPPRESS if hidden else _help(option)}
    if option.is_switch or option.parse is parse_bool:
        action = parser.add_argument(option.cli_flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    choices = choices_of(option)
    if choices:
        kwargs["choices"] = choices
    else:
        kwargs["metavar"] = _METAVARS.get(option.key, "FILE" if option.key in _FILE_KEYS else "VALUE")
    if option.repeatable:
        kwargs["action"] = "append"
    action = parser.add_argument(option.cli_flag, **kwargs)
    if option.key in _FILE_KEYS:
        action.complete = shtab.FILE  # type: ignore[attr-defined]  # read by shtab


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options taken before or after the subcommand; in a subcommand they only override."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("global options (before or after the command)")
    config = group.add_argument(
        "-c", "--config", dest="config", type=Path, metavar="FILE", default=default,
        help=f"TOML file with any option below [env {CONFIG_ENV}]")
    config.complete = shtab.FILE  # type: ignore[attr-defined]
    group.add_argument("-v", "--verbose", dest="verbose", action="count",
                       default=argparse.SUPPRESS if suppress else 0,
                       help="log more: -v is --log-level debug")
    group.add_argument("-q", "--quiet", dest="quiet", action="count",
                       default=argparse.SUPPRESS if suppress else 0,
                       help="log less: -q is --log-level warning, -qq error")
    for option in OPTIONS:
        if option.key in GLOBAL_KEYS:
            _add_option(group, option, suppress=suppress)  # type: ignore[arg-type]


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors become ConfigError: one wording and exit 2 for every bad option."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn; raising keeps that promise
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _command(
    commands: Any, name: str, help_text: str, description: str, epilog: str = EXIT_STATUSES
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, suppress=True)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="akua-crawler",
        description="Import every package version published in OCI registries into Akua, once.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="the crawler's version and its key dependencies'")
    _add_globals(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, description in (
        ("run", "crawl and import into Akua", "Crawl the registries and import what is new into Akua."),
        ("plan", "crawl and validate; print what would be imported, write nothing",
         "Crawl and validate like run, and print what run would do. Needs no token; writes nothing."),
    ):
        sub = _command(commands, name, help_text, description, SECRETS + EXIT_STATUSES)
        crawl = sub.add_argument_group(f"{name} options")
        for option in OPTIONS:
            if option.key in GLOBAL_KEYS:
                continue
            # plan accepts run's options (one command line for both) but lists only its own.
            hidden = name == "plan" and option.key in RUN_ONLY_KEYS
            _add_option(crawl, option, suppress=False, hidden=hidden)  # type: ignore[arg-type]
        if name == "run":
            crawl.add_argument("--password-stdin", dest="password_stdin", action="store_true",
                               help="read the registry password (with --username) from standard input")
        else:
            crawl.add_argument("-o", "--output", choices=("text", "json"), default="text",
                               help="text: aligned lines for people; json: one object per line")
    status = _command(commands, "status",
                      "the last runs and the current problems, from the state alone (offline)",
                      "Show the last runs and the current problems from the state alone (offline, "
                      "read-only, no lock).", STATUS_EXIT_STATUSES)
    status_options = status.add_argument_group("status options")
    state = status_options.add_argument(
        "--state", action="append", metavar="PATH",
        help="state store path; repeat to merge several shards' states (default: the config's)")
    state.complete = shtab.FILE  # type: ignore[attr-defined]
    status_options.add_argument("--outcome", action="append", metavar="OUTCOME",
                                help="only invalid, rejected, failed or ignored items (repeatable)")
    status_options.add_argument("--repository", metavar="NAME", help="only this repository")
    status_options.add_argument(
        "--since", metavar="WHEN",
        help="only items in their outcome since WHEN: an ISO date/time or an age (36h, 2d)")
    status_options.add_argument("-o", "--output", choices=("text", "json"), default="text")
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash, zsh, tcsh)",
        description="Print a completion script generated from this parser, e.g. "
                    "`akua-crawler completion bash > /etc/bash_completion.d/akua-crawler`.")
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS)
    return parser


@functools.cache
def shared_parser() -> argparse.ArgumentParser:
    """The CLI's parser, built once per process: parsing keeps no state in it."""
    return build_parser()


def completion_script(shell: str) -> str:
    return str(shtab.complete(build_parser(), shell=shell))


def log_level_of(args: argparse.Namespace) -> str | None:
    """``-v``/``-q`` as a log level; an explicit ``--log-level`` wins."""
    if getattr(args, "log_level", None) is not None:
        return str(args.log_level)
    verbose, quiet = getattr(args, "verbose", 0) or 0, getattr(args, "quiet", 0) or 0
    if verbose > quiet:
        return "debug"
    if quiet > verbose:
        return "warning" if quiet - verbose == 1 else "error"
    return None

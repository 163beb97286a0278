"""Settings, and where each one comes from.

Precedence, documented once: command line > environment > config file
(``--config FILE``, TOML) > defaults.  Every option has a flag, an
``AKUA_CRAWLER_*`` environment variable and a TOML key of the same name;
secrets have neither a flag nor a key: the Akua token comes from
``AKUA_API_TOKEN`` and the registry password from ``REGISTRY_PASSWORD``.

Everything is checked here, before the registry or Akua is contacted;
a bad value raises :class:`ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from crawler.api.route_check import check_api_transport, check_registry_transport
from crawler.contract import API_URL_DEFAULT
from crawler.errors import ConfigError
from crawler.ignore import IgnoreRule, parse_rules
from crawler.naming import RULES as NAME_RULES
from crawler.package_schema import SCHEMA_SOURCES as SCHEMA_SOURCES_DEFAULT
from crawler.schema import REMOTE_REFS_CHOICES, REMOTE_REFS_DEFAULT, SCHEMA_ANNOTATION_DEFAULT, RemoteRefs
from crawler.secret import Secret
from crawler.secret_sources import (
    CREDENTIALS_DIRECTORY_ENV,
    PASSWORD_CREDENTIAL,
    REGISTRY_PASSWORD_ENV,
    REGISTRY_PASSWORD_FILE_ENV,
    TOKEN_CREDENTIAL,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    api_token,
    masked_secret,
    read_secret_file,
    registry_password,
)
from crawler.setting_values import (
    CHOICES,
    parse_annotation,
    parse_api_url,
    parse_bool,
    parse_choice,
    parse_env_name,
    parse_name_overrides,
    parse_number,
    parse_path,
    parse_pattern,
    parse_pem_file,
    parse_registry,
    parse_repository,
    parse_schema_sources,
    parse_shard,
    parse_str,
    parse_str_list,
    parse_workspace,
)
from crawler.shards import JOB_INDEX_ENV, SHARD_COUNT_MAX, Shard, apply_shard
from crawler.source_settings import (
    REGISTRY_IN_FLIGHT_DEFAULT,
    SOURCE_KEYS,
    TIMEOUT_DEFAULT,
    SourceSettings,
    check_listed_names,
    source_of,
    sources_of_tables,
)
from crawler.tls import tls_context

#: Re-exported: other modules and tests import these from here.
__all__ = [
    "CONFIG_ENV", "CREDENTIALS_DIRECTORY_ENV", "ENV_PREFIX", "OPTIONS", "PASSWORD_CREDENTIAL",
    "REGISTRY_PASSWORD_ENV", "REGISTRY_PASSWORD_FILE_ENV", "SOURCE_KEYS", "TOKEN_CREDENTIAL",
    "TOKEN_ENV", "TOKEN_FILE_ENV", "WORKSPACE_ENV", "Option", "Secret", "Settings", "SourceSettings",
    "choices_of", "default_of", "default_state_path", "read_config_file", "read_secret_file",
    "resolve", "tls_context",
]

ENV_PREFIX: Final = "AKUA_CRAWLER_"
CONFIG_ENV: Final = "AKUA_CRAWLER_CONFIG"  # the config file, when -c/--config is not given
WORKSPACE_ENV: Final = "AKUA_WORKSPACE_ID"

CONCURRENCY_DEFAULT: Final = 16
RATE_DEFAULT: Final = 10.0
GRACE_PERIOD_DEFAULT: Final = 30.0
FAIL_ON_DEFAULT: Final = "new"
IGNORE_KEY: Final = "ignore"  # [[ignore]] tables, config file only


def default_state_path() -> Path:
    """``$STATE_DIRECTORY/state.db`` under systemd (``StateDirectory=``, first entry), else
    ``$XDG_STATE_HOME/akua-crawler/state.db``, i.e. ``~/.local/state/...``."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd) / "state.db"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "akua-crawler" / "state.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    # The registry keys here (registry, plain_http, insecure, username, password, ...) only
    # build the one source of the simple case (``source_list``) and name the registry in
    # ``run.started``; the pipeline reads ``SourceSettings``, never these.
    registry: str = ""  # the simple case; with [[source]] tables, see ``sources``
    plain_http: bool = False
    insecure: bool = False
    repositories: tuple[str, ...] = ()
    api_url: str = API_URL_DEFAULT
    token: Secret | None = field(default=None)
    workspace: str | None = None
    state: Path = field(default_factory=default_state_path)
    concurrency: int = CONCURRENCY_DEFAULT
    rate: float = RATE_DEFAULT
    registry_in_flight: int = REGISTRY_IN_FLIGHT_DEFAULT
    registry_rate: float | None = None
    schema_annotations: tuple[str, ...] = (SCHEMA_ANNOTATION_DEFAULT,)
    remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT
    schema_sources: tuple[str, ...] = SCHEMA_SOURCES_DEFAULT
    recheck_digests: bool = False
    retry_rejected: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    username: str | None = None
    password: Secret | None = None
    docker_config: bool = True
    allow_plain_http_api: bool = False
    allow_plain_http_credentials: bool = False
    grace_period: float = GRACE_PERIOD_DEFAULT
    registry_timeout: float = TIMEOUT_DEFAULT
    api_timeout: float = TIMEOUT_DEFAULT
    # -- issue 12: sources, filters, names, shards (each also a key of [[source]], see SOURCE_KEYS)
    repositories_file: Path | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    allow_tags: tuple[str, ...] = ()
    deny_tags: tuple[str, ...] = ()
    semver: str | None = None
    prereleases: bool = True
    name_rule: str = "path"
    name_prefix: str | None = None
    name_template: str | None = None
    name_overrides: tuple[tuple[str, str], ...] = ()
    password_env: str | None = None
    password_file: Path | None = None
    shard: Shard | None = None
    shard_count: int | None = None
    shard_rate: float | None = None
    ca_file: Path | None = None  # the Akua API's, and the default of every source
    client_cert: Path | None = None
    client_key: Path | None = None
    sources: tuple[SourceSettings, ...] = ()

    def source_list(self) -> tuple[SourceSettings, ...]:
        """The sources to crawl: the [[source]] tables, or the one the top-level keys describe."""
        if self.sources:
            return self.sources
        return (_simple_source(self),)

    def secrets(self) -> list[str]:
        """Every secret this run holds, for the log redactor."""
        found = [self.token, self.password, *(source.password for source in self.sources)]
        return [secret.reveal() for secret in found if secret is not None]
    fail_on: str = FAIL_ON_DEFAULT
    report: Path | None = None
    metrics_file: Path | None = None
    ignore: tuple[IgnoreRule, ...] = ()

    @property
    def burst(self) -> int:
        """Token-bucket capacity: a twentieth of a second of traffic, at least one request.

        Kept below what servers usually allow (a tenth of a second), so the client's
        bunching never spends the server's whole burst.
        """
        return max(1, int(self.rate / 20))


# -- option table -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its key (TOML and Settings field), flag and value parser."""

    key: str
    parse: Callable[[Any, str], Any]
    help: str
    flag: str | None = None  # defaults to --key-with-dashes
    repeatable: bool = False
    is_switch: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


def choices_of(option: Option) -> tuple[str, ...]:
    """The values an option takes, when it is a choice (for help and shell completion)."""
    return CHOICES.get(option.parse, ())


def default_of(key: str) -> Any:
    """The default of a setting, as Settings has it (None: unset)."""
    spec = Settings.__dataclass_fields__[key]
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return None if spec.default is MISSING else spec.default


#: Issue 12's options: filters, names, per-source credentials, repository lists, shards.
FLEET_OPTIONS: Final[tuple[Option, ...]] = (
    Option("repositories_file", parse_path,
           "file with one repository name a line (# comments), for registries without a catalog"),
    Option("include", parse_str_list(parse_pattern),
           "crawl only repositories matching this glob (repeatable)",
           flag="--include", repeatable=True),
    Option("exclude", parse_str_list(parse_pattern), "leave out repositories matching this glob (repeatable)",
           flag="--exclude", repeatable=True),
    Option("allow_tags", parse_str_list(parse_pattern),
           "take only tags fully matching this regex (repeatable)",
           flag="--allow-tag", repeatable=True),
    Option("deny_tags", parse_str_list(parse_pattern),
           "leave out tags fully matching this regex (repeatable)",
           flag="--deny-tag", repeatable=True),
    Option("semver", parse_pattern, "take only versions in this npm-style range, e.g. '>=1.0.0 <3'"),
    Option("prereleases", parse_bool, "take prerelease versions (default true)"),
    Option("name_rule", parse_choice(*NAME_RULES),
           "package name: path (default), last_segment, strip_prefix, template"),
    Option("name_prefix", parse_str, "prefix that name_rule strip_prefix removes"),
    Option("name_template", parse_str,
           "template for name_rule template: {path} {last} {parent} {registry} {source}"),
    Option("name_overrides", parse_name_overrides, "package name for one repository, REPO=NAME (repeatable)",
           flag="--name-override", repeatable=True),
    Option("password_env", parse_env_name, "environment variable holding the registry password"),
    Option("password_file", parse_path, "file holding the registry password"),
    Option("shard", parse_shard,
           f"take only shard INDEX/COUNT of the repositories (default {JOB_INDEX_ENV}/shard_count)"),
    Option("shard_count", parse_number(int, 1, SHARD_COUNT_MAX), f"shard count used with {JOB_INDEX_ENV}"),
    Option("shard_rate", parse_number(float, 0.01, 10_000),
           "this shard's Akua requests per second (default rate/COUNT)"),
    Option("ca_file", parse_pem_file, "CA bundle (PEM) trusted for the registry and the Akua API "
           "instead of the system's"),
    Option("client_cert", parse_pem_file, "client certificate (PEM) for a registry that requires one"),
    Option("client_key", parse_pem_file, "the client certificate's private key (PEM, unencrypted)"),
)


OPTIONS: Final[tuple[Option, ...]] = (
    Option("registry", parse_registry, "registry to crawl, HOST[:PORT]"),
    Option("plain_http", parse_bool, "talk to the registry over plain HTTP", is_switch=True),
    Option("insecure", parse_bool, "skip TLS verification for the registry", is_switch=True),
    Option("repositories", parse_str_list(parse_repository), "crawl only this repository (repeatable)",
           flag="--repository", repeatable=True),
    Option("api_url", parse_api_url, f"Akua API base URL (default {API_URL_DEFAULT})"),
    Option("workspace", parse_workspace, f"workspace id sent as akua-context (or {WORKSPACE_ENV})"),
    Option("state", parse_path, "state store path (default $STATE_DIRECTORY/state.db, "
           "else $XDG_STATE_HOME/akua-crawler/state.db)"),
    Option("concurrency", parse_number(int, 1, 256),
           f"repositories listed at once; sizes the read-ahead (default {CONCURRENCY_DEFAULT})"),
    Option("rate", parse_number(float, 0.01, 10_000),
           f"Akua API requests per second (default {RATE_DEFAULT:g})"),
    Option("registry_in_flight", parse_number(int, 1, 256),
           f"registry requests in flight at most (default {REGISTRY_IN_FLIGHT_DEFAULT})"),
    Option("registry_rate", parse_number(float, 0.01, 100_000),
           "registry requests per second at most (default: no limit besides in-flight)"),
    Option("schema_annotations", parse_str_list(parse_annotation),
           f"annotation holding the input schema, tried in order (default {SCHEMA_ANNOTATION_DEFAULT})",
           flag="--schema-annotation", repeatable=True),
    Option("remote_refs", parse_choice(*REMOTE_REFS_CHOICES),
           "schemas whose $refs need a fetch: refuse (invalid), or keep (sent unchanged)"),
    Option("schema_sources", parse_schema_sources,
           "where the input schema comes from, tried in order: annotation, package "
           "(default annotation then package)", flag="--schema-source", repeatable=True),
    Option("recheck_digests", parse_bool, "HEAD imported tags to report tags moved to a new digest",
           is_switch=True),
    Option("retry_rejected", parse_bool, "work on rejected items again, even when their digest is unchanged",
           is_switch=True),
    Option("log_format", parse_choice("auto", "json", "console"), "auto: console on a TTY, JSON otherwise"),
    Option("log_level", parse_choice("debug", "info", "warning", "error"), "default info"),
    Option("username", parse_str, f"registry user; the password comes from {REGISTRY_PASSWORD_ENV}"),
    Option("docker_config", parse_bool, "read registry credentials from the Docker config (default true)"),
    Option("allow_plain_http_api", parse_bool,
           "allow sending the token over plain HTTP to a non-loopback API host", is_switch=True),
    Option("allow_plain_http_credentials", parse_bool,
           "allow registry credentials over plain HTTP to a non-loopback host or through a proxy",
           is_switch=True),
    Option("grace_period", parse_number(float, 0, 3600),
           f"seconds in-flight calls get after SIGTERM (default {GRACE_PERIOD_DEFAULT:g})"),
    Option("registry_timeout", parse_number(float, 0.1, 600), "registry request timeout, seconds"),
    Option("api_timeout", parse_number(float, 0.1, 600), "Akua request timeout, seconds"),
    *FLEET_OPTIONS,
    Option("fail_on", parse_choice("new", "any", "never"),
           "exit 1 when a problem is new (default), on any problem, or never"),
    Option("report", parse_path, "write the run summary and every problem item as JSON to FILE"),
    Option("metrics_file", parse_path, "write Prometheus metrics to FILE (node_exporter textfile)"),
)
_BY_KEY: Final = {option.key: option for option in OPTIONS}
_SECRET_KEYS: Final = frozenset({"token", "password", "api_token", "registry_password"})


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    for key in data:
        if key in _SECRET_KEYS:
            raise ConfigError(
                f"config file {path}: key {key!r} is not allowed: secrets come from the "
                f"environment ({TOKEN_ENV}, {REGISTRY_PASSWORD_ENV})"
            )
        if key == "source":
            _check_source_tables(path, data[key])
        elif key not in _BY_KEY and key != IGNORE_KEY:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
    return data


def _check_source_tables(path: Path, tables: Any) -> None:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"config file {path}: 'source' must be [[source]] tables")
    for i, table in enumerate(tables):
        for key in table:
            if key in _SECRET_KEYS:
                raise ConfigError(
                    f"config file {path}: source[{i}]: key {key!r} is not allowed: a source names "
                    "its secret with password_env or password_file"
                )
            if key != "name" and key not in SOURCE_KEYS:
                raise ConfigError(f"config file {path}: source[{i}]: unknown key {key!r}")


def resolve(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
    need_token: bool,
    stdin_password: str | None = None,
    sends_token: bool = True,
) -> Settings:
    """Merge the four sources into checked Settings, or raise ConfigError.

    ``sends_token``: False for ``plan``, which sends nothing to Akua, so a plain-HTTP
    ``api_url`` to another host is no risk there."""
    from_file = read_config_file(config_file) if config_file else {}
    known_env = {option.env for option in OPTIONS} | {CONFIG_ENV}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known_env:
            key = name[len(ENV_PREFIX) :].lower()
            raise ConfigError(f"{name}: unknown setting (no option is called {key!r})")
    values: dict[str, Any] = {}
    explicit: set[str] = set()  # set by a flag or the environment: wins over every source's key
    for option in OPTIONS:
        if flags.get(option.key) is not None:
            values[option.key] = option.parse(flags[option.key], option.cli_flag)
            explicit.add(option.key)
        elif option.env in environ:
            values[option.key] = option.parse(environ[option.env], option.env)
            explicit.add(option.key)
        elif option.key in from_file:
            where = f"{config_file}: {option.key}"
            values[option.key] = _from_toml(option, from_file[option.key], where)
    if IGNORE_KEY in from_file:
        values["ignore"] = parse_rules(from_file[IGNORE_KEY], f"config file {config_file}: ignore")
    if "workspace" not in values and environ.get(WORKSPACE_ENV):
        values["workspace"] = parse_workspace(environ[WORKSPACE_ENV], WORKSPACE_ENV)
    tables = from_file.get("source", [])
    if "registry" not in values and not tables:
        raise ConfigError(f"registry: not set (use --registry, {ENV_PREFIX}REGISTRY or the config file)")
    token = api_token(environ)
    if token is not None:
        values["token"] = token
    elif need_token:
        raise ConfigError(
            f"{TOKEN_ENV}: not set; `run` needs an Akua API token ({TOKEN_ENV}, {TOKEN_FILE_ENV} "
            f"or ${CREDENTIALS_DIRECTORY_ENV}/{TOKEN_CREDENTIAL})"
        )
    apply_shard(values, environ, default_state=default_state_path, default_rate=RATE_DEFAULT)
    if stdin_password is not None and (tables or not values.get("username")):
        raise ConfigError("--password-stdin: needs --username, and a config without [[source]] tables "
                          "(a source names its password with password_env or password_file)")
    if tables:
        values["sources"] = sources_of_tables(
            tables, values, explicit, environ, config_file,
            lambda key, value, where: _from_toml(_BY_KEY[key], value, where),
        )
    else:
        if stdin_password is not None:
            values["password"] = masked_secret(stdin_password, "--password-stdin")
        elif values.get("username"):
            values["password"] = registry_password(values, environ, "", fallback=True)
        values["sources"] = (_simple_source(Settings(**values)),)
    settings = Settings(**values)
    if sends_token:
        check_api_transport(settings.api_url, settings.allow_plain_http_api, environ)
    for source in settings.source_list():
        if source.plain_http and source.username is not None:
            check_registry_transport(source.registry, source.username,
                                     source.allow_plain_http_credentials, environ,
                                     f"{config_file}: source {source.name!r}: " if tables else "")
    if settings.ca_file is not None:
        tls_context(settings.ca_file)
    check_listed_names(settings.source_list())
    return settings


# -- sources, filters, names, shards (issue 12) ----------------------------------


def _simple_source(settings: Settings) -> SourceSettings:
    """The one source of a config without [[source]] tables: the top-level keys."""
    keys = {key: getattr(settings, key) for key in SOURCE_KEYS}
    return source_of(settings.registry, {k: v for k, v in keys.items() if v is not None},
                     settings.password, "")


_FIELD_TYPES: Final = {f.name: str(f.type) for f in fields(Settings)}


def _check_toml_type(key: str, value: Any, where: str) -> None:
    """TOML has types: a string where a number or a switch belongs is a mistake, not a value.

    The expected type is read from the ``Settings`` field; the environment and the
    command line only have strings, so only the file is held to this (a list key given
    as a string: see :func:`_from_toml`).  Other keys (strings, tables) are checked by
    their own parsers.
    """
    declared = _FIELD_TYPES.get(key, "").replace(" | None", "")
    if declared == "bool":
        ok, expected = isinstance(value, bool), "bool (true or false)"
    elif declared == "int":
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "int"
    elif declared == "float":
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "float (a number)"
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def _from_toml(option: Option, value: Any, where: str) -> Any:
    """A value from the config file: its TOML type checked, then parsed.

    A list key given as a string is refused after its parser ran, so a value the parser
    refuses anyway keeps the parser's more precise message.
    """
    _check_toml_type(option.key, value, where)
    parsed = option.parse(value, where)
    if isinstance(value, str) and _FIELD_TYPES.get(option.key) == "tuple[str, ...]":
        # Only the environment spells a list as a comma-separated string; TOML has arrays.
        raise ConfigError(f"{where}: expected a list of strings (a TOML array), got str {value!r}")
    return parsed



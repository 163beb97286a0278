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

import contextlib
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from crawler.api.proxy import env_proxy
from crawler.contract import API_URL_DEFAULT, WORKSPACE_MAX
from crawler.errors import ConfigError
from crawler.filters import NO_REPOSITORY_FILTER, NO_TAG_FILTER, RepositoryFilter, TagFilter
from crawler.ignore import IgnoreRule, parse_rules
from crawler.naming import RULES as NAME_RULES
from crawler.naming import NameRule, assign_names
from crawler.package_schema import SCHEMA_SOURCES as SCHEMA_SOURCES_DEFAULT
from crawler.schema import REMOTE_REFS_CHOICES, REMOTE_REFS_DEFAULT, SCHEMA_ANNOTATION_DEFAULT, RemoteRefs
from crawler.secret import Secret
from crawler.shards import JOB_INDEX_ENV, SHARD_COUNT_MAX, Shard

ENV_PREFIX: Final = "AKUA_CRAWLER_"
CONFIG_ENV: Final = "AKUA_CRAWLER_CONFIG"  # the config file, when -c/--config is not given
TOKEN_ENV: Final = "AKUA_API_TOKEN"
WORKSPACE_ENV: Final = "AKUA_WORKSPACE_ID"
REGISTRY_PASSWORD_ENV: Final = "REGISTRY_PASSWORD"
REGISTRY_PASSWORD_FILE_ENV: Final = "REGISTRY_PASSWORD_FILE"
TOKEN_FILE_ENV: Final = "AKUA_API_TOKEN_FILE"
CREDENTIALS_DIRECTORY_ENV: Final = "CREDENTIALS_DIRECTORY"  # systemd's LoadCredential=
TOKEN_CREDENTIAL: Final = "akua-api-token"
PASSWORD_CREDENTIAL: Final = "registry-password"

CONCURRENCY_DEFAULT: Final = 16
RATE_DEFAULT: Final = 10.0
REGISTRY_IN_FLIGHT_DEFAULT: Final = 16
GRACE_PERIOD_DEFAULT: Final = 30.0
TIMEOUT_DEFAULT: Final = 30.0
FAIL_ON_DEFAULT: Final = "new"
IGNORE_KEY: Final = "ignore"  # [[ignore]] tables, config file only

_HOST_PORT = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
#: What may travel in an HTTP header value or a URL unencoded: visible ASCII, no space.
_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+\Z")


def default_state_path() -> Path:
    """``$STATE_DIRECTORY/state.db`` under systemd (``StateDirectory=``, first entry), else
    ``$XDG_STATE_HOME/akua-crawler/state.db``, i.e. ``~/.local/state/...``."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd) / "state.db"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "akua-crawler" / "state.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    """One registry to crawl, with its own credentials, filters, name rule and limits."""

    name: str
    registry: str
    plain_http: bool = False
    insecure: bool = False
    username: str | None = None
    password: Secret | None = None
    docker_config: bool = True
    repositories: tuple[str, ...] = ()  # --repository and repositories_file; empty: the catalog
    repository_filter: RepositoryFilter = NO_REPOSITORY_FILTER
    tag_filter: TagFilter = NO_TAG_FILTER
    names: NameRule = field(default_factory=NameRule)
    registry_in_flight: int = 16
    registry_rate: float | None = None
    registry_timeout: float = 30.0
    ca_file: Path | None = None  # trust this CA bundle instead of the system's (TLS)
    client_cert: Path | None = None  # a client certificate for registries that require one
    client_key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
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


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any, str], Any]:
    def parse(value: Any, where: str) -> int | float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if not low <= number <= high:
            raise ConfigError(f"{where}: {number} is out of range [{low:g}, {high:g}]")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = _str(value, where).lower()
        if text not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return text

    _CHOICES[parse] = choices
    return parse


_CHOICES: dict[Callable[[Any, str], Any], tuple[str, ...]] = {}


def choices_of(option: Option) -> tuple[str, ...]:
    """The values an option takes, when it is a choice (for help and shell completion)."""
    return _CHOICES.get(option.parse, ())


def default_of(key: str) -> Any:
    """The default of a setting, as Settings has it (None: unset)."""
    spec = Settings.__dataclass_fields__[key]
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return None if spec.default is MISSING else spec.default


def _str_list(item: Callable[[Any, str], str]) -> Callable[[Any, str], tuple[str, ...]]:
    def parse(value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):  # environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list of strings, got {type(value).__name__}")
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))

    return parse


def _registry(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if "://" in text:
        raise ConfigError(
            f"{where}: {text!r} must be HOST[:PORT] without a scheme "
            "(use --plain-http for a registry served without TLS)"
        )
    match = _HOST_PORT.match(text)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise ConfigError(f"{where}: {text!r} is not HOST[:PORT]")
    return text


def _repository(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not _REPOSITORY.match(text) or len(text) > 255:
        raise ConfigError(f"{where}: {text!r} is not a valid OCI repository name")
    return text


def _api_url(value: Any, where: str) -> str:
    text = _str(value, where).strip().rstrip("/")
    if not _VISIBLE_ASCII.match(text):
        raise ConfigError(f"{where}: {text!r} must be printable ASCII without spaces")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {text!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError:
        raise ConfigError(f"{where}: {text!r} has a port that is not a number in 1..65535") from None
    if parts.port == 0 or (parts.netloc.endswith(":") and parts.port is None):
        raise ConfigError(f"{where}: {text!r} has a port that is not a number in 1..65535")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{where}: the API URL must not carry credentials, a query or a fragment")
    return text


def _workspace(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not 1 <= len(text) <= WORKSPACE_MAX:
        raise ConfigError(f"{where}: must be 1 to {WORKSPACE_MAX} characters")
    if not _VISIBLE_ASCII.match(text):
        # It travels as the akua-context header: a newline would split the request.
        raise ConfigError(
            f"{where}: {text!r} must be printable ASCII without spaces or control characters "
            "(it is sent as the akua-context header)"
        )
    return text


def _annotation(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not text:
        raise ConfigError(f"{where}: an annotation key cannot be empty")
    return text


def _schema_sources(value: Any, where: str) -> tuple[str, ...]:
    sources = _str_list(_choice(*SCHEMA_SOURCES_DEFAULT))(value, where)
    if not sources:
        raise ConfigError(f"{where}: give at least one of {', '.join(SCHEMA_SOURCES_DEFAULT)}")
    if len(set(sources)) != len(sources):
        raise ConfigError(f"{where}: {', '.join(sources)} names a source twice")
    return sources


def _path(value: Any, where: str) -> Path:
    return Path(_str(value, where)).expanduser()


def _pattern(value: Any, where: str) -> str:
    text = _str(value, where)
    if not text:
        raise ConfigError(f"{where}: a pattern cannot be empty")
    return text


def _name_overrides(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A TOML table ``{repository = name}``, or ``REPO=NAME`` strings (flags, comma-separated env)."""
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for i, item in enumerate(_str_list(_str)(value, where)):
            repository, sep, name = item.partition("=")
            if not sep:
                raise ConfigError(f"{where}[{i}]: {item!r} is not REPOSITORY=NAME")
            pairs.append((repository.strip(), name.strip()))
    return tuple(
        (_repository(repository, f"{where}: {repository!r}"), _str(name, f"{where}.{repository}"))
        for repository, name in pairs
    )


def _env_name(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ConfigError(f"{where}: {text!r} is not an environment variable name")
    return text


def _pem_file(value: Any, where: str) -> Path:
    path = _path(value, where)
    if not path.is_file():
        raise ConfigError(f"{where}: {path} is not a readable file")
    return path


def tls_context(ca_file: Path | None, client_cert: Path | None = None,
                client_key: Path | None = None, where: str = "ca_file") -> ssl.SSLContext:
    """The verifying TLS context these files describe (system CAs without ``ca_file``)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}: {ca_file} holds no usable CA certificate: {exc}") from None
    if client_cert is not None:
        try:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{where.rsplit('ca_file', 1)[0]}client_cert: {client_cert} with key {client_key}: "
                f"not a usable certificate and key: {exc}"
            ) from None
    return context


def _shard(value: Any, where: str) -> Shard:
    return Shard.parse(_str(value, where), where)


#: Issue 12's options: filters, names, per-source credentials, repository lists, shards.
FLEET_OPTIONS: Final[tuple[Option, ...]] = (
    Option("repositories_file", _path,
           "file with one repository name a line (# comments), for registries without a catalog"),
    Option("include", _str_list(_pattern), "crawl only repositories matching this glob (repeatable)",
           flag="--include", repeatable=True),
    Option("exclude", _str_list(_pattern), "leave out repositories matching this glob (repeatable)",
           flag="--exclude", repeatable=True),
    Option("allow_tags", _str_list(_pattern), "take only tags fully matching this regex (repeatable)",
           flag="--allow-tag", repeatable=True),
    Option("deny_tags", _str_list(_pattern), "leave out tags fully matching this regex (repeatable)",
           flag="--deny-tag", repeatable=True),
    Option("semver", _pattern, "take only versions in this npm-style range, e.g. '>=1.0.0 <3'"),
    Option("prereleases", _bool, "take prerelease versions (default true)"),
    Option("name_rule", _choice(*NAME_RULES),
           "package name: path (default), last_segment, strip_prefix, template"),
    Option("name_prefix", _str, "prefix that name_rule strip_prefix removes"),
    Option("name_template", _str,
           "template for name_rule template: {path} {last} {parent} {registry} {source}"),
    Option("name_overrides", _name_overrides, "package name for one repository, REPO=NAME (repeatable)",
           flag="--name-override", repeatable=True),
    Option("password_env", _env_name, "environment variable holding the registry password"),
    Option("password_file", _path, "file holding the registry password"),
    Option("shard", _shard,
           f"take only shard INDEX/COUNT of the repositories (default {JOB_INDEX_ENV}/shard_count)"),
    Option("shard_count", _number(int, 1, SHARD_COUNT_MAX), f"shard count used with {JOB_INDEX_ENV}"),
    Option("shard_rate", _number(float, 0.01, 10_000),
           "this shard's Akua requests per second (default rate/COUNT)"),
    Option("ca_file", _pem_file, "CA bundle (PEM) trusted for the registry and the Akua API "
           "instead of the system's"),
    Option("client_cert", _pem_file, "client certificate (PEM) for a registry that requires one"),
    Option("client_key", _pem_file, "the client certificate's private key (PEM, unencrypted)"),
)

#: Keys a [[source]] table may hold (besides ``name``); the top-level value is their default.
SOURCE_KEYS: Final = frozenset({
    "registry", "plain_http", "insecure", "username", "password_env", "password_file", "docker_config",
    "repositories", "repositories_file", "include", "exclude", "allow_tags", "deny_tags", "semver",
    "prereleases", "name_rule", "name_prefix", "name_template", "name_overrides",
    "registry_in_flight", "registry_rate", "registry_timeout", "ca_file", "client_cert", "client_key",
})
#: Per-registry keys a source never inherits: with [[source]] tables they go in each table.
_SOURCE_ONLY: Final = frozenset({
    "registry", "username", "password_env", "password_file", "repositories", "repositories_file",
    "name_overrides",
})


OPTIONS: Final[tuple[Option, ...]] = (
    Option("registry", _registry, "registry to crawl, HOST[:PORT]"),
    Option("plain_http", _bool, "talk to the registry over plain HTTP", is_switch=True),
    Option("insecure", _bool, "skip TLS verification for the registry", is_switch=True),
    Option("repositories", _str_list(_repository), "crawl only this repository (repeatable)",
           flag="--repository", repeatable=True),
    Option("api_url", _api_url, f"Akua API base URL (default {API_URL_DEFAULT})"),
    Option("workspace", _workspace, f"workspace id sent as akua-context (or {WORKSPACE_ENV})"),
    Option("state", _path, "state store path (default $STATE_DIRECTORY/state.db, "
           "else $XDG_STATE_HOME/akua-crawler/state.db)"),
    Option("concurrency", _number(int, 1, 256), f"items worked on at once (default {CONCURRENCY_DEFAULT})"),
    Option("rate", _number(float, 0.01, 10_000), f"Akua API requests per second (default {RATE_DEFAULT:g})"),
    Option("registry_in_flight", _number(int, 1, 256),
           f"registry requests in flight at most (default {REGISTRY_IN_FLIGHT_DEFAULT})"),
    Option("registry_rate", _number(float, 0.01, 100_000),
           "registry requests per second at most (default: no limit besides in-flight)"),
    Option("schema_annotations", _str_list(_annotation),
           f"annotation holding the input schema, tried in order (default {SCHEMA_ANNOTATION_DEFAULT})",
           flag="--schema-annotation", repeatable=True),
    Option("remote_refs", _choice(*REMOTE_REFS_CHOICES),
           "schemas whose $refs need a fetch: refuse (invalid), or keep (sent unchanged; default refuse)"),
    Option("schema_sources", _schema_sources,
           "where the input schema comes from, tried in order: annotation, package "
           "(default annotation then package)", flag="--schema-source", repeatable=True),
    Option("recheck_digests", _bool, "HEAD imported tags to report tags moved to a new digest",
           is_switch=True),
    Option("retry_rejected", _bool, "work on rejected items again, even when their digest is unchanged",
           is_switch=True),
    Option("log_format", _choice("auto", "json", "console"), "auto: console on a TTY, JSON otherwise"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "default info"),
    Option("username", _str, f"registry user; the password comes from {REGISTRY_PASSWORD_ENV}"),
    Option("docker_config", _bool, "read registry credentials from the Docker config (default true)"),
    Option("allow_plain_http_api", _bool,
           "allow sending the token over plain HTTP to a non-loopback API host", is_switch=True),
    Option("grace_period", _number(float, 0, 3600),
           f"seconds in-flight calls get after SIGTERM (default {GRACE_PERIOD_DEFAULT:g})"),
    Option("registry_timeout", _number(float, 0.1, 600), "registry request timeout, seconds"),
    Option("api_timeout", _number(float, 0.1, 600), "Akua request timeout, seconds"),
    *FLEET_OPTIONS,
    Option("fail_on", _choice("new", "any", "never"),
           "exit 1 when a problem is new (default), on any problem, or never"),
    Option("report", _path, "write the run summary and every problem item as JSON to FILE"),
    Option("metrics_file", _path, "write Prometheus metrics to FILE (node_exporter textfile)"),
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
) -> Settings:
    """Merge the four sources into checked Settings, or raise ConfigError."""
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
        values["workspace"] = _workspace(environ[WORKSPACE_ENV], WORKSPACE_ENV)
    tables = from_file.get("source", [])
    if "registry" not in values and not tables:
        raise ConfigError(f"registry: not set (use --registry, {ENV_PREFIX}REGISTRY or the config file)")
    token = _token(environ)
    if token is not None:
        values["token"] = token
    elif need_token:
        raise ConfigError(
            f"{TOKEN_ENV}: not set; `run` needs an Akua API token ({TOKEN_ENV}, {TOKEN_FILE_ENV} "
            f"or ${CREDENTIALS_DIRECTORY_ENV}/{TOKEN_CREDENTIAL})"
        )
    _apply_shard(values, environ)
    if stdin_password is not None and (tables or not values.get("username")):
        raise ConfigError("--password-stdin: needs --username, and a config without [[source]] tables "
                          "(a source names its password with password_env or password_file)")
    if tables:
        values["sources"] = _sources(tables, values, explicit, environ, config_file)
    else:
        if stdin_password is not None:
            values["password"] = Secret(stdin_password)
        elif values.get("username"):
            values["password"] = _password(values, environ, "", fallback=True)
        values["sources"] = (_simple_source(Settings(**values)),)
    settings = Settings(**values)
    _check_api_transport(settings, environ)
    if settings.ca_file is not None:
        tls_context(settings.ca_file)
    _check_listed_names(settings.source_list())
    return settings


# -- sources, filters, names, shards (issue 12) ----------------------------------


def _secret_from(environ: Mapping[str, str], env: str, file_env: str, credential: str) -> Secret | None:
    """A secret from ``file_env`` (a file), ``env`` (the variable), or systemd's credential
    ``$CREDENTIALS_DIRECTORY/<credential>``; naming both a file and a value is refused."""
    value = environ.get(env, "").strip()
    file = environ.get(file_env, "").strip()
    if value and file:
        raise ConfigError(f"{env} and {file_env} are both set; keep one")
    if file:
        return Secret(read_secret_file(Path(file), file_env))
    if value:
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ConfigError(f"{env}: contains whitespace or control characters")
        return Secret(value)
    directory = environ.get(CREDENTIALS_DIRECTORY_ENV, "").strip()
    if directory and (Path(directory) / credential).is_file():
        where = f"${CREDENTIALS_DIRECTORY_ENV}/{credential}"
        return Secret(read_secret_file(Path(directory) / credential, where))
    return None


def _token(environ: Mapping[str, str]) -> Secret | None:
    token = _secret_from(environ, TOKEN_ENV, TOKEN_FILE_ENV, TOKEN_CREDENTIAL)
    if token is not None and not _VISIBLE_ASCII.match(token.reveal()):
        raise ConfigError(
            f"{TOKEN_ENV}: must be printable ASCII without whitespace or control characters "
            "(it is sent in the Authorization header)"
        )
    return token


def _password(values: Mapping[str, Any], environ: Mapping[str, str], where: str, *,
              fallback: bool) -> Secret:
    """The registry password a source names: password_file, else password_env; in the simple
    case (``fallback``) then REGISTRY_PASSWORD_FILE, REGISTRY_PASSWORD or the systemd credential."""
    file: Path | None = values.get("password_file")
    file_where = f"{where}password_file"
    env: str | None = values.get("password_env")
    if file is None and env is None and fallback:
        found = _secret_from(environ, REGISTRY_PASSWORD_ENV, REGISTRY_PASSWORD_FILE_ENV,
                             PASSWORD_CREDENTIAL)
        if found is None:
            raise ConfigError(f"username is set but {REGISTRY_PASSWORD_ENV} is empty (or set "
                              f"{REGISTRY_PASSWORD_FILE_ENV}, or password_file/password_env)")
        return found
    if file is not None:
        return Secret(read_secret_file(file, file_where))
    if env is None:
        raise ConfigError(f"{where}username is set but neither password_env nor password_file")
    value = environ.get(env, "")
    if not value:
        raise ConfigError(f"{where}username is set but {env} is empty")
    return Secret(value)


def read_secret_file(path: Path, where: str) -> str:
    """A secret kept in a file (Kubernetes Secret volume, systemd credential): one line, no newline."""
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(f"{where}: {path} holds whitespace or control characters besides a final newline")
    return text


def _read_repositories_file(path: Path, where: str) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    names = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            names.append(_repository(text, f"{where} {path}:{number}"))
    return tuple(names)


def _source_of(name: str, v: Mapping[str, Any], password: Secret | None, where: str) -> SourceSettings:
    """A checked source from its resolved keys ``v``; ``where`` prefixes every error."""
    if (v.get("client_cert") is None) != (v.get("client_key") is None):
        raise ConfigError(f"{where}client_cert and client_key: give both, or neither")
    if v.get("ca_file") is not None or v.get("client_cert") is not None:
        tls_context(v.get("ca_file"), v.get("client_cert"), v.get("client_key"), f"{where}ca_file")
    repositories = list(v.get("repositories", ()))
    if v.get("repositories_file") is not None:
        repositories += _read_repositories_file(v["repositories_file"], f"{where}repositories_file")
    return SourceSettings(
        name=name,
        registry=v["registry"],
        plain_http=v.get("plain_http", False),
        insecure=v.get("insecure", False),
        username=v.get("username"),
        password=password,
        docker_config=v.get("docker_config", True),
        repositories=tuple(dict.fromkeys(repositories)),
        repository_filter=RepositoryFilter.parse(v.get("include", ()), v.get("exclude", ()), where),
        tag_filter=TagFilter.parse(allow=v.get("allow_tags", ()), deny=v.get("deny_tags", ()),
                                   semver=v.get("semver"), prereleases=v.get("prereleases", True),
                                   where=where),
        names=NameRule.parse(rule=v.get("name_rule", "path"), prefix=v.get("name_prefix"),
                             template=v.get("name_template"),
                             overrides=dict(v.get("name_overrides", ())),
                             registry=v["registry"], source=name, where=where),
        registry_in_flight=v.get("registry_in_flight", REGISTRY_IN_FLIGHT_DEFAULT),
        registry_rate=v.get("registry_rate"),
        registry_timeout=v.get("registry_timeout", TIMEOUT_DEFAULT),
        ca_file=v.get("ca_file"),
        client_cert=v.get("client_cert"),
        client_key=v.get("client_key"),
    )


def _check_listed_names(sources: tuple[SourceSettings, ...]) -> None:
    """Names of explicitly listed repositories are known now: refuse a collision or an over-long
    name before anything is contacted (catalog repositories are checked once listed)."""
    book = assign_names(
        (source.name, repository, source.names)
        for source in sources
        for repository in source.repositories
        if source.repository_filter.rejects(repository) is None
    )
    if book.problems:
        (source, _repository), problem = next(iter(book.problems.items()))
        prefix = f"source {source!r}: " if len(sources) > 1 else ""
        raise ConfigError(f"{prefix}package names: {problem}")


def _simple_source(settings: Settings) -> SourceSettings:
    """The one source of a config without [[source]] tables: the top-level keys."""
    keys = {key: getattr(settings, key) for key in SOURCE_KEYS}
    return _source_of(settings.registry, {k: v for k, v in keys.items() if v is not None},
                      settings.password, "")


def _sources(
    tables: list[dict[str, Any]],
    values: Mapping[str, Any],
    explicit: set[str],
    environ: Mapping[str, str],
    config_file: Path | None,
) -> tuple[SourceSettings, ...]:
    shard: Shard | None = values.get("shard")
    stray = sorted(key for key in _SOURCE_ONLY if key in values)
    if stray:
        raise ConfigError(
            f"{stray[0]}: set per [[source]] when the config has [[source]] tables "
            "(a registry, its credentials and repository list belong to one source)"
        )
    sources: list[SourceSettings] = []
    names: set[str] = set()
    for i, table in enumerate(tables):
        label = f"{config_file}: source[{i}]"
        if "registry" not in table:
            raise ConfigError(f"{label}: registry: not set")
        registry = _registry(table["registry"], f"{label}.registry")
        name = _str(table.get("name", registry), f"{label}.name").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}", name):
            raise ConfigError(f"{label}.name: {name!r} must be 1 to 63 letters, digits, '.', '_', ':', '-'")
        if name in names:
            raise ConfigError(f"{label}.name: two sources are named {name!r}; give each a name")
        names.add(name)
        where = f"{config_file}: source {name!r}: "
        resolved: dict[str, Any] = {}
        for key in SOURCE_KEYS:
            option = _BY_KEY[key]
            if key in explicit:
                resolved[key] = values[key]
            elif key in table:
                resolved[key] = _from_toml(option, table[key], f"{where}{key}")
            elif key in values:
                resolved[key] = values[key]
        resolved["registry"] = registry
        if shard is not None and "registry_rate" in table and "registry_rate" not in explicit:
            resolved["registry_rate"] /= shard.count  # the inherited value is divided already
        password = None
        if resolved.get("username"):
            password = _password(resolved, environ, where, fallback=False)
        sources.append(_source_of(name, resolved, password, where))
    return tuple(sources)


def _apply_shard(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """--shard (or JOB_COMPLETION_INDEX with shard_count): its own state file, its share of the rate."""
    shard: Shard | None = values.get("shard")
    count = values.get("shard_count")
    if shard is None and count is not None and environ.get(JOB_INDEX_ENV, "").strip():
        raw = environ[JOB_INDEX_ENV].strip()
        if not raw.isdigit():
            raise ConfigError(f"{JOB_INDEX_ENV}: {raw!r} is not a shard index")
        shard = Shard.of(int(raw), count, JOB_INDEX_ENV)
    if shard is not None and count is not None and shard.count != count:
        raise ConfigError(f"shard: {shard.label} disagrees with shard_count = {count}")
    if shard is None or shard.count == 1:
        values.pop("shard", None)
        return
    values["shard"] = shard
    values["state"] = shard.state_path(values.get("state") or default_state_path())
    values["rate"] = values.get("shard_rate") or values.get("rate", RATE_DEFAULT) / shard.count
    if values.get("registry_rate") is not None:
        values["registry_rate"] = values["registry_rate"] / shard.count


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


def _check_api_transport(settings: Settings, environ: Mapping[str, str]) -> None:
    """The token never crosses plain HTTP to anything but loopback reached directly, unless allowed."""
    parts = urlsplit(settings.api_url)
    if parts.scheme == "https" or settings.allow_plain_http_api:
        return
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise ConfigError(
            f"api_url: {settings.api_url} is plain HTTP to a non-loopback host; the token would "
            "cross the network in clear (set allow_plain_http_api to accept that)"
        )
    proxy = env_proxy(settings.api_url, environ)
    if proxy is not None:
        raise ConfigError(
            f"api_url: {settings.api_url} is plain HTTP and {proxy[0]} would carry it through a "
            "proxy, so the token would leave this machine in clear; add the host to NO_PROXY "
            "(or set allow_plain_http_api to accept that)"
        )

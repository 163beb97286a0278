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

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from crawler.contract import API_URL_DEFAULT, WORKSPACE_MAX
from crawler.errors import ConfigError
from crawler.schema import SCHEMA_ANNOTATION_DEFAULT

ENV_PREFIX: Final = "AKUA_CRAWLER_"
TOKEN_ENV: Final = "AKUA_API_TOKEN"
WORKSPACE_ENV: Final = "AKUA_WORKSPACE_ID"
REGISTRY_PASSWORD_ENV: Final = "REGISTRY_PASSWORD"

CONCURRENCY_DEFAULT: Final = 16
RATE_DEFAULT: Final = 10.0
REGISTRY_IN_FLIGHT_DEFAULT: Final = 16
GRACE_PERIOD_DEFAULT: Final = 30.0
TIMEOUT_DEFAULT: Final = 30.0

_HOST_PORT = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/akua-crawler/state.db``, i.e. ``~/.local/state/...`` by default."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "akua-crawler" / "state.db"


class Secret:
    """A string that never shows itself in a repr, a log or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    registry: str
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
    recheck_digests: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    username: str | None = None
    password: Secret | None = None
    docker_config: bool = True
    allow_plain_http_api: bool = False
    grace_period: float = GRACE_PERIOD_DEFAULT
    registry_timeout: float = TIMEOUT_DEFAULT
    api_timeout: float = TIMEOUT_DEFAULT

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

    return parse


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
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {text!r} is not an http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{where}: the API URL must not carry credentials, a query or a fragment")
    return text


def _workspace(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not 1 <= len(text) <= WORKSPACE_MAX:
        raise ConfigError(f"{where}: must be 1 to {WORKSPACE_MAX} characters")
    return text


def _annotation(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    if not text:
        raise ConfigError(f"{where}: an annotation key cannot be empty")
    return text


def _path(value: Any, where: str) -> Path:
    return Path(_str(value, where)).expanduser()


OPTIONS: Final[tuple[Option, ...]] = (
    Option("registry", _registry, "registry to crawl, HOST[:PORT]"),
    Option("plain_http", _bool, "talk to the registry over plain HTTP", is_switch=True),
    Option("insecure", _bool, "skip TLS verification for the registry", is_switch=True),
    Option("repositories", _str_list(_repository), "crawl only this repository (repeatable)",
           flag="--repository", repeatable=True),
    Option("api_url", _api_url, f"Akua API base URL (default {API_URL_DEFAULT})"),
    Option("workspace", _workspace, f"workspace id sent as akua-context (or {WORKSPACE_ENV})"),
    Option("state", _path, "state store path (default $XDG_STATE_HOME/akua-crawler/state.db)"),
    Option("concurrency", _number(int, 1, 256), f"items worked on at once (default {CONCURRENCY_DEFAULT})"),
    Option("rate", _number(float, 0.01, 10_000), f"Akua API requests per second (default {RATE_DEFAULT:g})"),
    Option("registry_in_flight", _number(int, 1, 256),
           f"registry requests in flight at most (default {REGISTRY_IN_FLIGHT_DEFAULT})"),
    Option("registry_rate", _number(float, 0.01, 100_000),
           "registry requests per second at most (default: no limit besides in-flight)"),
    Option("schema_annotations", _str_list(_annotation),
           f"annotation holding the input schema, tried in order (default {SCHEMA_ANNOTATION_DEFAULT})",
           flag="--schema-annotation", repeatable=True),
    Option("recheck_digests", _bool, "HEAD imported tags to report tags moved to a new digest",
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
        if key not in _BY_KEY:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
    return data


def resolve(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
    need_token: bool,
) -> Settings:
    """Merge the four sources into checked Settings, or raise ConfigError."""
    from_file = read_config_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if flags.get(option.key) is not None:
            values[option.key] = option.parse(flags[option.key], option.cli_flag)
        elif option.env in environ:
            values[option.key] = option.parse(environ[option.env], option.env)
        elif option.key in from_file:
            values[option.key] = option.parse(from_file[option.key], f"{config_file}: {option.key}")
    if "workspace" not in values and environ.get(WORKSPACE_ENV):
        values["workspace"] = _workspace(environ[WORKSPACE_ENV], WORKSPACE_ENV)
    if "registry" not in values:
        raise ConfigError(f"registry: not set (use --registry, {ENV_PREFIX}REGISTRY or the config file)")
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        if any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ConfigError(f"{TOKEN_ENV}: contains whitespace or control characters")
        values["token"] = Secret(token)
    elif need_token:
        raise ConfigError(f"{TOKEN_ENV}: not set; `run` needs an Akua API token")
    password = environ.get(REGISTRY_PASSWORD_ENV)
    if values.get("username"):
        if not password:
            raise ConfigError(f"username is set but {REGISTRY_PASSWORD_ENV} is empty")
        values["password"] = Secret(password)
    settings = Settings(**values)
    _check_api_transport(settings)
    return settings


def _check_api_transport(settings: Settings) -> None:
    """The token never crosses plain HTTP to anything but loopback unless allowed."""
    parts = urlsplit(settings.api_url)
    if parts.scheme == "https" or settings.allow_plain_http_api:
        return
    host = parts.hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"api_url: {settings.api_url} is plain HTTP to a non-loopback host; the token would "
        "cross the network in clear (set allow_plain_http_api to accept that)"
    )

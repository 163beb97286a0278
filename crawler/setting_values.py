"""The value parsers of the option table: text or TOML in, a checked value or ConfigError out.

Each parser takes the raw value and ``where`` (the flag, variable or file key it came
from) and names ``where`` in every refusal.  The table itself is in ``config.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crawler.contract import WORKSPACE_MAX
from crawler.errors import ConfigError
from crawler.package_schema import SCHEMA_SOURCES as SCHEMA_SOURCES_DEFAULT
from crawler.shards import Shard

_HOST_PORT = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"


_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")


VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+\Z")


def parse_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def parse_number(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any, str], Any]:
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


def parse_choice(*choices: str) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = parse_str(value, where).lower()
        if text not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return text

    CHOICES[parse] = choices
    return parse


CHOICES: dict[Callable[[Any, str], Any], tuple[str, ...]] = {}


def parse_str_list(item: Callable[[Any, str], str]) -> Callable[[Any, str], tuple[str, ...]]:
    def parse(value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):  # environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list of strings, got {type(value).__name__}")
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))

    return parse


def parse_registry(value: Any, where: str) -> str:
    text = parse_str(value, where).strip()
    if "://" in text:
        raise ConfigError(
            f"{where}: {text!r} must be HOST[:PORT] without a scheme "
            "(use --plain-http for a registry served without TLS)"
        )
    match = _HOST_PORT.match(text)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise ConfigError(f"{where}: {text!r} is not HOST[:PORT]")
    return text


def parse_repository(value: Any, where: str) -> str:
    text = parse_str(value, where).strip()
    if not _REPOSITORY.match(text) or len(text) > 255:
        raise ConfigError(f"{where}: {text!r} is not a valid OCI repository name")
    return text


def parse_api_url(value: Any, where: str) -> str:
    text = parse_str(value, where).strip().rstrip("/")
    if not VISIBLE_ASCII.match(text):
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


def parse_workspace(value: Any, where: str) -> str:
    text = parse_str(value, where).strip()
    if not 1 <= len(text) <= WORKSPACE_MAX:
        raise ConfigError(f"{where}: must be 1 to {WORKSPACE_MAX} characters")
    if not VISIBLE_ASCII.match(text):
        # It travels as the akua-context header: a newline would split the request.
        raise ConfigError(
            f"{where}: {text!r} must be printable ASCII without spaces or control characters "
            "(it is sent as the akua-context header)"
        )
    return text


def parse_annotation(value: Any, where: str) -> str:
    text = parse_str(value, where).strip()
    if not text:
        raise ConfigError(f"{where}: an annotation key cannot be empty")
    return text


def parse_schema_sources(value: Any, where: str) -> tuple[str, ...]:
    sources = parse_str_list(parse_choice(*SCHEMA_SOURCES_DEFAULT))(value, where)
    if not sources:
        raise ConfigError(f"{where}: give at least one of {', '.join(SCHEMA_SOURCES_DEFAULT)}")
    if len(set(sources)) != len(sources):
        raise ConfigError(f"{where}: {', '.join(sources)} names a source twice")
    return sources


def parse_path(value: Any, where: str) -> Path:
    return Path(parse_str(value, where)).expanduser()


def parse_pattern(value: Any, where: str) -> str:
    text = parse_str(value, where)
    if not text:
        raise ConfigError(f"{where}: a pattern cannot be empty")
    return text


def parse_name_overrides(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A TOML table ``{repository = name}``, or ``REPO=NAME`` strings (flags, comma-separated env)."""
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for i, item in enumerate(parse_str_list(parse_str)(value, where)):
            repository, sep, name = item.partition("=")
            if not sep:
                raise ConfigError(f"{where}[{i}]: {item!r} is not REPOSITORY=NAME")
            pairs.append((repository.strip(), name.strip()))
    return tuple(
        (parse_repository(repository, f"{where}: {repository!r}"), parse_str(name, f"{where}.{repository}"))
        for repository, name in pairs
    )


def parse_env_name(value: Any, where: str) -> str:
    text = parse_str(value, where).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ConfigError(f"{where}: {text!r} is not an environment variable name")
    return text


def parse_pem_file(value: Any, where: str) -> Path:
    path = parse_path(value, where)
    if not path.is_file():
        raise ConfigError(f"{where}: {path} is not a readable file")
    return path


def parse_shard(value: Any, where: str) -> Shard:
    return Shard.parse(parse_str(value, where), where)

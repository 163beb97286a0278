"""Where secrets come from: a variable, a file it names, or a systemd credential.

Secrets have neither a flag nor a config key.  The Akua token comes from
``AKUA_API_TOKEN`` (or ``AKUA_API_TOKEN_FILE``, or ``$CREDENTIALS_DIRECTORY/akua-api-token``),
the registry password from ``REGISTRY_PASSWORD`` (likewise) or the variable or file a
source names with ``password_env``/``password_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from crawler.errors import ConfigError
from crawler.secret import MASKED_FROM, Secret
from crawler.setting_values import VISIBLE_ASCII

TOKEN_ENV: Final = "AKUA_API_TOKEN"
REGISTRY_PASSWORD_ENV: Final = "REGISTRY_PASSWORD"
REGISTRY_PASSWORD_FILE_ENV: Final = "REGISTRY_PASSWORD_FILE"
TOKEN_FILE_ENV: Final = "AKUA_API_TOKEN_FILE"
CREDENTIALS_DIRECTORY_ENV: Final = "CREDENTIALS_DIRECTORY"  # systemd's LoadCredential=
TOKEN_CREDENTIAL: Final = "akua-api-token"
PASSWORD_CREDENTIAL: Final = "registry-password"


def masked_secret(value: str, where: str) -> Secret:
    """``value`` as a Secret, refused when shorter than the log redaction masks."""
    if len(value) < MASKED_FROM:
        raise ConfigError(
            f"{where}: {len(value)} characters, shorter than the {MASKED_FROM} the log redaction "
            "masks; use a longer secret"
        )
    return Secret(value)


def secret_from(environ: Mapping[str, str], env: str, file_env: str, credential: str) -> Secret | None:
    """A secret from ``file_env`` (a file), ``env`` (the variable), or systemd's credential
    ``$CREDENTIALS_DIRECTORY/<credential>``; naming both a file and a value is refused."""
    value = environ.get(env, "").strip()
    file = environ.get(file_env, "").strip()
    if value and file:
        raise ConfigError(f"{env} and {file_env} are both set; keep one")
    if file:
        return masked_secret(read_secret_file(Path(file), file_env), file_env)
    if value:
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ConfigError(f"{env}: contains whitespace or control characters")
        return masked_secret(value, env)
    directory = environ.get(CREDENTIALS_DIRECTORY_ENV, "").strip()
    if directory and (Path(directory) / credential).is_file():
        where = f"${CREDENTIALS_DIRECTORY_ENV}/{credential}"
        return masked_secret(read_secret_file(Path(directory) / credential, where), where)
    return None


def api_token(environ: Mapping[str, str]) -> Secret | None:
    token = secret_from(environ, TOKEN_ENV, TOKEN_FILE_ENV, TOKEN_CREDENTIAL)
    if token is not None and not VISIBLE_ASCII.match(token.reveal()):
        raise ConfigError(
            f"{TOKEN_ENV}: must be printable ASCII without whitespace or control characters "
            "(it is sent in the Authorization header)"
        )
    return token


def registry_password(values: Mapping[str, Any], environ: Mapping[str, str], where: str, *,
              fallback: bool) -> Secret:
    """The registry password a source names: password_file, else password_env; in the simple
    case (``fallback``) then REGISTRY_PASSWORD_FILE, REGISTRY_PASSWORD or the systemd credential."""
    file: Path | None = values.get("password_file")
    file_where = f"{where}password_file"
    env: str | None = values.get("password_env")
    if file is None and env is None and fallback:
        found = secret_from(environ, REGISTRY_PASSWORD_ENV, REGISTRY_PASSWORD_FILE_ENV,
                             PASSWORD_CREDENTIAL)
        if found is None:
            raise ConfigError(f"username is set but {REGISTRY_PASSWORD_ENV} is empty (or set "
                              f"{REGISTRY_PASSWORD_FILE_ENV}, or password_file/password_env)")
        return found
    if file is not None:
        return masked_secret(read_secret_file(file, file_where), file_where)
    if env is None:
        raise ConfigError(f"{where}username is set but neither password_env nor password_file")
    value = environ.get(env, "")
    if not value:
        raise ConfigError(f"{where}username is set but {env} is empty")
    return masked_secret(value, f"{where}{env}" if where else env)


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

"""Registry credentials from the Docker configuration and its credential helpers.

The file is ``$DOCKER_CONFIG/config.json`` when ``DOCKER_CONFIG`` is set, else
``~/.docker/config.json`` (Docker's own rule).  For one registry host the
credentials come, in this order, from:

1. ``credHelpers[host]``: the program ``docker-credential-<name>``;
2. ``credsStore``: the same, for every host without its own helper;
3. ``auths[host].auth`` (base64 ``user:password``) or ``auths[host].username`` and
   ``.password``.

A helper that reports "credentials not found" lets the ``auths`` entry (or
anonymous access) decide.  A helper is given ``timeout_s`` and its own process
group; one that does not answer in time, exits non-zero for another reason,
prints something other than ``{"Username": ..., "Secret": ...}`` or is missing
ends the run (``CredentialsUnavailable``, exit 3) with a reason naming the
helper.  Its stdout (which holds the secret) never appears in a message.

Everything here blocks (file reads, subprocesses): call it on a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crawler.errors import RunAborted

HELPER_PREFIX: Final = "docker-credential-"
_NOT_FOUND: Final = "credentials not found"  # docker-credential-helpers' wording
_IDENTITY_TOKEN_USER: Final = "<token>"  # what helpers answer for an OAuth refresh token
_MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
_MAX_HELPER_OUTPUT: Final = 64 * 1024


class CredentialsUnavailable(RunAborted):
    """The configured credentials cannot be obtained; the run cannot start (exit 3)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str  # where they came from, for messages: a file or a helper, never the value

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', source={self.source!r})"


def docker_config_path(environ: Mapping[str, str]) -> Path:
    """Where Docker keeps its client configuration for this environment."""
    folder = environ.get("DOCKER_CONFIG")
    if folder:
        return Path(folder).expanduser() / "config.json"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


def docker_credentials(
    host: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Credentials | None:
    """The credentials the Docker configuration holds for ``host``, or None (anonymous).

    ``started(process)`` is told about a helper process as soon as it runs, so a
    caller that gives up (a signal) can end it with ``end_helper``.
    """
    environ = os.environ if environ is None else environ
    path = docker_config_path(environ)
    config = _read_config(path)
    if config is None:
        return None
    helper = _helper_for(config, host, path)
    if helper is not None:
        name, entry = helper
        found = run_helper(name, host, timeout_s=timeout_s, environ=environ, entry=entry,
                           started=started)
        if found is not None:
            return found
    return _inline(config, host, path)


def run_helper(
    name: str,
    host: str,
    *,
    timeout_s: float,
    environ: Mapping[str, str] | None = None,
    entry: str = "credential helper",
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Credentials | None:
    """``docker-credential-<name> get`` for ``host``; None when it has nothing for the host."""
    program = HELPER_PREFIX + name
    where = f"{program} ({entry})"
    if not name or "/" in name or name.startswith("."):
        raise CredentialsUnavailable(f"{where}: not a credential helper name: {name!r}")
    try:
        process = subprocess.Popen(
            [program, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ if environ is None else environ),
            start_new_session=True,  # its own process group, so a timeout ends its children too
        )
    except FileNotFoundError:
        raise CredentialsUnavailable(f"{where}: not found on PATH") from None
    except OSError as exc:
        raise CredentialsUnavailable(f"{where}: cannot start it ({exc.strerror})") from None
    if started is not None:
        started(process)
    try:
        out, err = process.communicate(host.encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise CredentialsUnavailable(
            f"{where}: no answer for {host} within {timeout_s:g}s (a keyring waiting to be "
            "unlocked?)"
        ) from None
    if process.returncode != 0:
        text = (out + b"\n" + err).decode("utf-8", "replace")
        if _NOT_FOUND in text.lower():
            return None
        # stderr only: a confused helper might print the secret on stdout.
        detail = _first_line(err) or "no message"
        raise CredentialsUnavailable(
            f"{where}: exited with status {process.returncode} for {host}: {detail}"
        )
    return _helper_answer(out, where, host)


def end_helper(process: subprocess.Popen[bytes]) -> None:
    """Kill a helper and its children (its own process group); does not wait."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group we created for it, by its id


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    end_helper(process)
    process.communicate()


def _helper_answer(out: bytes, where: str, host: str) -> Credentials:
    shape = 'not the expected JSON object {"Username": ..., "Secret": ...}'
    if len(out) > _MAX_HELPER_OUTPUT:
        raise CredentialsUnavailable(f"{where}: answered {len(out)} bytes for {host}: {shape}")
    try:
        document = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CredentialsUnavailable(f"{where}: answered {host} with {shape}") from None
    if not isinstance(document, dict):
        raise CredentialsUnavailable(f"{where}: answered {host} with {shape}")
    username, secret = document.get("Username"), document.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        raise CredentialsUnavailable(f"{where}: answered {host} with {shape}")
    if username == _IDENTITY_TOKEN_USER:
        raise CredentialsUnavailable(
            f"{where}: answered {host} with an identity token, which the crawler cannot use; "
            "give --username and REGISTRY_PASSWORD instead"
        )
    return Credentials(username=username, password=secret, source=where)


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsUnavailable(f"docker config {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise CredentialsUnavailable(f"docker config {path}: over {_MAX_CONFIG_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CredentialsUnavailable(f"docker config {path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CredentialsUnavailable(f"docker config {path}: not a JSON object")
    return document


def _lookup(table: Any, host: str) -> tuple[str, Any] | None:
    """The entry for ``host`` in an ``auths``/``credHelpers`` table, keys spelled Docker's ways."""
    if not isinstance(table, dict):
        return None
    if host in table:
        return host, table[host]
    wanted = host.lower()
    for key, value in table.items():
        if isinstance(key, str) and _hostname_of(key) == wanted:
            return key, value
    return None


def _hostname_of(key: str) -> str:
    # "https://host:port/v1/" and "host:port" name the same registry.
    text = key.strip().lower()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    return text.split("/", 1)[0]


def _helper_for(config: dict[str, Any], host: str, path: Path) -> tuple[str, str] | None:
    found = _lookup(config.get("credHelpers"), host)
    if found is not None:
        key, name = found
        if not isinstance(name, str):
            raise CredentialsUnavailable(f"docker config {path}: credHelpers[{key!r}] is not a name")
        return name, f"credHelpers entry {key!r} in {path}"
    store = config.get("credsStore")
    if store is None or store == "":
        return None
    if not isinstance(store, str):
        raise CredentialsUnavailable(f"docker config {path}: credsStore is not a name")
    return store, f"credsStore in {path}"


def _inline(config: dict[str, Any], host: str, path: Path) -> Credentials | None:
    found = _lookup(config.get("auths"), host)
    if found is None:
        return None
    key, entry = found
    where = f"auths entry {key!r} in docker config {path}"
    if not isinstance(entry, dict):
        raise CredentialsUnavailable(f"{where}: not a JSON object")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsUnavailable(f"{where}: 'auth' is not base64 of user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise CredentialsUnavailable(f"{where}: 'auth' is not base64 of user:password")
        return Credentials(username=username, password=password, source=where)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user and isinstance(secret, str):
        return Credentials(username=user, password=secret, source=where)
    if entry.get("identitytoken"):
        raise CredentialsUnavailable(
            f"{where}: holds only an identity token, which the crawler cannot use; "
            "give --username and REGISTRY_PASSWORD instead"
        )
    return None  # an empty entry: docker login left it for a helper that had nothing


def _first_line(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 200 else line[:197] + "..."


__all__ = [
    "HELPER_PREFIX",
    "Credentials",
    "CredentialsUnavailable",
    "docker_config_path",
    "docker_credentials",
    "end_helper",
    "run_helper",
]

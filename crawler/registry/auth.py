"""Registry credentials: where they come from, how refusals are explained, and
keeping them out of messages.

The auth backend that answers challenges is oras-py's (adapted in
``crawler.registry.oras_compat``); this module decides which credentials it
gets.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from crawler.api.route_check import check_registry_transport
from crawler.credentials import docker_config_path, docker_credentials
from crawler.registry.endpoint import RegistryEndpoint


class RealmRefused(Exception):
    """Internal: the credentials may not go to the token realm the registry named."""


def with_docker_credentials(
    endpoint: RegistryEndpoint,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> RegistryEndpoint:
    """The endpoint with the Docker config's credentials for its host filled in.

    Blocks (files, credential helpers): call it on a worker thread, once per run.
    Raises ``crawler.credentials.CredentialsUnavailable`` (exit 3) for a broken
    helper or config.  Explicit credentials, or ``use_docker_config`` off, leave
    the endpoint as it is.  Credentials found for a plain-HTTP registry that is not
    loopback reached directly raise ``ConfigError`` (exit 2) before any contact,
    unless ``allow_plain_http_credentials`` (the check config applies to explicit ones).
    """
    if endpoint.username is not None or not endpoint.use_docker_config:
        return endpoint
    found = docker_credentials(endpoint.host, timeout_s=endpoint.timeout_s, started=started)
    if found is None:
        return replace(endpoint, use_docker_config=False,
                       credential_source=f"no entry for {endpoint.host} in the docker config")
    if endpoint.plain_http:
        check_registry_transport(endpoint.host, found.username,
                                 endpoint.allow_plain_http_credentials, os.environ,
                                 f"{found.source}: ")
    return replace(endpoint, username=found.username, password=found.password,
                   use_docker_config=False, credential_source=found.source)


def apply(backend: Any, endpoint: RegistryEndpoint) -> None:
    """Give the oras auth ``backend`` the endpoint's credentials, if any.

    With ``use_docker_config`` and no username, the Docker config is read here
    (``crawler.credentials``: ``DOCKER_CONFIG``, ``auths``, helpers); the crawl
    resolves it once up front instead, so its clients never run a helper.
    """
    endpoint = with_docker_credentials(endpoint)
    if endpoint.username is not None and endpoint.password is not None:
        backend.set_basic_auth(endpoint.username, endpoint.password)


def user_of(endpoint: RegistryEndpoint) -> str:
    return repr(endpoint.username) if endpoint.username is not None else "anonymous"


def refusal_hint(endpoint: RegistryEndpoint) -> str:
    """Why the registry said 401/403, in terms of what was configured."""
    if endpoint.username is not None:
        source = f" (from {endpoint.credential_source})" if endpoint.credential_source else ""
        return f"the registry refused the credentials of user {endpoint.username!r}{source}"
    if endpoint.use_docker_config:
        return (f"the registry refused anonymous access (no credentials for {endpoint.host} "
                f"in {docker_config_path(os.environ)})")
    if endpoint.credential_source:
        return f"the registry requires credentials and there are none ({endpoint.credential_source})"
    return "the registry requires credentials and none are configured"


def check_realm(realm: str, endpoint: RegistryEndpoint) -> None:
    """Refuse (``RealmRefused``) to send credentials to a token realm they must not reach.

    Credentials go to a realm over HTTPS, or over plain HTTP only when the realm
    is the registry's own host (any port) and the registry itself was configured
    for plain HTTP (``--plain-http``).
    """
    parts = urlsplit(realm)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    own = urlsplit(f"//{endpoint.host}").hostname
    if scheme == "http" and endpoint.plain_http and parts.hostname == own:
        return
    why = (
        "plain HTTP to another host" if scheme == "http" and endpoint.plain_http
        else "plain HTTP to a registry configured for HTTPS" if scheme == "http"
        else f"scheme {scheme or '(none)'!r}"
    )
    origin = f"{scheme}://{parts.netloc}" if parts.netloc else realm[:80]
    raise RealmRefused(
        f"refusing to send the credentials of user {user_of(endpoint)} to the token realm "
        f"{origin} ({why}); credentials go to a realm only over HTTPS, or over plain HTTP "
        "to the registry's own host with --plain-http"
    )


def scrub(text: str, endpoint: RegistryEndpoint, held: tuple[str | None, ...]) -> str:
    """``text`` with every credential replaced by ``***``.

    A registry may echo our Authorization header in an error body; Basic
    credentials are base64("user:password"), as secret as the password.
    """
    for secret in (endpoint.password, *held):
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


__all__ = ["RealmRefused", "apply", "check_realm", "refusal_hint", "scrub", "user_of",
           "with_docker_credentials"]

"""Whether a secret may take its route: TLS, or loopback reached directly.

The Akua token (``check_api_transport``) and registry credentials
(``check_registry_transport``) follow the same rule: plain HTTP only to a
loopback host that no proxy variable would carry the request to (``env_proxy``,
the judgment the clients themselves follow), unless the user opted in.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from crawler.api.proxy import env_proxy
from crawler.errors import ConfigError


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1."""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host.strip("[]")).is_loopback
    return loopback


def check_api_transport(api_url: str, allow_plain_http: bool, environ: Mapping[str, str]) -> None:
    """The token never crosses plain HTTP to anything but loopback reached directly, unless allowed."""
    parts = urlsplit(api_url)
    if parts.scheme == "https" or allow_plain_http:
        return
    if not is_loopback(parts.hostname or ""):
        raise ConfigError(
            f"api_url: {api_url} is plain HTTP to a non-loopback host; the token would "
            "cross the network in clear (set allow_plain_http_api to accept that)"
        )
    proxy = env_proxy(api_url, environ)
    if proxy is not None:
        raise ConfigError(
            f"api_url: {api_url} is plain HTTP and {proxy[0]} would carry it through a "
            "proxy, so the token would leave this machine in clear; add the host to NO_PROXY "
            "(or set allow_plain_http_api to accept that)"
        )


def check_registry_transport(registry: str, user: str, allow_plain_http: bool,
                             environ: Mapping[str, str], where: str = "") -> None:
    """Credentials for a plain-HTTP ``registry`` (host[:port]) go only to loopback reached
    directly, unless allowed; ``where`` prefixes the error (a source's name)."""
    if allow_plain_http:
        return
    url = f"http://{registry}"
    whose = f"the credentials of user {user!r}"
    if not is_loopback(urlsplit(url).hostname or ""):
        raise ConfigError(
            f"{where}registry: {registry} is plain HTTP to a non-loopback host; {whose} would "
            "cross the network in clear (set allow_plain_http_credentials to accept that)"
        )
    proxy = env_proxy(url, environ)
    if proxy is not None:
        raise ConfigError(
            f"{where}registry: {registry} is plain HTTP and {proxy[0]} would carry it through a "
            f"proxy, so {whose} would leave this machine in clear; add the host to NO_PROXY "
            "(or set allow_plain_http_credentials to accept that)"
        )

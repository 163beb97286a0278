"""Whether the Akua token may take the route to the API: TLS, or loopback reached directly."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from crawler.api.proxy import env_proxy
from crawler.errors import ConfigError


def check_api_transport(api_url: str, allow_plain_http: bool, environ: Mapping[str, str]) -> None:
    """The token never crosses plain HTTP to anything but loopback reached directly, unless allowed."""
    parts = urlsplit(api_url)
    if parts.scheme == "https" or allow_plain_http:
        return
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
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

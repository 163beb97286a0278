"""Which HTTP proxy, if any, would carry a request to the Akua API.

httpx honours ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``
(either case, lower case first, as ``urllib.request`` reads them).  A plain-HTTP
API URL on loopback is only safe for the token when the request goes to that
address directly: through a proxy the token crosses whatever lies between us
and the proxy, in clear.  ``env_proxy`` answers the question from the same
rules httpx applies, and the client mounts the API origin on a direct
transport whenever the answer is "none", so the check and the traffic agree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit


def _proxy_variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """scheme ("http", "https", "all", "no") -> (variable name, value); lower case wins."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        lowered = name.lower()
        if not lowered.endswith("_proxy") or not value:
            continue
        scheme = lowered[: -len("_proxy")]
        if scheme in found and name != lowered:
            continue  # the lower-case variable was seen first or wins
        found[scheme] = (name, value)
    # CGI: HTTP_PROXY may come from a request header, so urllib ignores it there.
    if "REQUEST_METHOD" in environ and found.get("http", ("", ""))[0] == "HTTP_PROXY":
        del found["http"]
    return found


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "://" in entry:
            entry = urlsplit(entry).hostname or ""
        entry = entry.strip("[]")
        try:
            if ipaddress.ip_address(host) == ipaddress.ip_address(entry):
                return True
            continue
        except ValueError:
            pass
        if entry == "localhost" and host == "localhost":
            return True
        # httpx: "example.com" covers it and its subdomains, ".example.com" only subdomains.
        if host.endswith(entry) and (entry.startswith(".") or host == entry or host.endswith("." + entry)):
            return True
    return False


def env_proxy(url: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable name, proxy URL) that would carry a request to ``url``, or None: direct."""
    parts = urlsplit(url)
    variables = _proxy_variables(environ)
    if "no" in variables and _bypassed(parts.hostname or "", variables["no"][1]):
        return None
    for scheme in (parts.scheme, "all"):
        if scheme in variables:
            return variables[scheme]
    return None

"""Registry credentials: where they come from, how refusals are explained, and
keeping them out of messages.

The auth backend that answers challenges is oras-py's (adapted in
``crawler.registry.oras_compat``); this module decides which credentials it
gets.
"""

from __future__ import annotations

from typing import Any

import oras.container

from crawler.registry.endpoint import RegistryEndpoint


def apply(backend: Any, endpoint: RegistryEndpoint) -> None:
    """Give the oras auth ``backend`` the endpoint's credentials, if any.

    Explicit username/password win; otherwise, with ``use_docker_config``,
    the docker config entry for the registry host (oras' loader, called once
    here because oras only loads it inside some of its own calls).
    """
    if endpoint.username is not None and endpoint.password is not None:
        backend.set_basic_auth(endpoint.username, endpoint.password)
    elif endpoint.use_docker_config:
        container = oras.container.Container("akua/probe")
        container.registry = endpoint.host  # the parser mistakes "localhost" for a path
        backend.load_configs(container)


def refusal_hint(endpoint: RegistryEndpoint) -> str:
    """Why the registry said 401/403, in terms of what was configured."""
    if endpoint.username is not None:
        return f"the registry refused the credentials of user {endpoint.username!r}"
    if endpoint.use_docker_config:
        return "the registry refused the docker config credentials (or found none)"
    return "the registry requires credentials and none are configured"


def scrub(text: str, endpoint: RegistryEndpoint, held: tuple[str | None, ...]) -> str:
    """``text`` with every credential replaced by ``***``.

    A registry may echo our Authorization header in an error body; Basic
    credentials are base64("user:password"), as secret as the password.
    """
    for secret in (endpoint.password, *held):
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


__all__ = ["apply", "refusal_hint", "scrub"]

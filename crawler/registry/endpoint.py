"""How to reach one registry: host, transport, credentials, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crawler.errors import ConfigError

DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024  # what distribution itself accepts on push


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEndpoint:
    """How to reach one registry.  ``host`` is "host[:port]", no scheme or path."""

    host: str
    plain_http: bool = False
    insecure: bool = False  # HTTPS without certificate verification
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_docker_config: bool = False  # ignored when username/password are given
    # Where username/password came from, for messages ("docker-credential-x (...)");
    # None when they were given directly (--username and REGISTRY_PASSWORD).
    credential_source: str | None = None
    # Credentials may go over plain HTTP to a non-loopback host or through a proxy.
    allow_plain_http_credentials: bool = False
    timeout_s: float = 30.0  # total time of one request: connect, auth round trips, headers, body
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
    ca_file: str | None = None  # CA bundle trusted instead of the system's (and REQUESTS_CA_BUNDLE)
    client_cert: str | None = None  # client certificate and key, for registries that require one
    client_key: str | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/@ \t\r\n?#"):
            raise ConfigError(f"registry host must be host[:port] without scheme: {self.host!r}")
        if (self.username is None) != (self.password is None):
            raise ConfigError(f"registry {self.host}: give both username and password, or neither")
        if not self.timeout_s > 0:
            raise ConfigError(f"registry {self.host}: timeout_s must be > 0")
        if self.max_manifest_bytes <= 0:
            raise ConfigError(f"registry {self.host}: max_manifest_bytes must be > 0")

    def __repr__(self) -> str:
        # Hand-written so the password can never appear, even by accident.
        secret = None if self.password is None else "***"
        return (
            f"RegistryEndpoint(host={self.host!r}, plain_http={self.plain_http}, "
            f"insecure={self.insecure}, username={self.username!r}, password={secret!r}, "
            f"use_docker_config={self.use_docker_config}, "
            f"credential_source={self.credential_source!r}, timeout_s={self.timeout_s}, "
            f"max_manifest_bytes={self.max_manifest_bytes}, ca_file={self.ca_file!r}, "
            f"client_cert={self.client_cert!r})"
        )

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"


__all__ = ["DEFAULT_MAX_MANIFEST_BYTES", "RegistryEndpoint"]

"""The verifying TLS context a CA bundle and a client certificate describe."""

from __future__ import annotations

import ssl
from pathlib import Path

from crawler.errors import ConfigError


def tls_context(ca_file: Path | None, client_cert: Path | None = None,
                client_key: Path | None = None, where: str = "ca_file") -> ssl.SSLContext:
    """The verifying TLS context these files describe (system CAs without ``ca_file``)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}: {ca_file} holds no usable CA certificate: {exc}") from None
    if client_cert is not None:
        try:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{where.rsplit('ca_file', 1)[0]}client_cert: {client_cert} with key {client_key}: "
                f"not a usable certificate and key: {exc}"
            ) from None
    return context

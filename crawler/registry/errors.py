"""Registry errors, placed in the crawler's exception tree (``crawler.errors``).

::

    TransientFailure
    └── RegistryUnavailable      refused, timed out, cut off, 5xx, 408 or 429; retried
    InvalidArtifact
    ├── RegistryNotFound         404: unknown repository or reference (``code`` says which)
    ├── BadManifest              not a usable manifest (size, encoding, JSON, kind, digest)
    ├── BadBlob                  a blob over its size cap, or bytes that do not match its digest
    └── RegistryProtocolError    an answer the crawler cannot use (status, listing, Link)
    RunAborted
    └── RegistryAuthFailed       401/403 after authenticating: the run cannot go on
"""

from __future__ import annotations

from crawler.errors import InvalidArtifact, RunAborted, TransientFailure


class RegistryUnavailable(TransientFailure):
    """No usable answer: refused, timed out, cut off, 5xx, 408 or 429; worth retrying."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RegistryNotFound(InvalidArtifact):
    """404: the repository or the reference does not exist (``code`` says which)."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class RegistryAuthFailed(RunAborted):
    """401/403 after authenticating: wrong or missing credentials, or no access.

    Not an ItemError: retrying the item cannot help, and the caller decides
    whether one repository being forbidden stops the run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadManifest(InvalidArtifact):
    """The manifest is not a usable package manifest (size, encoding, JSON, type, digest).

    ``digest`` is set when the bytes were read whole, so the state can record the
    outcome and a re-run need not read an unchanged manifest again.
    """

    def __init__(self, reason: str, *, digest: str | None = None) -> None:
        super().__init__(reason)
        self.digest = digest


class BadBlob(InvalidArtifact):
    """A blob over the caller's size cap, or bytes that do not hash to the digest asked for."""


class RegistryProtocolError(InvalidArtifact):
    """An answer the crawler cannot use: unexpected status, unreadable listing, foreign Link."""


__all__ = [
    "BadBlob",
    "BadManifest",
    "RegistryAuthFailed",
    "RegistryNotFound",
    "RegistryProtocolError",
    "RegistryUnavailable",
]

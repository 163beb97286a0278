"""The crawler's exception tree.

::

    CrawlerError
    ├── RunError                 stops the whole run, each with its exit status
    │   ├── ConfigError          exit 2: bad usage or configuration, before any contact
    │   ├── RunAborted           exit 3: Akua refused the token, registry down
    │   └── StateLocked          exit 4: another run holds the state store
    └── ItemError                ends one item with a recorded outcome; the run goes on
        ├── InvalidArtifact      outcome "invalid": the artifact itself is unusable
        ├── Rejected             outcome "rejected": Akua answered 4xx
        └── TransientFailure     outcome "failed": retries ran out; the next run retries

Anything else is a bug and propagates.
"""

from __future__ import annotations


class CrawlerError(Exception):
    """Base of everything the crawler raises on purpose."""


class RunError(CrawlerError):
    exit_status = 1


class ConfigError(RunError):
    exit_status = 2


class RunAborted(RunError):
    exit_status = 3


class StateLocked(RunError):
    exit_status = 4


class ItemError(CrawlerError):
    """One item ends here; ``reason`` is the operator-facing explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidArtifact(ItemError):
    pass


class Rejected(ItemError):
    pass


class TransientFailure(ItemError):
    pass

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
        ├── TransientFailure     outcome "failed": retries ran out; the next run retries
        └── RepositoryRefused    outcome "failed": the registry refused one repository; the next run retries

Anything else is a bug and propagates.
"""

from __future__ import annotations

from typing import ClassVar

from crawler.outcomes import Outcome


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
    """One item ends here with ``outcome``; ``reason`` is the operator-facing explanation."""

    outcome: ClassVar[Outcome] = Outcome.FAILED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidArtifact(ItemError):
    outcome = Outcome.INVALID


class Rejected(ItemError):
    outcome = Outcome.REJECTED


class TransientFailure(ItemError):
    outcome = Outcome.FAILED


class RepositoryRefused(ItemError):
    """The registry refused access to one repository (401/403, ``insufficient_scope``).

    Raised only for repository requests (tags, manifests) once ``/v2/`` and the
    catalog were accepted: the credentials work, this repository is not granted.
    It ends that repository (outcome "failed", retried next run: grants change);
    the others go on.  ``repository`` and ``user`` name what was refused to whom.
    """

    def __init__(self, reason: str, *, repository: str, user: str | None) -> None:
        super().__init__(reason)
        self.repository = repository
        self.user = user

"""The crawler's exception tree: every exception class the crawler defines.

Two kinds of errors leave the module that raises them, and each carries what
the caller needs to know: a ``RunError`` its ``exit_status``, an ``ItemError``
its ``outcome``.  Anything else that escapes a repository is a bug: it is
contained (that repository ends failed, the run exits 5) and logged with its
traceback.

::

    Exception
    ├── CrawlerError                   everything the crawler raises on purpose
    │   ├── RunError                   stops the whole run; ``exit_status``
    │   │   ├── ConfigError            2: bad usage or configuration, before any contact
    │   │   ├── RunAborted             3: the run cannot go on
    │   │   │   ├── RegistryAuthFailed       the registry refused the credentials (registry.errors)
    │   │   │   ├── CredentialsUnavailable   credentials cannot be obtained (credentials)
    │   │   │   ├── StateWriteFailed         the state cannot be written any more
    │   │   │   └── SourceFailed             one source stops; the run, when it is the only one
    │   │   └── StateLocked            4: another run holds the state store
    │   └── ItemError                  ends one item; ``outcome``; the run goes on
    │       ├── InvalidArtifact        "invalid": the artifact itself is unusable
    │       │   ├── RegistryNotFound         404: unknown repository or reference (registry.errors)
    │       │   ├── BadManifest              not a usable manifest (registry.errors)
    │       │   ├── BadBlob                  a blob over its cap or not matching its digest (registry.errors)
    │       │   ├── RegistryProtocolError    an answer the crawler cannot use (registry.errors)
    │       │   │   └── ListingCut           a tag or catalog listing past its cap (registry.listing)
    │       │   ├── SchemaInvalid            the input schema is unusable (schema.extract)
    │       │   ├── PackageContentInvalid    the package's content layer is unusable (package_content)
    │       │   └── DerivedSchemaInvalid     package.k yields no usable schema (package_schema)
    │       ├── Rejected               "rejected": Akua answered 4xx
    │       ├── TransientFailure       "failed": retries ran out; the next run retries
    │       │   └── RegistryUnavailable      refused, timed out, 5xx, 408, 429 (registry.errors)
    │       └── RepositoryRefused      "failed": the registry refused this one repository
    │
    │   Signals between two parts of the crawler, caught by the part that expects them
    │   and turned into one of the above (never seen by the pipeline):
    ├── ContractViolation              a body the crawler built breaks Akua's contract (payload)
    ├── PackageGone                    Akua answered 404 on create-version (api.client -> importer)
    ├── AmbiguousWrite                 a create-version that may have reached Akua (api.client -> importer)
    ├── LimiterClosed                  the service is unavailable for the run (ratelimit -> api.client)
    ├── AuthChallengeFailed            oras-py gave up on a 401 challenge (registry.oras_compat)
    ├── MalformedResponse              not an HTTP/1.1 answer, or cut short (http1 -> direct, connection)
    ├── RealmRefused                   credentials may not go to the token realm named (registry.auth)
    ├── KclUnavailable                 kcl-lib cannot be imported (kcl_pool)
    ├── DerivationFailed               no schema for this package.k (kcl_pool)
    ├── ExportError                    the package has no exportable schema (kcl_export)
    ├── PackageSchemaUnavailable       the package schema source cannot answer (package_schema)
    ├── Problem                        one schema problem, with its wording (schema.problems)
    ├── TimeoutError
    │   └── DeadlineExceeded           a registry request's total budget is spent (deadline)
    └── ValueError
        └── RegexInvalid               a pattern that is not ECMA-262 (schema.regexes)

    Private to one module: api.client._Throttled and _Unavailable (one attempt's
    answer), api.connection._ResponseTooLarge (an httpx.ReadError),
    registry.direct._ClosedEarly (a kept connection closed unanswered), http1._Stop and
    _TooManyHeaders,
    schema.extract._Refused, schema.references._NoPointee,
    package_content._Overflow, kcl_pool._Broken, kcl_export._Refused.

The classes defined in other modules are re-exported here (imported when first
used, so this module imports nothing of the crawler but ``outcomes``).
``tests/test_errors.py`` fails when a class is missing from this tree.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Final

from crawler.outcomes import Outcome


class CrawlerError(Exception):
    """Base of everything the crawler raises on purpose."""


class RunError(CrawlerError):
    exit_status: ClassVar[int] = 1


class ConfigError(RunError):
    exit_status = 2


class RunAborted(RunError):
    exit_status = 3


class StateWriteFailed(RunAborted):
    """The state cannot be written (disk full, read-only, locked): stop taking work."""


class SourceFailed(RunAborted):
    """A registry that refuses its credentials or looks down: the run stops when it is the only
    source; with several sources only that one stops (a source-level problem)."""


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

    outcome = Outcome.FAILED

    def __init__(self, reason: str, *, repository: str, user: str | None) -> None:
        super().__init__(reason)
        self.repository = repository
        self.user = user


#: Classes defined next to the code that raises them, re-exported from here.
ELSEWHERE: Final = {
    "RegistryAuthFailed": "crawler.registry.errors",
    "RegistryNotFound": "crawler.registry.errors",
    "BadManifest": "crawler.registry.errors",
    "BadBlob": "crawler.registry.errors",
    "RegistryProtocolError": "crawler.registry.errors",
    "RegistryUnavailable": "crawler.registry.errors",
    "ListingCut": "crawler.registry.listing",
    "CredentialsUnavailable": "crawler.credentials",
    "SchemaInvalid": "crawler.schema.extract",
    "PackageContentInvalid": "crawler.package_content",
    "DerivedSchemaInvalid": "crawler.package_schema",
    "RealmRefused": "crawler.registry.auth",
    "ContractViolation": "crawler.payload",
    "PackageGone": "crawler.api.client",
    "AmbiguousWrite": "crawler.api.client",
    "LimiterClosed": "crawler.ratelimit",
    "AuthChallengeFailed": "crawler.registry.oras_compat",
    "MalformedResponse": "crawler.http1",
    "KclUnavailable": "crawler.kcl_pool",
    "DerivationFailed": "crawler.kcl_pool",
    "ExportError": "crawler.kcl_export",
    "PackageSchemaUnavailable": "crawler.package_schema",
    "Problem": "crawler.schema.problems",
    "DeadlineExceeded": "crawler.deadline",
    "RegexInvalid": "crawler.schema.regexes",
}


def __getattr__(name: str) -> Any:
    module = ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""The one place where an Akua write request is built and checked.

A :class:`VersionRequest` holds both bodies a version can be sent with: the
create-version body and the import body that wraps it.  Both are checked
against Akua's request schemas here, before anything is sent and in ``plan``
too, so a body Akua would refuse ends the item as ``invalid`` with a reason
the operator can act on, never as a crash or a 422.  The importer only sends
what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crawler import contract
from crawler.errors import InvalidArtifact
from crawler.payload import (
    ContractViolation,
    check_import_body,
    import_body,
    version_body,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageTarget:
    """The Akua package a repository becomes."""

    name: str
    oci_ref: str
    description: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRequest:
    package: PackageTarget
    semver: str
    digest: str
    version_body: dict[str, Any]  # POST /packages/{id}/versions
    import_body: dict[str, Any]  # POST /packages:import (the version body inside)


def build_request(
    package: PackageTarget, *, semver: str, digest: str, input_schema: dict[str, Any]
) -> VersionRequest:
    """Both bodies for one version, checked; raises InvalidArtifact naming what to change."""
    if len(package.name) > contract.NAME_MAX:
        raise InvalidArtifact(
            f"package name {package.name[:40]!r}… is {len(package.name)} characters, Akua "
            f"allows at most {contract.NAME_MAX}: map the repository to a shorter package name"
        )
    if len(package.oci_ref) > contract.OCI_REF_MAX:
        raise InvalidArtifact(
            f"oci_ref is {len(package.oci_ref)} characters, Akua allows at most "
            f"{contract.OCI_REF_MAX}: use a shorter repository path"
        )
    version = version_body(semver, digest, input_schema)
    whole = import_body(
        name=package.name, oci_ref=package.oci_ref, description=package.description, version=version
    )
    try:
        check_import_body(whole)  # its "version" is the version body: both checked at once
    except ContractViolation as exc:
        raise InvalidArtifact(f"cannot form a valid Akua request: {exc}") from None
    return VersionRequest(
        package=package, semver=semver, digest=digest, version_body=version, import_body=whole
    )

"""Version preparation: from a manifest to a checked Akua request, or why not.

:func:`prepare` is pure and synchronous: it runs on the registry's worker
thread right after the manifest is read (``Registry.manifest_then``), so the
schema checks never block the event loop and cost no second thread hop.
Everything it needs besides the manifest is in :class:`Preparation`; a
further schema source (for example one read from the package's layers) is a
field there, a callable the registry thread can use to read more data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crawler.payload import description_from
from crawler.registry import Manifest
from crawler.request import PackageTarget, VersionRequest, build_request
from crawler.schema import REMOTE_REFS_DEFAULT, RemoteRefs, extract_input_schema


@dataclass(frozen=True, slots=True, kw_only=True)
class Preparation:
    """What preparing one version needs besides its manifest."""

    name: str  # the Akua package name
    oci_ref: str
    semver: str
    schema_keys: Sequence[str]  # annotations tried in order
    remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT  # what to do with references needing a fetch


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked request, or None when the artifact is not a package (``no_schema`` says why)."""

    request: VersionRequest | None
    description_cut: bool = False
    no_schema: str = ""
    note: str | None = None  # for the item's reason: what the schema check let through

    def noted(self, reason: str) -> str:
        """``reason`` with the schema check's note, if any."""
        if self.note is None:
            return reason
        return f"{reason}; {self.note}" if reason else self.note
    #: where the schema came from, for the item's reason: "annotation 'KEY'" or "package.k"
    schema_source: str = ""
    #: False: the skip depends on this run's setup (a schema source off or not installed),
    #: so it is reported but not recorded, and the next run reads the version again
    settled: bool = True


def prepare(manifest: Manifest, how: Preparation) -> Prepared:
    """Raises InvalidArtifact with the reason when the artifact cannot become a request.

    The request's ``ref`` is the artifact's own digest (``manifest.digest``).
    """
    annotations = manifest.annotations  # resolved by the registry layer (index, platform)
    found = extract_input_schema(annotations, how.schema_keys, remote_refs=how.remote_refs)
    if found is None:
        return Prepared(None, no_schema=manifest.no_schema_reason)
    description, cut = description_from(annotations or {})
    package = PackageTarget(name=how.name, oci_ref=how.oci_ref, description=description)
    request = build_request(
        package, semver=how.semver, digest=manifest.digest, input_schema=found.schema
    )
    return Prepared(request, cut, note=found.note, schema_source=f"annotation {found.key!r}")

"""A source: one registry and the rules for turning its repositories into packages.

The pipeline carries a :class:`Source` with every repository instead of
reading registry settings from globals, so a run can crawl several sources:
``crawl.sources_of`` builds one per configured source (``[[source]]`` tables, or
the top-level keys), each with its own registry client, limits, tag filter and
package-name rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crawler.payload import oci_ref
from crawler.registry import Registry
from crawler.schema import REMOTE_REFS_DEFAULT, RemoteRefs

if TYPE_CHECKING:
    from crawler.package_schema import PackageSchemas


def repository_path(repository: str) -> str:
    """The default package-name rule: the package is named after the full repository path."""
    return repository


def every_tag(tag: str) -> str | None:
    """The default tag filter: no tag is left out."""
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    name: str = ""  # the configured source's name (logs, per-source counts)
    host: str  # registry HOST[:PORT]: the state's "registry" column and the oci_ref's host
    registry: Registry
    repositories: tuple[str, ...] = ()  # crawl only these; empty: every repository in the catalog
    remote_refs: RemoteRefs = REMOTE_REFS_DEFAULT  # schema references that would need a fetch
    #: repository path -> Akua package name
    package_name: Callable[[str], str] = field(default=repository_path)
    #: tag -> why it is left out (reported as skipped), or None to keep it
    tag_filter: Callable[[str], str | None] = field(default=every_tag)
    #: ``GET /v2/`` already answered (the catalog was read while choosing the repositories)
    access_checked: bool = False
    #: the ``package`` schema source (schemas derived from package.k); None: turned off
    package_schemas: PackageSchemas | None = None
    package_first: bool = False  # schema_sources lists "package" before "annotation"

    @property
    def schema_keys(self) -> Sequence[str]:
        """The annotations tried in order for the input schema: held once, by the registry
        (its manifest resolution needs them to tell an artifact index from a platform index)."""
        return self.registry.schema_keys

    def oci_ref(self, repository: str) -> str:
        return oci_ref(self.host, repository)

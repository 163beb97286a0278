"""Reading one OCI registry: catalog, tags, manifests and blobs, through oras-py.

Modules, one concept each:

* ``endpoint``: how to reach the registry (``RegistryEndpoint``);
* ``errors``: the registry's exceptions, placed in the crawler's tree;
* ``manifests``: pure manifest checks (media types, digests, shapes);
* ``oras_compat``: every workaround for oras-py, each with its reason;
* ``auth``: which credentials the registry gets, and keeping them secret;
* ``listing``: Link headers, origins, pagination guards and caps (pure);
* ``client``: the synchronous one-thread client (one attempt per call);
* ``facade``: the async ``Registry`` the pipeline uses (threads, limiter, retries).
"""

from crawler.registry.client import RegistryClient
from crawler.registry.endpoint import DEFAULT_MAX_MANIFEST_BYTES, RegistryEndpoint
from crawler.registry.errors import (
    BadBlob,
    BadManifest,
    RegistryAuthFailed,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
)
from crawler.registry.facade import REQUEST_KINDS, Registry, RegistryStatistics
from crawler.registry.listing import (
    MAX_CATALOG_PAGES,
    MAX_REPOSITORIES,
    MAX_TAG_PAGES,
    MAX_TAGS,
    PAGE_SIZE,
    ListingCut,
)
from crawler.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
)

__all__ = [
    "DEFAULT_MAX_MANIFEST_BYTES",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_ACCEPT",
    "MAX_CATALOG_PAGES",
    "MAX_REPOSITORIES",
    "MAX_TAGS",
    "MAX_TAG_PAGES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "PAGE_SIZE",
    "REQUEST_KINDS",
    "BadBlob",
    "BadManifest",
    "ListingCut",
    "Manifest",
    "Registry",
    "RegistryAuthFailed",
    "RegistryClient",
    "RegistryEndpoint",
    "RegistryNotFound",
    "RegistryProtocolError",
    "RegistryStatistics",
    "RegistryUnavailable",
]

"""Input schemas derived from package content: fetched and derived once per layer per run.

The ``package`` schema source.  For a manifest whose layer is Akua's package
content (``crawler.package_content``) and that no annotation gave a schema,
``PackageSchemas.schema`` does, in order:

0. once per run, make sure kcl-lib runs at all (starting the first KCL child);
   without it nothing is fetched and the package is skipped, naming the extra;
1. look the layer digest up in a bounded cache of this run's results
   (versions often share content: a re-tag, or a release that changed only
   its tag); a result being worked out by another task is waited for, so each
   layer is fetched and derived at most once;
2. fetch the blob by digest on a registry thread (``Registry.blob_then``,
   the "registry" limiter and its retries), verify its sha256, and read
   ``package.k`` out of it on that same thread, in memory;
3. derive the schema in a worker thread behind the ``kcl`` CapacityLimiter
   (one KCL child process per slot, ``crawler.kcl_pool``);
4. check the result as any annotation is checked (``crawler.schema``).

Invalid content is remembered like a schema (the same bytes fail the same
way); transient registry failures are not, so the next version tries again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread

from crawler.errors import InvalidArtifact
from crawler.kcl_pool import DerivationFailed, KclUnavailable, KclWorkers
from crawler.package_content import MAX_LAYER_BYTES, ContentLayer, content_layer, read_package_source
from crawler.payload import description_from
from crawler.prepare import Preparation, Prepared
from crawler.registry import Manifest, Registry
from crawler.request import PackageTarget, build_request
from crawler.schema import check_schema_text

SOURCE_ANNOTATION: Final = "annotation"
SOURCE_PACKAGE: Final = "package"
SCHEMA_SOURCES: Final = (SOURCE_ANNOTATION, SOURCE_PACKAGE)
#: How an item's reason names the package source.
FROM_PACKAGE: Final = "package.k"
SOURCE_OFF: Final = (
    "no input schema annotation; the package source is off (schema_sources), so package.k "
    "is not read"
)
DERIVATIONS_DIFFER: Final = (
    "the schema was derived from package.k and Akua derives a different one: the two "
    "derivations differ, which is worth a bug report to akua-crawler (with this package.k)"
)

#: Layers remembered per run, and the schema text they may hold in total.
CACHE_ENTRIES: Final = 4096
CACHE_BYTES: Final = 32 * 1024 * 1024
#: KCL child processes at once (each about 30 MB); derivations are short and CPU-bound.
KCL_SLOTS: Final = 2


class PackageSchemaUnavailable(Exception):
    """The package source cannot run here (kcl-lib missing); the item is skipped with this reason."""


class DerivedSchemaInvalid(InvalidArtifact):
    """package.k exists but yields no usable schema."""


@dataclass(frozen=True, slots=True)
class PackageSchemaStatistics:
    limiter_name: str
    lookups: int  # schema() calls
    hits: int  # answered from this run's results (or by waiting for one being worked out)
    fetched: int  # layer blobs fetched
    fetched_bytes: int
    derived: int  # derivations run in a KCL process
    derive_seconds: float  # wall time of derivations and their checks, summed
    fetch_seconds: float  # wall time of blob fetches and tar reading, summed
    kcl_processes: int  # KCL children started

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True, slots=True)
class _Result:
    text: str | None  # the checked schema, compact JSON
    problem: str | None  # or why there is none


class PackageSchemas:
    """One per run.  Use within one event loop; ``close()`` when the run ends."""

    limiter_name: Final = "kcl"

    def __init__(
        self,
        registry: Registry,
        *,
        workers: KclWorkers | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        cache_entries: int = CACHE_ENTRIES,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self._registry = registry
        self._workers = workers or KclWorkers()
        self._limiter = limiter or anyio.CapacityLimiter(KCL_SLOTS)
        self._cache: OrderedDict[str, _Result] = OrderedDict()
        self._cache_entries = cache_entries
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._pending: dict[str, anyio.Event] = {}
        self._unavailable: str | None = None
        self._probed = False
        self._probe_lock = anyio.Lock()
        self._lock = threading.Lock()  # the counters, updated from worker threads
        self._lookups = self._hits = self._fetched = self._fetched_bytes = self._derived = 0
        self._derive_s = self._fetch_s = 0.0

    def __repr__(self) -> str:
        return f"PackageSchemas(cached={len(self._cache)}, {self._workers!r})"

    def close(self) -> None:
        self._workers.close()

    def statistics(self) -> PackageSchemaStatistics:
        with self._lock:
            return PackageSchemaStatistics(
                limiter_name=self.limiter_name,
                lookups=self._lookups,
                hits=self._hits,
                fetched=self._fetched,
                fetched_bytes=self._fetched_bytes,
                derived=self._derived,
                derive_seconds=self._derive_s,
                fetch_seconds=self._fetch_s,
                kcl_processes=self._workers.started,
            )

    async def schema(self, repository: str, layer: ContentLayer) -> dict[str, Any]:
        """The checked input schema of the package in ``layer`` (found in ``repository``).

        Raises InvalidArtifact (the reason names the layer), TransientFailure
        (the registry), or PackageSchemaUnavailable (kcl-lib is missing).
        """
        with self._lock:
            self._lookups += 1
        await self._probe()
        while True:
            cached = self._cache.get(layer.digest)
            if cached is not None:
                self._cache.move_to_end(layer.digest)
                with self._lock:
                    self._hits += 1
                return _answer(cached)
            pending = self._pending.get(layer.digest)
            if pending is None:
                break
            # Another task is fetching this layer; its work is bounded (registry
            # timeouts and retries, the derivation timeout), so is this wait.
            await pending.wait()
            if self._unavailable is not None:
                raise PackageSchemaUnavailable(self._unavailable)
        done = self._pending[layer.digest] = anyio.Event()
        try:
            result = await self._work_out(repository, layer)
        finally:
            del self._pending[layer.digest]
            done.set()
        return _answer(result)

    async def _probe(self) -> None:
        """Without kcl-lib no blob is worth fetching: find out once, before the first."""
        if not self._probed:
            async with self._probe_lock:
                if not self._probed:
                    try:
                        await anyio.to_thread.run_sync(self._workers.probe, limiter=self._limiter)
                    except KclUnavailable as exc:
                        self._unavailable = str(exc)
                    except DerivationFailed:
                        pass  # the child did not start: each derivation will say so
                    self._probed = True
        if self._unavailable is not None:
            raise PackageSchemaUnavailable(self._unavailable)

    async def _work_out(self, repository: str, layer: ContentLayer) -> _Result:
        started = time.perf_counter()

        def read(blob: bytes) -> str:
            with self._lock:
                self._fetched += 1
                self._fetched_bytes += len(blob)
            return read_package_source(blob, layer.digest)

        try:
            source = await self._registry.blob_then(repository, layer.digest, MAX_LAYER_BYTES, read)
        except InvalidArtifact as exc:
            return self._remember(layer.digest, _Result(None, exc.reason))
        finally:
            with self._lock:
                self._fetch_s += time.perf_counter() - started
        try:
            text = await anyio.to_thread.run_sync(
                self._derive, source, layer.digest, limiter=self._limiter
            )
        except KclUnavailable as exc:
            self._unavailable = str(exc)
            raise PackageSchemaUnavailable(self._unavailable) from None
        except InvalidArtifact as exc:
            return self._remember(layer.digest, _Result(None, exc.reason))
        return self._remember(layer.digest, _Result(text, None))

    def _derive(self, source: str, digest: str) -> str:
        """On a worker thread: the derived schema, checked, as compact JSON text."""
        started = time.perf_counter()
        try:
            try:
                schema = self._workers.derive(source)
            except DerivationFailed as exc:
                raise DerivedSchemaInvalid(f"package.k in layer {digest}: {exc}") from None
            text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
            check_schema_text(text, f"schema derived from package.k in layer {digest}")
            return text
        finally:
            with self._lock:
                self._derived += 1
                self._derive_s += time.perf_counter() - started

    def _remember(self, digest: str, result: _Result) -> _Result:
        size = len(result.text or result.problem or "")
        self._cache[digest] = result
        self._cached_bytes += size
        while self._cache and (
            len(self._cache) > self._cache_entries or self._cached_bytes > self._cache_bytes
        ):
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted.text or evicted.problem or "")
        return result


async def prepare_with_sources(
    schemas: PackageSchemas | None,
    package_first: bool,
    repository: str,
    manifest: Manifest,
    annotation: Prepared | InvalidArtifact,
    how: Preparation,
) -> Prepared | InvalidArtifact:
    """The version's preparation once every schema source had its turn.

    ``annotation`` is what the annotation source made of the manifest (on the
    registry thread).  The package source applies only to a manifest with
    Akua's content layer: after the annotation source found nothing, or
    before it with ``package_first``.  Problems of the package come back as
    InvalidArtifact, like the annotation source's; transient registry failures
    propagate.
    """
    annotation_found = isinstance(annotation, Prepared) and annotation.request is not None
    if annotation_found and not package_first:
        return annotation
    if isinstance(annotation, InvalidArtifact) and not package_first:
        return annotation
    try:
        layer = content_layer(manifest.document)
    except InvalidArtifact as exc:
        return exc
    if layer is None:
        return annotation
    if schemas is None:
        return annotation if annotation_found else Prepared(None, no_schema=SOURCE_OFF, settled=False)
    try:
        schema = await schemas.schema(repository, layer)
    except PackageSchemaUnavailable as exc:
        if annotation_found or isinstance(annotation, InvalidArtifact):
            return annotation
        return Prepared(None, no_schema=f"no input schema annotation; {exc}", settled=False)
    except InvalidArtifact as exc:
        return exc
    description, cut = description_from(manifest.annotations or {})
    package = PackageTarget(name=how.name, oci_ref=how.oci_ref, description=description)
    try:
        request = build_request(package, semver=how.semver, digest=manifest.digest, input_schema=schema)
    except InvalidArtifact as exc:
        return exc
    return Prepared(request, cut, schema_source=FROM_PACKAGE)


def _answer(result: _Result) -> dict[str, Any]:
    if result.text is None:
        raise DerivedSchemaInvalid(result.problem or "no schema")
    schema: dict[str, Any] = json.loads(result.text)  # a fresh copy for each version
    return schema


__all__ = [
    "CACHE_BYTES",
    "CACHE_ENTRIES",
    "DERIVATIONS_DIFFER",
    "FROM_PACKAGE",
    "KCL_SLOTS",
    "SCHEMA_SOURCES",
    "SOURCE_ANNOTATION",
    "SOURCE_OFF",
    "SOURCE_PACKAGE",
    "DerivedSchemaInvalid",
    "PackageSchemaStatistics",
    "PackageSchemaUnavailable",
    "PackageSchemas",
    "prepare_with_sources",
]

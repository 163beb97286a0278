"""Writing one package version to Akua, exactly once.

For a package (one ``oci_ref``) versions arrive in ascending SemVer order
from one task, so nothing here races with itself.  The rules:

* No package id known (state, then Akua's package list): ``POST /packages:import``
  with a deterministic ``idempotency-key``, so a resend after a timeout returns
  the package instead of a second one.
* A 409 on import: somebody has the package.  Find it (``source.oci_ref``, then
  name) and register the version with create-version.
* Create-version has no idempotency key.  The client resends it only where the
  request never reached Akua; after an ambiguous failure (``AmbiguousWrite``:
  timeout, dropped connection, 5xx after sending) this module decides: it lists
  the versions before sending again, through the shared ``crawler.retry`` loop.
  A 409 means the SemVer exists: the same digest is ``exists``, another digest
  is ``rejected``.
* A 404 on create-version: the package was deleted since we recorded its id;
  forget it and import again, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from crawler.api.client import AkuaClient, AmbiguousWrite, Conflict, Created, PackageGone
from crawler.api.directory import KnownPackage, PackageDirectory, known_package
from crawler.errors import ItemError, Rejected, TransientFailure
from crawler.outcomes import Outcome
from crawler.payload import idempotency_key
from crawler.request import PackageTarget, VersionRequest
from crawler.retry import GiveUp, Retry, retrying

#: Packages in flight per write Akua's rate needs in flight, and at most this many:
#: each holds one prepared version and its reader tasks.
PACKAGES_PER_WRITE: Final = 2
PACKAGES_MAX: Final = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    outcome: Outcome
    reason: str
    package_id: str
    version_id: str | None
    package_found: bool  # the package id is new to the state (imported or looked up)


class Importer:
    def __init__(self, api: AkuaClient, directory: PackageDirectory) -> None:
        self._api = api
        self._directory = directory

    def packages_wanted(self) -> int:
        """Packages in flight: twice the writes that cover rate x latency (one each), so that
        the write order always has packages with a write ready (``crawler.write_order``)."""
        return min(PACKAGES_MAX, PACKAGES_PER_WRITE * self._api.writes_wanted())

    async def write(self, request: VersionRequest, *, package_id: str | None) -> WriteResult:
        """Send ``request`` (built and checked by ``request.build_request``)."""
        target, version, digest = request.package, request.version_body, request.digest
        found = package_id is None
        for _ in range(2):
            if package_id is None:
                known = await self._directory.find(target.oci_ref)
                if known is None:
                    try:
                        imported = await self._import(request)
                    except ItemError:
                        # The import may have committed before it failed (answer lost, then
                        # every resend failed): the next version must list Akua's packages
                        # again, not import a second package under another idempotency key.
                        self._directory.invalidate()
                        raise
                    if imported is not None:
                        return imported
                    known = await self._after_import_conflict(target)
                package_id = known.package_id
            try:
                return await self._create_version(package_id, version, digest, found=found)
            except PackageGone:
                self._directory.forget(target.oci_ref)
                package_id, found = None, True
        raise Rejected(f"package for {target.oci_ref} vanished twice while writing; not retrying")

    async def _import(self, request: VersionRequest) -> WriteResult | None:
        target = request.package
        key = idempotency_key(
            api_url=self._api.endpoint.url,
            workspace=self._api.endpoint.workspace,
            oci_ref=target.oci_ref,
            semver=request.semver,
            digest=request.digest,
        )
        answer = await self._api.import_package(request.import_body, key)
        if isinstance(answer, Conflict):
            return None
        package = known_package(answer.body)
        if package is None:
            raise TransientFailure(f"import of {target.oci_ref}: Akua's answer has no package id")
        self._directory.remember(
            KnownPackage(package_id=package.package_id, name=package.name, oci_ref=target.oci_ref)
        )
        latest = answer.body.get("latest_version_id")
        return WriteResult(
            outcome=Outcome.IMPORTED,
            reason="package created",
            package_id=package.package_id,
            version_id=latest if isinstance(latest, str) else None,
            package_found=True,
        )

    async def _after_import_conflict(self, target: PackageTarget) -> KnownPackage:
        known = await self._directory.find_after_conflict(target.oci_ref, target.name)
        if known is None:
            raise Rejected(
                f"Akua answered 409 to importing {target.oci_ref}, but lists no package "
                f"with that oci_ref or the name {target.name!r}"
            )
        if known.oci_ref is not None and known.oci_ref != target.oci_ref:
            raise Rejected(
                f"package name {target.name!r} is taken in Akua by {known.package_id} "
                f"from {known.oci_ref}"
            )
        return known

    async def _create_version(
        self, package_id: str, version: dict[str, Any], digest: str, *, found: bool
    ) -> WriteResult:
        semver = version["semver"]
        sent_before = False  # an earlier try may have reached Akua: look before sending again

        async def attempt() -> Created | Conflict:
            nonlocal sent_before
            if sent_before:
                existing = await self._find_version(package_id, semver)
                if existing is not None:
                    if existing.get("ref") == digest:
                        return Created(existing)
                    return Conflict(f"version {semver} exists")
            try:
                return await self._api.create_version(package_id, version)
            except AmbiguousWrite:
                sent_before = True
                raise

        def classify(exc: Exception) -> Retry | None:
            return Retry("unavailable", exc.reason) if isinstance(exc, AmbiguousWrite) else None

        def give_up(exc: Exception, why: GiveUp) -> BaseException:
            return TransientFailure(f"{why.verdict.reason} (gave up after {why.tries} tries)")

        answer = await retrying(
            attempt, what=f"create version {semver} of {package_id}", policy=self._api.policy,
            classify=classify, give_up=give_up, event="api.retry",
        )
        if isinstance(answer, Created):
            return _version_result(Outcome.IMPORTED, "version created", package_id, answer.body, found)
        existing = await self._find_version(package_id, semver)
        if existing is None:
            raise Rejected(
                f"Akua answered 409 to version {semver} of {package_id} but does not list it "
                f"({answer.message})"
            )
        if existing.get("ref") != digest:
            raise Rejected(
                f"version {semver} exists with a different digest: Akua has {existing.get('ref')}, "
                f"the registry has {digest}"
            )
        return _version_result(
            Outcome.EXISTS, "Akua already has this version", package_id, existing, found
        )

    async def _find_version(self, package_id: str, semver: str) -> dict[str, Any] | None:
        try:
            async for item in self._api.versions(package_id):
                if item.get("semver") == semver:
                    return item
        except Rejected as exc:
            raise TransientFailure(f"cannot list versions of {package_id}: {exc.reason}") from None
        return None


def _version_result(
    outcome: Outcome, reason: str, package_id: str, version: dict[str, Any], found: bool
) -> WriteResult:
    version_id = version.get("id")
    return WriteResult(
        outcome=outcome,
        reason=reason,
        package_id=package_id,
        version_id=version_id if isinstance(version_id, str) else None,
        package_found=found,
    )

"""What the Akua double answers, independent of the HTTP plumbing.

``AkuaCore.handle`` turns one request (method, target, headers, body) into
one ``Reply``.  One lock guards the store, the log, the random generator and
the rate-limit bucket; sleeping (``latency_s``) and calling a user's
``expected`` function happen outside it, so slow requests overlap.
"""

from __future__ import annotations

import hmac
import json
import math
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from crawler.contract import IDEMPOTENCY_KEY_MAX, WORKSPACE_MAX

from .store import Duplicates, IdempotentReply, Page, Store
from .switches import Switches, from_json, published
from .validation import IMPORT_VALIDATOR, VERSION_VALIDATOR, Problem, check
from .wire import (
    ALT_CODES,
    JSON_TYPE,
    Received,
    Refuse,
    Reply,
    Request,
    TokenBucket,
    content_type_ok,
    dumps,
    html_page,
    loose_json,
    one_header,
    paging,
    parse_json_object,
)

# Admin errors always use the default envelope; the token here is never checked.
_ADMIN_SWITCHES: Final = Switches(token="-")
_PREFIX: Final = ["", "v1", "packages"]  # "/v1/packages/..." split on "/"


class AkuaCore:
    """State, switches and request handling of the Akua double."""

    def __init__(
        self,
        switches: Switches,
        *,
        state_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._initial = switches
        self._switches = switches
        self._clock = clock  # for the rate-limit bucket only; tests may drive it
        self._rng = random.Random(switches.seed)
        self._bucket = self._new_bucket(switches)
        self._store = Store(Path(state_file) if state_file is not None else None)
        self._log: list[Received] = []
        self._internal_errors: list[str] = []

    # --- switches -----------------------------------------------------------

    @property
    def switches(self) -> Switches:
        with self._lock:
            return self._switches

    def configure(self, **changes: Any) -> Switches:
        """Change switches at run time; unknown names or bad values raise ValueError."""
        with self._lock:
            new = self._switches.replace(**changes)
            old, self._switches = self._switches, new
            if (old.write_rate_limit, old.write_burst) != (new.write_rate_limit, new.write_burst):
                self._bucket = self._new_bucket(new)
            if "seed" in changes:
                self._rng.seed(new.seed)
            return new

    def _new_bucket(self, sw: Switches) -> TokenBucket | None:
        if sw.write_rate_limit is None:
            return None
        return TokenBucket(sw.write_rate_limit, sw.burst, self._clock())

    def _roll(self, rate: float) -> bool:
        # Caller holds the lock.  No draw at rate 0, so that switching one
        # fault on does not shift the sequence of another.
        return rate > 0 and self._rng.random() < rate

    # --- preloading and inspection -------------------------------------------

    def add_package(
        self,
        name: str,
        oci_ref: str,
        versions: Iterable[tuple[str, str, Mapping[str, Any]]],
        *,
        description: str | None = None,
    ) -> str:
        """Create a package directly (no request, no log entry, no uniqueness check)."""
        rows = [
            {"semver": semver, "ref": ref, "input_schema": dict(schema)}
            for semver, ref, schema in versions
        ]
        if not rows:
            raise ValueError("a package has at least one version")
        if len({r["semver"] for r in rows}) != len(rows):
            raise ValueError("the same semver twice in one package")
        for row in rows:
            body = {"name": name, "oci_ref": oci_ref, "description": description, "version": row}
            if problems := check(IMPORT_VALIDATOR, body):
                raise ValueError("; ".join(f"{p.path}: {p.message}" for p in problems))
        with self._lock:
            pkg, _ = self._store.create_package(
                workspace_id=self._switches.workspace_id,
                name=name,
                oci_ref=oci_ref,
                description=description,
                display_image_url=None,
                version=rows[0],
            )
            for row in rows[1:]:
                self._store.add_version(pkg.id, row)
            self._store.persist()
            return pkg.id

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._log)

    def writes(self) -> list[Received]:
        """Requests that committed something: 201s that created, and commits whose
        answer was dropped (``drop_after_commit_rate``).  Idempotent replays are not."""
        with self._lock:
            return [r for r in self._log if r.created_id is not None]

    def packages(self) -> list[dict[str, Any]]:
        """Every package as the API shows it, oldest first."""
        with self._lock:
            return [p.to_api() for p in self._store.packages.values()]

    def versions(self, package_id: str) -> list[dict[str, Any]]:
        """The versions of one package, oldest first (the API lists newest first)."""
        with self._lock:
            return [v.to_api() for v in self._store.versions.get(package_id, [])]

    def counts(self) -> dict[str, int]:
        """Requests by status ("201", "429", ...), plus "total", "writes", "dropped"."""
        with self._lock:
            statuses = Counter(str(r.status) for r in self._log if r.status is not None)
            out = {
                "total": len(self._log),
                "writes": sum(1 for r in self._log if r.created_id is not None),
                "dropped": sum(1 for r in self._log if r.status is None),
                "429": 0,
            }
            out.update(statuses)
            return out

    def find_duplicates(self) -> Duplicates:
        with self._lock:
            return self._store.duplicates()

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of exceptions inside the double (answered 500): should stay empty."""
        with self._lock:
            return list(self._internal_errors)

    def reset(self, *, switches: bool = False) -> None:
        """Forget packages, versions, keys and the log; ``switches``: back to the start ones."""
        with self._lock:
            if switches:
                self._switches = self._initial
            self._store.clear()
            self._log.clear()
            self._internal_errors.clear()
            self._rng.seed(self._switches.seed)
            self._bucket = self._new_bucket(self._switches)
            self._store.persist()

    def state(self, *, log: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "switches": self.switches.to_json(),
            "counts": self.counts(),
            "duplicates": self.find_duplicates().to_json(),
            "packages": self.packages(),
            "internal_errors": self.internal_errors,
        }
        out["versions"] = {p["id"]: self.versions(p["id"]) for p in out["packages"]}
        if log:
            out["received"] = [
                {
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "headers": r.headers,
                    "body": r.body,
                    "status": r.status,
                    "created_id": r.created_id,
                    "at": r.at,
                }
                for r in self.received
            ]
        return out

    # --- requests ----------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        """Answer one API request and log it before the answer leaves."""
        split = urlsplit(req.target)
        headers: dict[str, list[str]] = {}
        for name, value in req.headers:
            headers.setdefault(name.lower(), []).append(value)
        sw = self.switches  # one consistent snapshot for the whole request
        if sw.latency_s > 0:
            time.sleep(sw.latency_s)
        try:
            reply = self._answer(sw, req.method, split.path, split.query, headers, req.body)
        except Refuse as refusal:
            reply = self._error(sw, refusal.status, refusal.problems, refusal.retry_in)
        except Exception:
            with self._lock:
                self._internal_errors.append(traceback.format_exc())
            reply = self._error(sw, 500, (Problem("internal error in the Akua double"),), None)
        shown = {k: ", ".join(v) for k, v in headers.items()}
        if "authorization" in shown:  # the log may end up in a test report
            bearer = shown["authorization"][:7].lower() == "bearer "
            shown["authorization"] = "Bearer ***" if bearer else "***"
        record = Received(
            method=req.method,
            path=split.path,
            headers=shown,
            body=loose_json(req.body),
            status=None if reply.drop else reply.status,
            query=split.query,
            created_id=reply.created_id,
            at=time.time(),
        )
        with self._lock:
            self._log.append(record)
        return reply

    def _error(
        self,
        sw: Switches,
        status: int,
        problems: Iterable[Problem],
        retry_in: float | None,
    ) -> Reply:
        headers: list[tuple[str, str]] = []
        if retry_in is not None and sw.retry_after is not None:
            seconds = max(1, math.ceil(retry_in))
            if sw.retry_after == "seconds":
                headers.append(("Retry-After", str(seconds)))
            else:  # an HTTP date has whole seconds: round up so it is never early
                when = math.ceil(time.time()) + seconds
                headers.append(("Retry-After", formatdate(when, usegmt=True)))
        if status == 405:
            headers.append(("Allow", "GET, POST"))
        if status in sw.html_error_statuses:  # what a proxy in front would send
            return Reply(status, html_page(status), "text/html; charset=utf-8", headers)
        problems = list(problems)
        if sw.alt_error_envelope:
            message = "; ".join(p.message for p in problems)
            body: dict[str, Any] = {
                "error": {"code": ALT_CODES.get(status, "error"), "message": message}
            }
        else:
            errors = []
            for p in problems:
                entry: dict[str, Any] = {"code": status, "message": p.message}
                if p.path is not None:
                    entry["path"] = list(p.path)
                errors.append(entry)
            body = {"success": False, "errors": errors, "result": {}}
        return Reply(status, dumps(body), JSON_TYPE, headers)

    def _answer(
        self,
        sw: Switches,
        method: str,
        path: str,
        query: str,
        headers: dict[str, list[str]],
        body: bytes,
    ) -> Reply:
        with self._lock:
            fault = self._rng.choice((500, 502, 503)) if self._roll(sw.error_5xx_rate) else 0
            if not fault and self._roll(sw.force_429_rate):
                fault = 429
        if fault == 429:
            raise Refuse(429, Problem("too many requests"), retry_in=1.0)
        if fault:
            raise Refuse(fault, Problem(HTTPStatus(fault).phrase.lower()))

        self._authorize(sw, headers)
        # The colon of the custom method may arrive percent-encoded.
        path = path.replace("%3A", ":").replace("%3a", ":")
        parts = path.split("/")
        if path == "/v1/packages:import":
            allowed = "POST"
        elif path == "/v1/packages" or (len(parts) == 4 and parts[:3] == _PREFIX and parts[3]):
            allowed = "GET"
        elif len(parts) == 5 and parts[:3] == _PREFIX and parts[3] and parts[4] == "versions":
            allowed = "GET POST"
        else:
            raise Refuse(404, Problem(f"no such route: {path}"))
        if method not in allowed.split():
            raise Refuse(405, Problem(f"{method} not allowed here"))

        if method == "GET":
            if path == "/v1/packages":
                after, limit = paging(query, "pkg")
                with self._lock:
                    page = self._store.list_packages(after or 0, limit)
                return Reply(200, dumps(page.to_api()))
            package_id = parts[3]
            if len(parts) == 4:
                with self._lock:
                    pkg = self._store.packages.get(package_id)
                    found = pkg.to_api() if pkg else None
                if found is None:
                    raise Refuse(404, Problem(f"package {package_id!r} not found", ("path", "id")))
                return Reply(200, dumps(found))
            before, limit = paging(query, "ver:" + package_id)
            with self._lock:
                exists = package_id in self._store.packages
                vpage: Page | None = (
                    self._store.list_versions(package_id, before, limit) if exists else None
                )
            if vpage is None:
                raise Refuse(404, Problem(f"package {package_id!r} not found", ("path", "id")))
            return Reply(200, dumps(vpage.to_api()))

        with self._lock:
            wait = self._bucket.take(self._clock()) if self._bucket is not None else 0.0
        if wait > 0:
            raise Refuse(429, Problem("write rate limit exceeded"), retry_in=wait)
        if not content_type_ok(headers.get("content-type", [])):
            raise Refuse(
                415, Problem("Content-Type must be application/json", ("header", "content-type"))
            )
        doc = parse_json_object(body)
        if path == "/v1/packages:import":
            return self._import(sw, headers, doc)
        return self._create_version(sw, parts[3], doc)

    def _authorize(self, sw: Switches, headers: dict[str, list[str]]) -> None:
        values = headers.get("authorization", [])
        scheme, _, token = (values[0] if len(values) == 1 else "").partition(" ")
        expected = sw.token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise Refuse(401, Problem("missing or invalid bearer token", ("header", "authorization")))
        context = one_header(headers, "akua-context")
        if context is not None:
            if not 1 <= len(context) <= WORKSPACE_MAX:
                raise Refuse(
                    422,
                    Problem(
                        f"akua-context must be 1..{WORKSPACE_MAX} characters",
                        ("header", "akua-context"),
                    ),
                )
            if sw.required_workspace is not None and context != sw.required_workspace:
                raise Refuse(
                    403, Problem(f"no access to workspace {context!r}", ("header", "akua-context"))
                )

    def _verify(
        self, sw: Switches, oci_ref: str, version: dict[str, Any], at: tuple[str, ...]
    ) -> None:
        """Compare ref and input_schema with the published artifact, when configured."""
        if sw.expected is None:
            return
        semver = version["semver"]
        artifact = published(sw.expected, oci_ref, semver)
        if artifact is None:
            raise Refuse(
                422, Problem(f"no published artifact {oci_ref} {semver}", (*at, "semver"))
            )
        ref, schema = artifact
        problems = []
        if version["ref"] != ref:
            problems.append(Problem("ref does not match the published artifact", (*at, "ref")))
        if version["input_schema"] != dict(schema):
            problems.append(
                Problem("input_schema does not match the published artifact", (*at, "input_schema"))
            )
        if problems:
            raise Refuse(422, *problems)

    def _import(self, sw: Switches, headers: dict[str, list[str]], doc: dict[str, Any]) -> Reply:
        key = one_header(headers, "idempotency-key")
        if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
            raise Refuse(
                422,
                Problem(
                    f"idempotency-key must be 1..{IDEMPOTENCY_KEY_MAX} characters",
                    ("header", "idempotency-key"),
                ),
            )
        if problems := check(IMPORT_VALIDATOR, doc):
            raise Refuse(422, *problems)
        self._verify(sw, doc["oci_ref"], doc["version"], ("body", "version"))
        fingerprint = json.dumps(doc, sort_keys=True)
        with self._lock:
            if self._roll(sw.drop_before_commit_rate):
                return Reply(0, drop=True)
            if key is not None and (seen := self._store.idempotency.get(key)) is not None:
                if seen.fingerprint != fingerprint:
                    raise Refuse(
                        422,
                        Problem(
                            "idempotency-key was used with a different body",
                            ("header", "idempotency-key"),
                        ),
                    )
                # The first answer again: not a new write.
                return Reply(201, seen.body.encode("ascii"))
            if sw.unique_names and (conflict := self._store.conflict(doc["name"], doc["oci_ref"])):
                raise Refuse(409, Problem(*conflict))
            pkg, _ = self._store.create_package(
                workspace_id=sw.workspace_id,
                name=doc["name"],
                oci_ref=doc["oci_ref"],
                description=doc.get("description"),
                display_image_url=doc.get("display_image_url"),
                version=doc["version"],
            )
            body = dumps(pkg.to_api())
            if key is not None:
                self._store.idempotency[key] = IdempotentReply(
                    fingerprint=fingerprint, package_id=pkg.id, body=body.decode("ascii")
                )
            self._store.persist()
            drop = self._roll(sw.drop_after_commit_rate)
        return Reply(201, body, drop=drop, created_id=pkg.id)

    def _create_version(self, sw: Switches, package_id: str, doc: dict[str, Any]) -> Reply:
        with self._lock:
            pkg = self._store.packages.get(package_id)
            oci_ref = pkg.oci_ref if pkg is not None else None
        if oci_ref is None:
            raise Refuse(404, Problem(f"package {package_id!r} not found", ("path", "id")))
        if problems := check(VERSION_VALIDATOR, doc):
            raise Refuse(422, *problems)
        self._verify(sw, oci_ref, doc, ("body",))
        with self._lock:
            if self._roll(sw.drop_before_commit_rate):
                return Reply(0, drop=True)
            if package_id not in self._store.packages:  # reset since the look above
                raise Refuse(404, Problem(f"package {package_id!r} not found", ("path", "id")))
            if self._store.has_semver(package_id, doc["semver"]):
                raise Refuse(
                    409,
                    Problem(
                        f"version {doc['semver']} exists already in {package_id}",
                        ("body", "semver"),
                    ),
                )
            ver = self._store.add_version(package_id, doc)
            body = dumps(ver.to_api())
            self._store.persist()
            drop = self._roll(sw.drop_after_commit_rate)
        return Reply(201, body, drop=drop, created_id=ver.id)

    def transport_error(self, status: int, message: str) -> Reply:
        """An error answered before a request could be read (bad framing); not logged."""
        return self._error(self.switches, status, (Problem(message),), None)

    # --- admin -------------------------------------------------------------

    def admin(self, method: str, target: str, body: bytes) -> Reply:
        """``/_double/...``: no token, no faults, no log: the test's own channel."""
        split = urlsplit(target)
        route = (method, split.path)
        try:
            doc = parse_json_object(body) if body.strip() else {}
            if route == ("GET", "/_double/state"):
                log = parse_qs(split.query).get("log", ["0"])[0] not in ("0", "false", "")
                return Reply(200, dumps(self.state(log=log)))
            if route == ("POST", "/_double/configure"):
                try:
                    new = self.configure(**from_json(doc))
                except (ValueError, TypeError) as exc:
                    raise Refuse(422, Problem(str(exc), ("body",))) from exc
                return Reply(200, dumps({"switches": new.to_json()}))
            if route == ("POST", "/_double/reset"):
                self.reset(switches=doc.get("switches") is True)
                return Reply(200, dumps({"switches": self.switches.to_json()}))
            if route == ("POST", "/_double/packages"):
                try:
                    versions = [
                        (v["semver"], v["ref"], v["input_schema"]) for v in doc["versions"]
                    ]
                    package_id = self.add_package(
                        doc["name"], doc["oci_ref"], versions, description=doc.get("description")
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise Refuse(422, Problem(f"bad package: {exc}", ("body",))) from exc
                return Reply(201, dumps({"id": package_id}))
            raise Refuse(404, Problem(f"no such admin route: {method} {split.path}"))
        except Refuse as refusal:
            # Plain envelope whatever the switches say: the test harness must read it.
            return self._error(_ADMIN_SWITCHES, refusal.status, refusal.problems, None)

"""The Akua double's switches: what it enforces and which faults it injects.

One frozen value, swapped whole under the double's lock by ``configure``,
so a request in flight reads one consistent set of switches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

#: What the published artifact says for (oci_ref, semver): (ref, input_schema).
Published: TypeAlias = tuple[str, Mapping[str, Any]]
#: A function or a table; None (or a missing key) means "no such artifact".
Expected: TypeAlias = (
    Callable[[str, str], Published | None] | Mapping[tuple[str, str], Published]
)
RetryAfter: TypeAlias = Literal["seconds", "date"] | None

_RATES = (
    "force_429_rate",
    "error_5xx_rate",
    "drop_after_commit_rate",
    "drop_before_commit_rate",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Switches:
    token: str
    unique_names: bool = True  # False: no 409 on import at all, neither name nor oci_ref
    required_workspace: str | None = None  # a different akua-context -> 403
    workspace_id: str = "ws_akuadouble"  # what packages report as their workspace
    write_rate_limit: float | None = None  # POSTs per second, token bucket
    write_burst: float | None = None  # bucket size; None: max(1, rate / 10)
    retry_after: RetryAfter = "seconds"  # Retry-After on 429, or none
    force_429_rate: float = 0.0
    error_5xx_rate: float = 0.0
    latency_s: float = 0.0
    drop_after_commit_rate: float = 0.0
    drop_before_commit_rate: float = 0.0
    seed: int | None = None
    alt_error_envelope: bool = False  # {"error": {"code": str, "message"}} instead
    html_error_statuses: frozenset[int] = field(default_factory=frozenset)
    expected: Expected | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("token must be a non-empty string")
        for name in ("unique_names", "alt_error_envelope"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        for name in ("required_workspace",):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null")
        for name in _RATES:
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if _number("latency_s", self.latency_s) < 0:
            raise ValueError("latency_s must be >= 0")
        if self.write_rate_limit is not None and _number("write_rate_limit", self.write_rate_limit) <= 0:
            raise ValueError("write_rate_limit must be > 0 or null")
        if self.write_burst is not None and _number("write_burst", self.write_burst) < 1:
            raise ValueError("write_burst must be >= 1 or null")
        if self.retry_after not in ("seconds", "date", None):
            raise ValueError("retry_after must be 'seconds', 'date' or null")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be an integer or null")
        statuses = self.html_error_statuses
        if not all(isinstance(s, int) and 400 <= s <= 599 for s in statuses):
            raise ValueError("html_error_statuses must be HTTP error statuses (400..599)")
        # Accept any iterable of statuses, keep a frozenset (hashable, immutable).
        object.__setattr__(self, "html_error_statuses", frozenset(statuses))

    @property
    def burst(self) -> float:
        if self.write_rate_limit is None:
            return math.inf
        return self.write_burst if self.write_burst is not None else max(1.0, self.write_rate_limit / 10)

    def replace(self, **changes: Any) -> Switches:
        """A copy with ``changes`` applied; unknown names or bad values raise ValueError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown switches: {', '.join(sorted(unknown))}")
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:  # e.g. an unhashable value for html_error_statuses
            raise ValueError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        out["token"] = "***"  # the state endpoint needs no token, so it must not leak one
        out["html_error_statuses"] = sorted(self.html_error_statuses)
        expected = self.expected
        if expected is None:
            out["expected"] = None
        elif isinstance(expected, Mapping):
            out["expected"] = [
                {"oci_ref": o, "semver": s, "ref": r, "input_schema": dict(i)}
                for (o, s), (r, i) in expected.items()
            ]
        else:
            out["expected"] = "<callable>"
        return out


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number")
    return float(value)


def from_json(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Switch changes as JSON (admin endpoint, state) -> keyword arguments for ``replace``."""
    kwargs = dict(changes)
    if "html_error_statuses" in kwargs:
        statuses = kwargs["html_error_statuses"]
        if not isinstance(statuses, list):
            raise ValueError("html_error_statuses must be a list of statuses")
        kwargs["html_error_statuses"] = frozenset(statuses)
    if kwargs.get("expected") is not None:
        rows = kwargs["expected"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("expected must be a list of {oci_ref, semver, ref, input_schema}")
        try:
            kwargs["expected"] = {
                (r["oci_ref"], r["semver"]): (r["ref"], r["input_schema"]) for r in rows
            }
        except (KeyError, TypeError) as exc:
            raise ValueError(f"expected: bad row ({exc})") from exc
    return kwargs


def published(expected: Expected, oci_ref: str, semver: str) -> Published | None:
    if isinstance(expected, Mapping):
        return expected.get((oci_ref, semver))
    return expected(oci_ref, semver)

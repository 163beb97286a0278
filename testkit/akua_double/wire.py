"""The pieces of a request and an answer, and how the double reads them strictly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs

from crawler.contract import PAGE_LIMIT_MAX

from .store import CursorError, decode_cursor
from .validation import Problem

PAGE_LIMIT_DEFAULT: Final = 50
JSON_TYPE: Final = "application/json"

#: Codes of the alternative envelope ``{"error": {"code": str, "message": str}}``.
ALT_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # as on the request line: path and query
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False  # close the connection abruptly instead of answering
    created_id: str | None = None  # what this request committed, if anything


@dataclass(frozen=True, slots=True)
class Received:
    """One API request as the double saw it, and how it ended."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; Authorization masked
    body: Any  # parsed JSON, or None when absent or unparseable
    status: int | None  # None: the connection was dropped without an answer
    query: str = ""
    created_id: str | None = None  # id of the package or version this request committed
    at: float = 0.0  # time.time() when answered


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Refuse(Exception):
    """Raised inside request handling to answer with an error reply."""

    def __init__(self, status: int, *problems: Problem, retry_in: float | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.problems = problems
        self.retry_in = retry_in


def dumps(value: Any) -> bytes:
    # ensure_ascii: a body may carry lone surrogates ("\ud800"), which are
    # valid JSON but cannot be encoded as UTF-8.
    return json.dumps(value).encode("ascii")


def html_page(status: int) -> bytes:
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, strictly: UTF-8, RFC 8259, no duplicate keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refuse(422, Problem("body is not valid UTF-8", ("body",))) from exc
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise Refuse(422, Problem(f"body is not valid JSON: {exc}", ("body",))) from exc
    if not isinstance(value, dict):
        raise Refuse(422, Problem("body must be a JSON object", ("body",)))
    return value


def loose_json(raw: bytes) -> Any:
    """For the log only: whatever the body was, if it parses at all."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def content_type_ok(values: list[str]) -> bool:
    if len(values) != 1:
        return False
    media, *params = values[0].split(";")
    if media.strip().lower() != JSON_TYPE:
        return False
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return False
    return True


def one_header(headers: Mapping[str, list[str]], name: str) -> str | None:
    values = headers.get(name, [])
    if len(values) > 1:
        raise Refuse(422, Problem(f"header {name} given more than once", ("header", name)))
    return values[0] if values else None


def paging(query: str, kind: str) -> tuple[int | None, int]:
    params = parse_qs(query, keep_blank_values=True)
    for name in ("cursor", "limit"):
        if len(params.get(name, [])) > 1:
            raise Refuse(422, Problem(f"{name} given more than once", ("query", name)))
    limit = PAGE_LIMIT_DEFAULT
    if "limit" in params:
        text = params["limit"][0]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= PAGE_LIMIT_MAX:
            raise Refuse(
                422,
                Problem(f"limit must be an integer within 1..{PAGE_LIMIT_MAX}", ("query", "limit")),
            )
        limit = int(text)
    cursor = params.get("cursor", [""])[0]
    if not cursor:  # an empty cursor is the first page: clients often send "cursor="
        return None, limit
    try:
        return decode_cursor(kind, cursor), limit
    except CursorError as exc:
        raise Refuse(422, Problem("invalid cursor", ("query", "cursor"))) from exc

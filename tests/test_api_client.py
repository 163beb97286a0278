"""The Akua client's retry and failure classification, against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from crawler.api.client import AkuaClient, ApiEndpoint, Conflict, Created
from crawler.backoff import RetryPolicy
from crawler.config import Secret
from crawler.errors import Rejected, RunAborted, TransientFailure
from crawler.ratelimit import AdaptiveRateLimiter

pytestmark = pytest.mark.anyio
TOKEN = "sk_akua_unit_test_token_123"
FAST = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.001)
BODY = {"name": "team/app", "oci_ref": "oci://r:1/team/app", "description": None,
        "version": {"semver": "1.0.0", "ref": "sha256:" + "a" * 64, "input_schema": {}}}
PACKAGE = {"id": "pkg_1", "name": "team/app", "latest_version_id": "ver_1",
           "source": {"kind": "oci", "oci_ref": "oci://r:1/team/app"}}


def envelope(code: int, message: str) -> dict[str, object]:
    return {"success": False, "errors": [{"code": code, "message": message}], "result": {}}


def client(handler: Callable[[httpx.Request], httpx.Response]) -> AkuaClient:
    endpoint = ApiEndpoint(url="https://api.test/v1", token=Secret(TOKEN), workspace="ws_1")
    return AkuaClient(endpoint, AdaptiveRateLimiter(1000, 100), policy=FAST,
                      transport=httpx.MockTransport(handler))


async def test_import_retries_5xx_with_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503, text="<html>busy</html>")
        return httpx.Response(201, json=PACKAGE)

    async with client(handler) as api:
        answer = await api.import_package(BODY, "akc1-key")
    assert isinstance(answer, Created) and answer.body["id"] == "pkg_1"
    assert {r.headers["idempotency-key"] for r in seen} == {"akc1-key"}
    assert seen[0].url.path == "/v1/packages:import"
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["akua-context"] == "ws_1"
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == BODY


async def test_retry_after_pauses_the_limiter() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, json=envelope(429, "slow"))
        return httpx.Response(201, json=PACKAGE)

    async with client(handler) as api:
        await api.import_package(BODY, "k")
        stats = api._limiter.statistics()
    assert calls == 2
    assert stats.throttled == 1 and stats.paused_s >= 1.0
    assert stats.rate < stats.ceiling


async def test_ambiguous_create_version_looks_before_resending() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            raise httpx.ReadTimeout("read timed out", request=request)
        return httpx.Response(200, json={"data": [{"id": "ver_9", "semver": "1.0.0",
                                                   "ref": "sha256:abc"}],
                                         "has_more": False, "next_cursor": None})

    async def look() -> Created | Conflict | None:
        async for version in api.versions("pkg_1"):
            if version["semver"] == "1.0.0":
                return Created(version)
        return None

    async with client(handler) as api:
        answer = await api.create_version("pkg_1", BODY["version"], check_after_ambiguous=look)
    assert posts == 1
    assert isinstance(answer, Created) and answer.body["id"] == "ver_9"


async def test_connect_error_is_resent_without_looking() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        if posts == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={"id": "ver_1"})

    async def look() -> Created | Conflict | None:
        raise AssertionError("a request that never left needs no look")

    async with client(handler) as api:
        answer = await api.create_version("pkg_1", BODY["version"], check_after_ambiguous=look)
    assert isinstance(answer, Created) and posts == 2


async def test_409_is_a_conflict() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=envelope(409, "version exists"))

    async def look() -> None:
        return None

    async with client(handler) as api:
        answer = await api.create_version("pkg_1", BODY["version"], check_after_ambiguous=look)
    assert answer == Conflict("HTTP 409: 409 version exists")


async def test_401_aborts_and_never_shows_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A hostile server echoing the header back.
        return httpx.Response(401, json=envelope(401, f"bad token {request.headers['authorization']}"))

    async with client(handler) as api:
        with pytest.raises(RunAborted) as caught:
            await api.import_package(BODY, "k")
    assert TOKEN not in str(caught.value)
    assert "refused the token" in str(caught.value)


async def test_422_is_rejected_with_akua_message_and_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json={"error": {"code": "schema_mismatch",
                                                   "message": "input_schema differs"}})

    async with client(handler) as api:
        with pytest.raises(Rejected, match="schema_mismatch input_schema differs"):
            await api.import_package(BODY, "k")
    assert calls == 1


async def test_5xx_gives_up_after_the_policy() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="")

    async with client(handler) as api:
        with pytest.raises(TransientFailure, match="gave up after 3 tries"):
            await api.import_package(BODY, "k")
    assert calls == 3


async def test_pages_follow_cursor_and_stop_on_repeat() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["limit"] == "100"
        cursor = request.url.params.get("cursor")
        page = {None: ("p1", "c1"), "c1": ("p2", "c1")}[cursor]
        return httpx.Response(200, json={"data": [{"id": page[0], "name": page[0]}],
                                         "has_more": True, "next_cursor": page[1]})

    async with client(handler) as api:
        seen = []
        with pytest.raises(TransientFailure, match="cursor repeated"):
            async for package in api.packages():
                seen.append(package["id"])
    assert seen == ["p1", "p2"]

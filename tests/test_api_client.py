"""The Akua client's retry and failure classification, against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from structlog.testing import capture_logs

from crawler.api.client import AkuaClient, AmbiguousWrite, ApiEndpoint, Conflict, Created, PackageGone
from crawler.api.directory import PackageDirectory
from crawler.config import Secret
from crawler.errors import Rejected, RunAborted, TransientFailure
from crawler.importer import Importer
from crawler.outcomes import Outcome
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.request import PackageTarget, build_request
from crawler.retry import RETRY_AFTER_MAX_S, RetryPolicy

pytestmark = pytest.mark.anyio
TOKEN = "sk_akua_unit_test_token_123"
FAST = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.001)
BODY = {"name": "team/app", "oci_ref": "oci://r:1/team/app", "description": None,
        "version": {"semver": "1.0.0", "ref": "sha256:" + "a" * 64, "input_schema": {}}}
PACKAGE = {"id": "pkg_1", "name": "team/app", "latest_version_id": "ver_1",
           "source": {"kind": "oci", "oci_ref": "oci://r:1/team/app"}}


REQUEST = build_request(PackageTarget(name="team/app", oci_ref="oci://r:1/team/app", description=None),
                        semver="1.0.0", digest="sha256:" + "a" * 64, input_schema={})


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


async def test_a_429_the_limiter_takes_for_noise_makes_only_its_request_wait() -> None:
    """One 429 among hundreds admitted: that request waits its Retry-After, the pool goes on."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 301:
            return httpx.Response(429, headers={"Retry-After": "1"}, json=envelope(429, "slow"))
        return httpx.Response(201, json={"id": f"ver_{calls}", "semver": "1.0.0"})

    async with client(handler) as api:
        with capture_logs() as logs:
            for _ in range(301):
                await api.create_version("pkg_1", BODY["version"])
        stats = api._limiter.statistics()
    assert calls == 302  # the refused one was sent again
    assert stats.throttled == 1 and stats.pauses == 0 and stats.paused_s == 0
    assert stats.rate == stats.ceiling
    assert not [e for e in logs if e["event"] == "rate.paused"]
    waited = [e for e in logs if e["event"] == "api.retry.paused"]
    assert len(waited) == 1 and waited[0]["seconds"] == 1 and waited[0]["reason"] == "Retry-After"


async def test_ambiguous_create_version_is_left_to_the_caller() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        raise httpx.ReadTimeout("read timed out", request=request)

    async with client(handler) as api:
        with pytest.raises(AmbiguousWrite, match=r"create version 1\.0\.0 of pkg_1: timed out"):
            await api.create_version("pkg_1", BODY["version"])
    assert posts == 1  # not resent blindly: it may have been committed


async def test_the_importer_looks_before_resending_an_ambiguous_create_version() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            raise httpx.ReadTimeout("read timed out", request=request)
        return httpx.Response(200, json={"data": [{"id": "ver_9", "semver": "1.0.0",
                                                   "ref": "sha256:" + "a" * 64}],
                                         "has_more": False, "next_cursor": None})

    async with client(handler) as api:
        result = await Importer(api, PackageDirectory(api)).write(REQUEST, package_id="pkg_1")
    assert posts == 1
    assert result.outcome is Outcome.IMPORTED and result.version_id == "ver_9"


async def test_the_importer_resends_when_the_look_finds_nothing() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            if posts == 1:
                return httpx.Response(502, text="bad gateway")  # after sending: ambiguous
            return httpx.Response(201, json={"id": "ver_2", "semver": "1.0.0"})
        return httpx.Response(200, json={"data": [], "has_more": False, "next_cursor": None})

    async with client(handler) as api:
        result = await Importer(api, PackageDirectory(api)).write(REQUEST, package_id="pkg_1")
    assert posts == 2 and result.version_id == "ver_2"


async def test_connect_error_is_resent_without_looking() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        assert request.method == "POST", "a request that never left needs no look"
        posts += 1
        if posts == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={"id": "ver_1"})

    async with client(handler) as api:
        answer = await api.create_version("pkg_1", BODY["version"])
    assert isinstance(answer, Created) and posts == 2


async def test_409_is_a_conflict() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=envelope(409, "version exists"))

    async with client(handler) as api:
        answer = await api.create_version("pkg_1", BODY["version"])
    assert answer == Conflict("HTTP 409: 409 version exists")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_aborts_the_run_naming_the_url(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Location": "https://elsewhere.test/v1/packages"})

    async with client(handler) as api:
        with pytest.raises(RunAborted, match=f"redirect \\({status}\\).*check api_url"):
            await api.import_package(BODY, "k")


@pytest.mark.parametrize("call", ["list", "import"])
async def test_a_404_that_says_nothing_about_the_artifact_aborts_the_run(call: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>Not Found</html>")

    async with client(handler) as api:
        with pytest.raises(RunAborted, match="the API URL is wrong; check api_url"):
            if call == "list":
                async for _ in api.packages():
                    pass
            else:
                await api.import_package(BODY, "k")


async def test_a_404_on_a_package_version_list_means_the_package_is_gone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=envelope(404, "no such package"))

    async with client(handler) as api:
        with pytest.raises(PackageGone):
            async for _ in api.versions("pkg_1"):
                pass


async def test_a_retry_after_beyond_the_cap_makes_akua_unavailable_for_the_run() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"Retry-After": str(int(RETRY_AFTER_MAX_S) + 1)})

    async with client(handler) as api:
        with capture_logs() as logs:
            with pytest.raises(TransientFailure, match="longer than the 300 s a run waits"):
                await api.import_package(BODY, "k")
            with pytest.raises(TransientFailure, match="unavailable for this run"):
                await api.create_version("pkg_1", BODY["version"])
    assert calls == 1  # no silent wait, and nothing more sent
    assert not [e for e in logs if e["event"] == "rate.paused"]
    assert [e["event"] for e in logs if e["event"] == "rate.closed"] == ["rate.closed"]


async def test_a_retry_after_within_the_cap_pauses_the_pool_and_logs_it() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(201, json=PACKAGE)

    async with client(handler) as api:
        with capture_logs() as logs:
            await api.import_package(BODY, "k")
    paused = [e for e in logs if e["event"] == "rate.paused"]
    assert paused and paused[0]["seconds"] == 0 and paused[0]["reason"] == "Retry-After"


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

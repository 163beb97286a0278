"""The Akua client's connection pool: sized by Little's law, connections reused, faults mapped.

Against the real Akua double on loopback (latency injected by the double).
"""

from __future__ import annotations

import math
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from crawler.api.client import POOL_HEADROOM, POOL_MAX, POOL_MIN, AkuaClient, ApiEndpoint, pool_size
from crawler.api.transport import LeanPool
from crawler.config import Secret
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.retry import instant_retries
from testkit.akua_double import AkuaDouble
from testkit.serving import serve_in_thread, stop_serving

pytestmark = pytest.mark.anyio
TOKEN = "sk_akua_pool_test"


def test_pool_size_is_rate_times_latency_with_headroom() -> None:
    assert pool_size(100, 0.2) == math.ceil(100 * 0.2 * POOL_HEADROOM) + POOL_MIN
    assert pool_size(1000, 0.2) == math.ceil(1000 * 0.2 * POOL_HEADROOM) + POOL_MIN
    assert pool_size(1, 0.0) == POOL_MIN
    assert pool_size(10_000, 5.0) == POOL_MAX
    assert pool_size(100, None) == pool_size(100, 0.2)  # before any answer: 200 ms assumed


async def test_the_pool_follows_the_observed_latency_and_reuses_connections(make_akua) -> None:
    akua: AkuaDouble = make_akua(token=TOKEN, latency_s=0.3)
    limiter = AdaptiveRateLimiter(200, 10)
    api = AkuaClient(ApiEndpoint(url=akua.url, token=Secret(TOKEN)), limiter)
    async with api:
        async def list_once() -> None:
            async for _ in api.packages():
                pass

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(150):
                    group.start_soon(list_once)
        stats = api.statistics()
    assert limiter.latency_s is not None and limiter.latency_s >= 0.3
    # Little's law at 200/s and >= 300 ms: at least 60 in flight, with headroom.
    assert stats.pool_size >= math.ceil(200 * 0.3 * POOL_HEADROOM) + POOL_MIN
    assert stats.requests == 150
    assert 1 <= stats.connections_opened <= stats.pool_size  # kept alive and reused


async def test_a_dropped_connection_is_an_httpx_error_and_is_retried(make_akua) -> None:
    akua: AkuaDouble = make_akua(token=TOKEN, drop_before_commit_rate=0.5, seed=3)
    api = AkuaClient(ApiEndpoint(url=akua.url, token=Secret(TOKEN)), AdaptiveRateLimiter(500, 10))
    body = {"name": "team/app", "oci_ref": "oci://r.test/team/app", "description": None,
            "version": {"semver": "1.0.0", "ref": "sha256:" + "b" * 64, "input_schema": {}}}
    with instant_retries():
        async with api:
            for i in range(10):
                answer = await api.import_package({**body, "name": f"team/app{i}",
                                                   "oci_ref": f"oci://r.test/team/app{i}"}, f"key-{i}")
                assert answer.body["name"] == f"team/app{i}"  # type: ignore[union-attr]
    assert api.statistics().transport_errors > 0  # the drops happened, and were retried


async def test_a_body_over_the_cap_is_refused_not_read() -> None:
    class Big(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Big)
    thread = serve_in_thread(server, "big")
    pool = LeanPool(size=2, ssl_context=httpx.create_ssl_context(), max_body_bytes=10)
    try:
        async with httpx.AsyncClient(transport=pool) as client:
            with pytest.raises(httpx.ReadError, match="over 10 bytes"):
                await client.get(f"http://127.0.0.1:{server.server_address[1]}/")
        pool.resize(7)
        assert pool.size == 7
    finally:
        stop_serving(server, thread)

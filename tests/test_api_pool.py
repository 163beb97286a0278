"""The Akua client's connection pool: sized by Little's law, connections reused, faults mapped.

Against the real Akua double on loopback (latency injected by the double).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import random
import socket
import threading
import warnings
from http.server import ThreadingHTTPServer

import anyio
import httpx
import pytest

from crawler.api.client import (
    POOL_HEADROOM,
    POOL_MAX,
    POOL_MIN,
    AkuaClient,
    AmbiguousWrite,
    ApiEndpoint,
    pool_size,
)
from crawler.api.connection import Connection
from crawler.api.transport import LeanPool
from crawler.api.wire import READ_BUFFER, Wire
from crawler.config import Secret
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.retry import instant_retries
from testkit.akua_double import AkuaDouble
from testkit.drip import DripServer
from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

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
    class Big(LoopbackHandler):
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


@pytest.mark.parametrize("phase", ["read", "write"])
async def test_a_server_that_never_answers_or_never_reads_times_out_in_that_phase(phase: str) -> None:
    """A socket that listens and never accepts: the kernel takes the connection and the
    request, then nothing comes back (read), or a body larger than the socket buffers
    can never be written (write).  Each ends in httpx's timeout for its phase."""
    listener = socket.create_server(("127.0.0.1", 0))
    pool = LeanPool(size=2, ssl_context=None, max_body_bytes=1000)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/x"
    timeout = httpx.Timeout(30.0, read=0.2) if phase == "read" else httpx.Timeout(30.0, write=0.2)
    expected = httpx.ReadTimeout if phase == "read" else httpx.WriteTimeout
    said = "reading" if phase == "read" else "writing"
    # Unaccepted, the connection keeps its initial receive buffer (tcp_rmem's middle value)
    # and the sender's is at most tcp_wmem's maximum (4 MiB by default): 24 MiB never fits.
    body = b"" if phase == "read" else b"x" * (24 << 20)
    try:
        async with httpx.AsyncClient(transport=pool, timeout=timeout) as client:
            with anyio.fail_after(20), pytest.raises(expected, match=said):
                await client.post(url, content=body)
    finally:
        listener.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
async def test_a_dripping_akua_cannot_outlast_the_whole_exchange_deadline(phase: str) -> None:
    """One byte every 50 ms never trips a per-read timeout; the exchange's own deadline
    (twice the endpoint's timeout) ends the write, which may have been committed."""
    with DripServer(phase=phase) as drip:
        api = AkuaClient(ApiEndpoint(url=f"http://{drip.host}/v1", token=Secret(TOKEN), timeout_s=0.5),
                         AdaptiveRateLimiter(100, 10))
        async with api:
            # "(TimeoutError)": the whole exchange's deadline, not a per-read ReadTimeout.
            with anyio.fail_after(20), pytest.raises(AmbiguousWrite, match=r"timed out \(TimeoutError\)"):
                await api.create_version("pkg_1", {"semver": "1.0.0", "ref": "sha256:" + "c" * 64,
                                                   "input_schema": {}})
        assert drip.requests == 1  # not resent blindly
        assert drip.closed_by_client.wait(20)


async def test_the_direct_route_sends_what_the_httpx_client_would() -> None:
    """Writes bypass httpx.AsyncClient on the direct route: same headers, body and URL."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    class Recording(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            answer = (b'{"id": "ver_1", "package_id": "pkg_1", "semver": "1.0.0"}'
                      if "/versions" in self.path else
                      b'{"id": "pkg_1", "name": "team/app", "latest_version": {"id": "ver_1"}}')
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    thread = serve_in_thread(server, "recording")
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    api = AkuaClient(ApiEndpoint(url=url, token=Secret(TOKEN), workspace="ws_1"),
                     AdaptiveRateLimiter(500, 10))
    body = {"semver": "1.0.0", "ref": "sha256:" + "c" * 64, "input_schema": {"type": "object"}}
    try:
        with instant_retries():
            async with api:
                await api.import_package({"name": "team/app", "oci_ref": "oci://r.test/team/app",
                                          "description": "é", "version": body}, "akc1-key")
                for _ in range(2):  # the second from the cached URL
                    await api.create_version("pkg/1", body)
    finally:
        stop_serving(server, thread)
    assert [(method, path) for method, path, _, _ in seen] == [
        ("POST", "/v1/packages:import"), ("POST", "/v1/packages/pkg%2F1/versions"),
        ("POST", "/v1/packages/pkg%2F1/versions"),
    ]
    for _, _, headers, content in seen:
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["akua-context"] == "ws_1"
        assert headers["accept"] == "application/json"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("akua-crawler/")
        assert headers["host"] == f"127.0.0.1:{server.server_address[1]}"
        assert headers["content-length"] == str(len(content))
    assert seen[0][2]["idempotency-key"] == "akc1-key"
    assert "idempotency-key" not in seen[1][2]
    assert '"description": "é"' in seen[0][3].decode()


@pytest.mark.parametrize("phase", ["write", "read"])
async def test_the_systems_own_timeout_on_the_socket_is_httpxs_timeout(phase: str) -> None:
    """ETIMEDOUT from the kernel (Python's TimeoutError, an OSError) in either phase is
    httpx's timeout for that phase, as anyio.fail_after's handling made it before.  The
    kernel cannot be made to time out on loopback at will: a stream stub stands in."""

    class TimingOut(anyio.abc.ByteStream):
        async def send(self, item: bytes) -> None:
            if phase == "write":
                raise TimeoutError(110, "Connection timed out")

        async def receive(self, max_bytes: int = 65536) -> bytes:
            raise TimeoutError(110, "Connection timed out")

        async def send_eof(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/x", content=b"{}")
    connection = Connection(TimingOut(), None)
    expected = httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout
    with pytest.raises(expected):
        await connection.exchange(request, request.headers.raw, b"{}", {}, 1000)


async def test_a_connection_the_server_closed_a_moment_ago_is_not_reused() -> None:
    """A server that ends a connection after one answer, without ``Connection: close``,
    while the event loop is busy: the loop has not run the socket's read callback yet,
    so only the socket knows.  The next request goes on a new connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    close_now, closed = threading.Event(), threading.Event()

    def serve() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65_536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                close_now.wait(10)
            closed.set()

    server = threading.Thread(target=serve, name="closes-after-one", daemon=True)
    server.start()
    pool = LeanPool(size=2, ssl_context=None, max_body_bytes=100)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        async with httpx.AsyncClient(transport=pool) as client:
            assert (await client.get(url)).text == "ok"
            close_now.set()
            assert closed.wait(10)  # on the loop's thread: the loop sees nothing meanwhile
            close_now.clear()
            assert (await client.get(url)).text == "ok"
            close_now.set()
    finally:
        server.join(10)
        listener.close()
    assert pool.opened == 2


class _RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append("write")

    def is_closing(self) -> bool:
        return "abort" in self.calls or "close" in self.calls

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.calls.append("abort")

    def close(self) -> None:
        self.calls.append("close")


def _wire() -> tuple[Wire, _RecordingTransport]:
    wire, transport = Wire(), _RecordingTransport()
    wire.connection_made(transport)
    return wire, transport


async def test_the_wire_reads_ahead_at_most_its_buffer() -> None:
    """Reading pauses once more than READ_BUFFER bytes wait unread, and resumes when
    the reader has taken them down to half; nothing is lost or reordered."""
    wire, transport = _wire()
    sent = bytes(range(256)) * (READ_BUFFER // 256 * 3)
    for at in range(0, len(sent), 65_536):
        wire.data_received(sent[at:at + 65_536])
    assert transport.calls == ["pause"]
    got = b""
    while len(got) < len(sent):
        got += await wire.receive(65_536)
    assert got == sent
    assert transport.calls == ["pause", "resume"]
    wire.eof_received()
    with pytest.raises(anyio.EndOfStream):
        await wire.receive()
    assert wire.finished


async def test_the_wire_says_how_the_connection_ended() -> None:
    broken, _ = _wire()
    broken.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(anyio.BrokenResourceError) as raised:
        await broken.receive()
    assert isinstance(raised.value.__cause__, ConnectionResetError)
    with pytest.raises(anyio.BrokenResourceError):
        await broken.send(b"x")
    closed, transport = _wire()
    await closed.aclose()
    assert transport.calls == ["close"]  # plain TCP, nothing queued: an orderly close
    with pytest.raises(anyio.ClosedResourceError):
        await closed.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await closed.send(b"x")


async def test_a_cancelled_read_leaves_the_wire_usable_and_a_paused_write_waits() -> None:
    wire, transport = _wire()
    with anyio.move_on_after(0.01) as waited:
        await wire.receive()
    assert waited.cancelled_caught
    wire.data_received(b"late")
    assert await wire.receive() == b"late"
    wire.pause_writing()  # the transport's buffer is over its high-water mark
    async with anyio.create_task_group() as group:
        sent = anyio.Event()

        async def send() -> None:
            await wire.send(b"more")
            sent.set()

        group.start_soon(send)
        await anyio.wait_all_tasks_blocked()
        assert not sent.is_set()  # waits for room
        wire.resume_writing()
    assert sent.is_set()
    assert transport.calls.count("write") == 1


@pytest.mark.parametrize("phase", ["write", "read"])
async def test_the_kernels_timeout_under_the_wire_is_httpxs_timeout(phase: str) -> None:
    """ETIMEDOUT on a real connection reaches the wire as ``connection_lost``'s error;
    the exchange still ends in httpx's timeout for its phase."""
    wire, _ = _wire()
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/x", content=b"{}")
    connection = Connection(wire, None)
    timed_out = TimeoutError(110, "Connection timed out")
    expected = httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout
    async with anyio.create_task_group() as group:
        async def lose() -> None:
            await anyio.wait_all_tasks_blocked()
            wire.connection_lost(timed_out)

        if phase == "write":
            wire.connection_lost(timed_out)
        else:
            group.start_soon(lose)
        with pytest.raises(expected):
            await connection.exchange(request, request.headers.raw, b"{}", {}, 1000)


async def test_a_connect_cut_short_by_its_deadline_leaves_no_socket_open() -> None:
    """Deadlines of a fraction of a millisecond end connects at every step (resolving,
    connecting, handing the socket to the transport); none may leave a socket open.  A
    socket dropped unclosed is closed when collected, with a ResourceWarning."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)  # never accepts
    request = httpx.Request("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/")
    chance = random.Random(7)
    before = len(os.listdir("/proc/self/fd"))
    opened = timed_out = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            for deadline in [0.0, 10.0] + [chance.uniform(0, 0.0004) for _ in range(300)]:
                try:
                    connection = await Connection.open(request, None, deadline)
                except httpx.ConnectTimeout:
                    timed_out += 1
                else:
                    opened += 1
                    await connection.aclose()
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        listener.close()
    assert opened and timed_out  # both paths were taken (the first two deadlines see to it)

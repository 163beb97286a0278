"""The total request deadline and the abort handle, against a real dripping loopback server.

The drip server sends one byte every 50 ms for as long as the test lets it, so
no per-read timeout ever trips: a request ends only through the total deadline
or an abort.  Each wait on the test's side is bounded (a hang guard), never a
sleep used as synchronisation.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import requests

from crawler.deadline import Call, DeadlineAdapter, request_deadline, running
from testkit.drip import DripServer
from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

HANG_GUARD_S = 30.0


@pytest.fixture(params=["headers", "body"])
def drip(request: pytest.FixtureRequest) -> Iterator[DripServer]:
    with DripServer(phase=request.param) as server:
        yield server


def session(timeout_s: float = 600.0) -> requests.Session:
    http = requests.Session()
    adapter = DeadlineAdapter(timeout_s)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


def read_all(http: requests.Session, url: str) -> bytes:
    response = http.get(url, stream=True)
    with response:
        return b"".join(response.iter_content(65536))


def in_thread(work: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()  # type: ignore[operator]
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_a_dripping_server_cannot_outlast_the_total_deadline(drip: DripServer) -> None:
    http = session(timeout_s=600.0)  # the per-read timeout alone would never trip

    def call() -> None:
        with request_deadline(0.5):
            read_all(http, f"http://{drip.host}/v2/")

    thread, errors = in_thread(call)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the request outlived its total deadline"
    assert len(errors) == 1 and isinstance(errors[0], requests.RequestException), errors
    assert "timed out" in str(errors[0]).lower()
    assert drip.closed_by_client.wait(HANG_GUARD_S), "the connection was left open"
    assert drip.requests == 1
    http.close()


def test_abort_stops_a_call_on_another_thread_at_once(drip: DripServer) -> None:
    http = session(timeout_s=600.0)
    handle = Call()

    def call() -> None:
        with running(handle), request_deadline(600.0):
            read_all(http, f"http://{drip.host}/v2/")

    thread, errors = in_thread(call)
    assert drip.wait_for_request(HANG_GUARD_S)
    handle.abort()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "abort did not stop the blocked request"
    assert len(errors) == 1 and isinstance(errors[0], requests.RequestException), errors
    assert drip.closed_by_client.wait(HANG_GUARD_S)
    http.close()


def test_an_aborted_call_sends_nothing_more(drip: DripServer) -> None:
    http = session()
    handle = Call()
    handle.abort()
    with running(handle), pytest.raises(requests.ConnectionError, match="abandoned"):
        read_all(http, f"http://{drip.host}/v2/")
    assert drip.requests == 0
    # A finished call can no longer be aborted: its sockets may be back in the pool.
    done = Call()
    with running(done):
        pass
    done.abort()
    assert not done.aborted


class _Counting(LoopbackHandler):
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def counting() -> Iterator[tuple[str, type[_Counting]]]:
    handler = type("Handler", (_Counting,), {"connections": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        stop_serving(server, thread)


def test_the_adapter_finds_each_origins_pool_again_until_closed(
    counting: tuple[str, type[_Counting]],
) -> None:
    base, handler = counting
    http = session()
    adapter = http.get_adapter(base)
    assert isinstance(adapter, DeadlineAdapter)
    for path in ("/a", "/b", "/c"):
        assert http.get(base + path).content == path.encode()
    # One remembered pool, one connection: the pool was found again, not rebuilt.
    assert len(adapter._pools) == 1 and handler.connections == 1
    (first,) = adapter._pools.values()
    other = base.replace("127.0.0.1", "localhost")
    assert http.get(other + "/d").content == b"/d"
    assert len(adapter._pools) == 2 and first in adapter._pools.values()
    # A pool closed since is not handed out again (urllib3 1.x closes the pools its
    # manager evicts; 2.x only drops them).  Evicted and closed, as 1.x does:
    adapter.poolmanager.clear()
    first.close()
    assert http.get(base + "/f").content == b"/f"
    assert first not in adapter._pools.values() and len(adapter._pools) == 2
    assert handler.connections == 3  # 127.0.0.1, localhost, and 127.0.0.1 again
    (first,) = [pool for pool in adapter._pools.values() if pool.host == "127.0.0.1"]
    # Closing the adapter forgets them: the next request builds a pool and connects anew.
    adapter.close()
    assert not adapter._pools
    assert http.get(base + "/e").content == b"/e"
    assert len(adapter._pools) == 1 and first not in adapter._pools.values()
    assert handler.connections == 4

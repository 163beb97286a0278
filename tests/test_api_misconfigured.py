"""Answers that say nothing about the artifact stop the run once; long waits are not silent.

* An API URL without its version path, or an API answering with a redirect:
  exit 3 once, with a message naming api_url, and no item recorded rejected
  (the next run with the right URL imports everything).
* A Retry-After longer than the documented cap (from Akua or the registry):
  the service is unavailable for this run; the call fails at once instead of waiting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from crawler.cli import main
from crawler.registry import Registry, RegistryEndpoint, RegistryUnavailable
from crawler.retry import RETRY_AFTER_MAX_S, RetryPolicy
from testkit.akua_double import AkuaDouble
from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving
from testkit.world import seed_mixed_registry

TOKEN = "sk_akua_misconfigured_test"


def _run(registry_host: str, api_url: str, state: Path) -> int:
    return main(["run", "--registry", registry_host, "--plain-http", "--state", str(state),
                 "--api-url", api_url, "--log-format", "json", "--rate", "500"])


class Answering:
    """A loopback HTTP server answering every request with one fixed reply."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.requests = 0
        outer = self

        class Handler(LoopbackHandler):
            def _answer(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = serve_in_thread(self._server, "answering", start=False)

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> Answering:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        stop_serving(self._server, self._thread)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    yield


def test_an_api_url_without_its_version_aborts_once_and_rejects_nothing(
    token: None, seeder, registry_factory, make_akua, tmp_path: Path, capsys
) -> None:
    world = seed_mixed_registry(seeder)
    registry = registry_factory()
    akua: AkuaDouble = make_akua(token=TOKEN)
    state = tmp_path / "state.db"
    assert _run(registry.host, akua.base_url, state) == 3
    err = capsys.readouterr().err
    assert "the API URL is wrong; check api_url" in err
    assert '"outcome": "rejected"' not in err and "item.rejected" not in err
    assert akua.writes() == []

    with sqlite3.connect(state) as db:
        outcomes = {row[0] for row in db.execute("SELECT outcome FROM items")}
    assert "rejected" not in outcomes and "imported" not in outcomes

    # With the right URL (and a state for that API) every version is imported.
    assert _run(registry.host, akua.url, tmp_path / "right.db") == 1  # the world holds invalid ones
    assert len(akua.writes()) == len(world.versions)


def test_a_redirect_from_the_api_aborts_once(
    token: None, seeder, registry_factory, tmp_path: Path, capsys
) -> None:
    seed_mixed_registry(seeder)
    registry = registry_factory()
    with Answering(308, {"Location": "https://api.akua.dev/v1/packages"}) as api:
        assert _run(registry.host, f"http://{api.host}/v1", tmp_path / "s.db") == 3
        requests = api.requests
    err = capsys.readouterr().err
    assert "redirect (308)" in err and "check api_url" in err
    assert requests == 1  # the first answer stopped the run


@pytest.mark.anyio
async def test_a_registry_retry_after_beyond_the_cap_fails_at_once() -> None:
    with Answering(429, {"Retry-After": str(int(RETRY_AFTER_MAX_S) * 4)}) as server:
        registry = Registry(RegistryEndpoint(host=server.host, plain_http=True, timeout_s=10),
                            policy=RetryPolicy(attempts=4, base_s=0.01, cap_s=0.01))
        try:
            with pytest.raises(RegistryUnavailable, match="longer than the 300 s a run waits"):
                await registry.tags("team/app")
        finally:
            registry.close()
        assert server.requests == 1  # no retry, no silent 20-minute wait

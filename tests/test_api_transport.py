"""Where the Akua token may travel: plain HTTP only to loopback reached directly.

A plain-HTTP API URL on loopback carried by an HTTP proxy (HTTP_PROXY,
ALL_PROXY, which httpx honours) is not loopback: the token would cross the
network to the proxy in clear.  Checked against a real forward proxy on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.api.proxy import env_proxy
from crawler.cli import main
from crawler.config import resolve
from crawler.errors import ConfigError
from testkit.akua_double import AkuaDouble
from testkit.forward_proxy import ForwardProxy
from testkit.world import seed_mixed_registry

TOKEN = "sk_akua_proxy_test_token"
LOOPBACK_API = "http://127.0.0.1:8080/v1"


def settle(environ: dict[str, str], **flags: object) -> None:
    resolve(flags={"registry": "r.example", **flags}, environ=environ, config_file=None,
            need_token=False)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_proxy_carrying_the_loopback_api_is_refused(variable: str) -> None:
    with pytest.raises(ConfigError, match=f"api_url: .*{variable} would carry it through a proxy"):
        settle({variable: "http://127.0.0.1:3128"}, api_url=LOOPBACK_API)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*", "http://127.0.0.1"])
def test_no_proxy_makes_it_direct(no_proxy: str) -> None:
    settle({"HTTP_PROXY": "http://127.0.0.1:3128", "NO_PROXY": no_proxy}, api_url=LOOPBACK_API)


def test_https_proxies_and_the_explicit_switch_are_accepted() -> None:
    settle({"HTTP_PROXY": "http://127.0.0.1:3128"}, api_url=LOOPBACK_API, allow_plain_http_api=True)
    settle({"HTTP_PROXY": "http://127.0.0.1:3128", "HTTPS_PROXY": "http://127.0.0.1:3128"},
           api_url="https://api.akua.dev/v1")
    settle({"HTTPS_PROXY": "http://127.0.0.1:3128"}, api_url=LOOPBACK_API)  # not for http://


def test_env_proxy_follows_httpx_precedence() -> None:
    environ = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1", "ALL_PROXY": "http://all:1"}
    assert env_proxy("http://127.0.0.1/v1", environ) == ("http_proxy", "http://lower:1")
    assert env_proxy("https://api.akua.dev/v1", environ) == ("ALL_PROXY", "http://all:1")
    assert env_proxy("http://api.akua.dev/v1", {"NO_PROXY": "akua.dev", **environ}) is None
    assert env_proxy("http://127.0.0.1:9/v1", {"NO_PROXY": "127.0.0.2", **environ}) is not None


def _run(registry_host: str, api_url: str, state: Path, *extra: str) -> int:
    return main(["run", "--registry", registry_host, "--plain-http", "--state", str(state),
                 "--api-url", api_url, "--log-format", "json", "--rate", "500", *extra])


def test_a_real_forward_proxy_never_sees_the_token(
    seeder, registry_factory, make_akua, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    world = seed_mixed_registry(seeder)
    registry = registry_factory()
    akua: AkuaDouble = make_akua(token=TOKEN)
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)

        # Through the proxy the loopback API is not loopback: refused before any contact.
        assert _run(registry.host, akua.url, tmp_path / "a.db") == 2
        assert "HTTP_PROXY would carry it through a proxy" in capsys.readouterr().err
        assert proxy.seen == [] and akua.writes() == []

        # NO_PROXY makes it direct: everything imported, the proxy carried nothing.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert _run(registry.host, akua.url, tmp_path / "b.db") == 1  # the world has invalid items
        assert len(akua.writes()) == len(world.versions)
        assert proxy.seen == []

        # The proxy is real and httpx uses it: allowed on purpose, the token goes through it.
        monkeypatch.delenv("NO_PROXY")
        assert _run(registry.host, akua.url, tmp_path / "c.db", "--allow-plain-http-api") == 1
        carried = [c for c in proxy.seen if c.url.startswith(akua.url)]
        assert carried and all(c.headers.get("Authorization") == f"Bearer {TOKEN}" for c in carried)

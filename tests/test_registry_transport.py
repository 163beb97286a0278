"""Where registry credentials may travel: plain HTTP only to loopback reached directly.

The Akua token's rule (``crawler.api.route_check``), applied to a source's
credentials (``--username`` with a password, ``password_env``/``password_file``,
or Docker config credentials found at run start): a plain-HTTP registry that is
not loopback, or that ``HTTP_PROXY``/``ALL_PROXY`` would carry, is refused with
exit 2 before any contact (Docker config credentials: the source fails when they
are found, exit 3 with one source), unless ``allow_plain_http_credentials``.  Checked
against a real forward proxy on loopback and the htpasswd registry.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from crawler.config import resolve
from crawler.errors import ConfigError
from testkit.forward_proxy import ForwardProxy
from testkit.registry import LocalRegistry, Seeder, package_annotations
from tests.plugins.cli import run_in_process
from tests.plugins.registry import RegistryFactory

USER = "robot"
PASSWORD = "Pw-robot-HERON-83"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
REPOSITORIES = ("team/a", "team/b")
PROXY = "http://127.0.0.1:3128"


def settle(environ: dict[str, str], config_file: Path | None = None, **flags: object) -> None:
    resolve(flags={"plain_http": True, **flags}, environ={"REGISTRY_PASSWORD": PASSWORD, **environ},
            config_file=config_file, need_token=False)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_proxy_carrying_the_loopback_registry_is_refused(variable: str) -> None:
    with pytest.raises(ConfigError, match=f"registry: 127.0.0.1:5000 is plain HTTP and {variable} "
                                          "would carry it.*user 'robot'.*allow_plain_http_credentials"):
        settle({variable: PROXY}, registry="127.0.0.1:5000", username=USER)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_makes_it_direct(no_proxy: str) -> None:
    settle({"HTTP_PROXY": PROXY, "NO_PROXY": no_proxy}, registry="127.0.0.1:5000", username=USER)


def test_non_loopback_plain_http_with_credentials_needs_the_opt_in() -> None:
    with pytest.raises(ConfigError, match=r"registry: registry.example:5000 is plain HTTP to a "
                                          r"non-loopback host.*allow_plain_http_credentials"):
        settle({}, registry="registry.example:5000", username=USER)
    settle({}, registry="registry.example:5000", username=USER, allow_plain_http_credentials=True)
    settle({"HTTP_PROXY": PROXY}, registry="127.0.0.1:5000", username=USER,
           allow_plain_http_credentials=True)


def test_anonymous_and_https_registries_are_unaffected() -> None:
    settle({"HTTP_PROXY": PROXY}, registry="registry.example:5000")  # no credentials
    settle({"HTTP_PROXY": PROXY, "HTTPS_PROXY": PROXY}, registry="registry.example",
           username=USER, plain_http=False)


def test_each_source_is_judged_with_its_own_opt_in(tmp_path: Path) -> None:
    config = tmp_path / "crawler.toml"
    config.write_text(
        '[[source]]\nname = "lan"\nregistry = "10.0.0.7:5000"\nplain_http = true\n'
        'username = "robot"\npassword_env = "LAN_PASSWORD"\nallow_plain_http_credentials = true\n'
        '[[source]]\nname = "other"\nregistry = "10.0.0.8:5000"\nplain_http = true\n'
        'username = "robot"\npassword_env = "LAN_PASSWORD"\n'
    )
    with pytest.raises(ConfigError, match=r"source 'other': registry: 10.0.0.8:5000 is plain HTTP to a "
                                          "non-loopback host"):
        resolve(flags={}, environ={"LAN_PASSWORD": PASSWORD}, config_file=config, need_token=False)
    config.write_text(config.read_text().replace('name = "other"', 'name = "other"\n'
                                                 'allow_plain_http_credentials = true'))
    resolve(flags={}, environ={"LAN_PASSWORD": PASSWORD}, config_file=config, need_token=False)


# -- real parts: the htpasswd registry and a forward proxy on loopback ------------------


@pytest.fixture
def htpasswd_registry(seeder: Seeder, registry_factory: RegistryFactory) -> LocalRegistry:
    for repository in REPOSITORIES:
        schema = {"type": "object", "title": repository}
        seeder.add_artifact(repository, ["1.0.0"], annotations=package_annotations(schema, None))
    return registry_factory(users={USER: PASSWORD})


def plan(host: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = run_in_process(
        ["plan", "--registry", host, "--plain-http", "--state", str(tmp_path / "state.db"),
         "--log-format", "json", "--concurrency", "2", *extra],
        pytest.MonkeyPatch(), capsys)
    if result.events:  # a config error stops before logging starts: no events at all
        assert result.closing["exit_status"] == result.status  # one closing event, every time
    return result.status, result.stdout, result.stderr


def planned(out: str) -> set[str]:
    return {line.split()[1] for line in out.splitlines() if line.startswith("IMPORT")}


def test_a_real_forward_proxy_never_sees_the_password(
    htpasswd_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    host = htpasswd_registry.host
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)

        # Through the proxy the loopback registry is not loopback: refused before any contact.
        status, _, err = plan(host, capsys, tmp_path, "--username", USER)
        assert status == 2
        assert f"registry: {host} is plain HTTP and HTTP_PROXY would carry it" in err
        assert PASSWORD not in err
        assert proxy.seen == []

        # NO_PROXY makes it direct: the real registry takes the credentials, the proxy sees nothing.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        status, out, _ = plan(host, capsys, tmp_path, "--username", USER)
        assert status == 0
        assert planned(out) == set(REPOSITORIES)
        assert proxy.seen == []

        # The proxy is real and oras' session uses it: allowed on purpose, the password goes through.
        monkeypatch.delenv("NO_PROXY")
        status, out, _ = plan(host, capsys, tmp_path, "--username", USER, "--allow-plain-http-credentials")
        assert status == 0 and len(planned(out)) == len(REPOSITORIES)
        assert any(c.headers.get("Authorization") == BASIC for c in proxy.seen)


def test_docker_config_credentials_are_judged_where_they_are_found(
    htpasswd_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "docker-config"
    folder.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {htpasswd_registry.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        # Found at run start, not at config time: the source stops there (the run-abort status).
        status, _, err = plan(htpasswd_registry.host, capsys, tmp_path)
        assert status == 3, err
        assert f"auths entry '{htpasswd_registry.host}' in docker config" in err
        assert "HTTP_PROXY would carry it" in err
        assert PASSWORD not in err
        assert proxy.seen == []

        status, out, _ = plan(htpasswd_registry.host, capsys, tmp_path, "--allow-plain-http-credentials")
        assert status == 0 and len(planned(out)) == len(REPOSITORIES)
        assert any(c.headers.get("Authorization") == BASIC for c in proxy.seen)

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        proxy.seen.clear()
        status, out, _ = plan(htpasswd_registry.host, capsys, tmp_path)
        assert status == 0 and len(planned(out)) == len(REPOSITORIES)
        assert proxy.seen == []


def test_a_non_loopback_plain_http_registry_is_never_contacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    with ForwardProxy() as tripwire:  # every plain-HTTP request to the host would go through it
        monkeypatch.setenv("HTTP_PROXY", tripwire.url)
        status, _, err = plan("registry.example:5000", capsys, tmp_path, "--username", USER)
        assert status == 2
        assert "registry: registry.example:5000 is plain HTTP to a non-loopback host" in err
        assert tripwire.seen == []


def test_the_session_goes_direct_whenever_the_check_said_direct(
    htpasswd_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``NO_PROXY=http://127.0.0.1`` bypasses the proxy for httpx (the check's rule) but not for
    requests; the session follows the check, so the password still never reaches the proxy."""
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "http://127.0.0.1")
        status, out, _ = plan(htpasswd_registry.host, capsys, tmp_path, "--username", USER)
        assert status == 0 and planned(out) == set(REPOSITORIES)
        assert proxy.seen == []

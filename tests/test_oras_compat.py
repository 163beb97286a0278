"""Canaries for every workaround in crawler/registry/oras_compat.py.

Each test pins down the oras-py behaviour a workaround exists for (W1-W9
in that module's docstring).  When an oras-py upgrade changes it, the
canary fails: drop or adapt the workaround, then the canary.  Transport is
injected as a requests adapter that records what oras sends and answers
from plain data, never by patching oras internals.
"""

from __future__ import annotations

import inspect
import json
import logging
from importlib.metadata import version
from typing import Any

import oras.auth
import oras.container
import oras.provider
import pytest
import requests
from requests.adapters import BaseAdapter

import crawler.registry.oras_compat as compat
from crawler.deadline import DeadlineAdapter
from crawler.registry.auth import RealmRefused
from crawler.registry.endpoint import RegistryEndpoint

PINNED = "0.2.43"


class Recorder(BaseAdapter):
    """A requests transport that records each request and answers from a list."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[tuple[requests.PreparedRequest, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append((request, kwargs.get("timeout")))
        status, headers, body = self.answers.pop(0) if self.answers else (200, {}, b"{}")
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = body
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def stock(recorder: Recorder) -> oras.provider.Registry:
    registry = oras.provider.Registry(hostname="registry.test", insecure=True)
    registry.session.mount("http://", recorder)
    registry.session.mount("https://", recorder)
    return registry


def undecorated(registry: oras.provider.Registry, url: str, **kwargs: Any) -> requests.Response:
    response: requests.Response = oras.provider.Registry.do_request.__wrapped__(
        registry, url, **kwargs
    )
    return response


def test_the_pinned_version_is_installed() -> None:
    assert version("oras") == PINNED, "re-run these canaries, then move the pin in pyproject.toml"


def test_w1_do_request_is_wrapped_in_a_sleeping_retry() -> None:
    source = inspect.getsource(oras.provider.Registry)
    assert "@decorator.retry()\n    def do_request" in source
    assert hasattr(oras.provider.Registry.do_request, "__wrapped__")
    retry_source = inspect.getsource(oras.decorator.retry)
    assert "time.sleep(sleep)" in retry_source and "except Exception" in retry_source


def test_w2_oras_sends_no_timeout_and_the_session_gets_a_deadline() -> None:
    recorder = Recorder()
    undecorated(stock(recorder), "http://registry.test/v2/")
    assert recorder.sent[0][1] is None  # stock: no timeout at all
    ours = compat.OrasSession(RegistryEndpoint(host="registry.test", plain_http=True,
                                               timeout_s=7.0))
    adapter = ours.session.get_adapter("http://registry.test/v2/")
    assert isinstance(adapter, DeadlineAdapter) and adapter._timeout_s == 7.0


def test_w3_oras_logs_registry_errors_in_the_oras_tree_and_we_print_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    inner = oras.provider.logger.logger
    assert isinstance(inner, logging.Logger) and inner.name.split(".")[0] == "oras"
    response = requests.Response()
    response._content = json.dumps({"errors": [{"message": "canary-404"}]}).encode()
    stock(Recorder())._parse_response_errors(response)  # logs at ERROR upstream
    assert not inner.isEnabledFor(logging.ERROR)
    assert "canary-404" not in "".join(capfd.readouterr())


def test_w4_stock_token_auth_takes_a_basic_realm_for_a_url() -> None:
    recorder = Recorder((401, {}, b"{}"))
    registry = stock(recorder)
    registry.auth.set_basic_auth("u", "p")
    challenge = requests.Response()
    challenge.headers["Www-Authenticate"] = 'Basic realm="basic-realm"'
    _headers, changed = registry.auth.authenticate_request(challenge, {})
    assert not changed
    assert recorder.sent[0][0].url.startswith("http://basic-realm")
    ours = compat.ChallengeAuth(RegistryEndpoint(host="registry.test", plain_http=True))
    ours.set_basic_auth("u", "p")
    headers, changed = ours.authenticate_request(challenge, {})
    assert changed and headers["Authorization"].startswith("Basic ")


def test_w5_stock_token_auth_reuses_its_token_for_any_scope() -> None:
    auth = oras.auth.TokenAuth()
    auth.token = "token-for-repository-one"
    challenge = requests.Response()
    challenge.headers["Www-Authenticate"] = (
        'Bearer realm="http://registry.test/token",service="s",scope="repository:two:pull"'
    )
    headers, changed = auth.authenticate_request(challenge, {})
    assert changed and headers["Authorization"] == "Bearer token-for-repository-one"


def test_w6_do_request_writes_into_the_callers_headers() -> None:
    registry = stock(Recorder())
    registry.auth.token = "t"
    headers = {"Accept": "application/json"}
    undecorated(registry, "http://registry.test/v2/", headers=headers)
    assert headers.get("Authorization") == "Bearer t"


def test_w7_docker_config_is_not_loaded_for_tags_and_localhost_parses_as_a_path() -> None:
    assert "load_configs" not in inspect.getsource(oras.provider.Registry.get_tags)
    assert "load_configs" in inspect.getsource(oras.provider.Registry.get_manifest)
    parsed = oras.container.Container("localhost/akua/probe")
    assert parsed.registry != "localhost"


def test_w8_an_unanswerable_challenge_is_a_bare_value_error() -> None:
    registry = stock(Recorder((401, {}, b"{}")))
    with pytest.raises(ValueError, match="Cannot respond to request for authentication"):
        undecorated(registry, "http://registry.test/v2/")


def test_w9_oras_leaves_trust_env_on_and_our_session_turns_it_off() -> None:
    assert stock(Recorder()).session.trust_env is True
    ours = compat.OrasSession(RegistryEndpoint(host="registry.test", plain_http=True))
    assert ours.session.trust_env is False


def test_w10_stock_token_auth_sends_the_password_to_any_realm() -> None:
    recorder = Recorder((200, {}, b'{"token": "t"}'))
    registry = stock(recorder)
    registry.auth.set_basic_auth("u", "p")
    challenge = requests.Response()
    challenge.headers["Www-Authenticate"] = (
        'Bearer realm="http://elsewhere.test/token",service="s",scope="repository:a:pull"'
    )
    registry.auth.authenticate_request(challenge, {})
    sent = recorder.sent[0][0]
    assert (sent.url or "").startswith("http://elsewhere.test/token")
    assert (sent.headers.get("Authorization") or "").startswith("Basic ")
    ours = compat.ChallengeAuth(RegistryEndpoint(host="registry.test", plain_http=True))
    ours.set_basic_auth("u", "p")
    with pytest.raises(RealmRefused, match="plain HTTP to another host"):
        ours.authenticate_request(challenge, {})


def test_w11_oras_goes_through_session_request_and_the_lean_path_sends_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = inspect.getsource(oras.provider.Registry.do_request.__wrapped__)
    assert "self.session.request(" in source and "verify=self._tls_verify" in source
    # Through a proxy the lean path uses the session's send (W13's line is for direct routes).
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    endpoint = RegistryEndpoint(host="registry.test", plain_http=True, username="u", password="p")
    ours = compat.OrasSession(endpoint)
    recorder = Recorder(
        (401, {"Www-Authenticate": 'Basic realm="r"'}, b"{}"), (200, {}, b"{}"),  # oras path
        (200, {}, b"{}"),  # lean path: Basic is pre-emptive by now (W4)
    )
    ours.session.mount("http://", recorder)
    url = "http://registry.test/v2/r/manifests/1"
    ours.send("GET", url, "application/json", stream=False)
    ours.send("GET", url, "application/json", stream=False, lean=True)
    (full, _), (lean, _) = recorder.sent[1], recorder.sent[2]
    assert (lean.method, lean.url) == (full.method, full.url)
    assert dict(lean.headers) == dict(full.headers)
    assert lean.headers["Authorization"].startswith("Basic ")

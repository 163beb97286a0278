"""The Akua token and the registry password never show: not in output, state or exceptions.

Distinctive secrets go through every path that could leak them: a full run
at debug level through 5xx and 429, a wrong token (401), a wrong registry
password, and hostile servers that echo the Authorization header back in
their error bodies.  The base64 ``user:password`` of HTTP Basic counts as the
password: it is the password, in a reversible encoding.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import traceback
from collections.abc import Awaitable, Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.api.client import AkuaClient, ApiEndpoint, PackageGone
from crawler.api.directory import PackageDirectory
from crawler.cli import main
from crawler.config import Secret, resolve
from crawler.errors import CrawlerError
from crawler.importer import Importer
from crawler.logs import configure
from crawler.ratelimit import AdaptiveRateLimiter
from crawler.registry import Registry, RegistryClient, RegistryEndpoint
from crawler.request import PackageTarget, build_request
from crawler.retry import RetryPolicy
from testkit.akua_double import AkuaDouble
from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving
from testkit.world import seed_mixed_registry
from tests.hypothesis_profiles import examples
from tests.plugins.cli import ROOT, child_command, child_environment
from tests.tripwire import contacted

TOKEN = "sk_akua_Zq7TOKENx93kd"
WRONG_TOKEN = "sk_akua_Wr0NGTOKENp41x"
USER = "robot"
PASSWORD = "Pw-s3cret-RAVEN-88"
WRONG_PASSWORD = "Pw-wr0ng-HERON-17"


def basic(password: str) -> str:
    return base64.b64encode(f"{USER}:{password}".encode()).decode()


SECRETS = (TOKEN, WRONG_TOKEN, PASSWORD, WRONG_PASSWORD, basic(PASSWORD), basic(WRONG_PASSWORD))


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [s for s in SECRETS if s.encode() in text]
    return [s for s in SECRETS if s in text]


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, and the traceback Python would print."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# -- a server that echoes the Authorization header in its error bodies ----------------------


class EchoServer:
    """Answers every request with ``status`` and a body quoting the Authorization header.

    With ``basic_challenge``, a request without Authorization gets a Basic
    401 challenge first (as an htpasswd registry does), so the client sends
    its credentials.  ``location`` makes every answer a 307 to that URL.
    """

    def __init__(self, status: int, *, basic_challenge: bool = False, html: bool = False,
                 location: str | None = None) -> None:
        self.status = status
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(LoopbackHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                auth = self.headers.get("Authorization")
                server.requests.append({"path": self.path, "authorization": auth or ""})
                headers = {}
                if basic_challenge and auth is None:
                    status = 401
                    headers["WWW-Authenticate"] = 'Basic realm="echo"'
                    text = "authentication required"
                else:
                    status = server.status
                    text = f"refused; you sent Authorization: {auth}"
                if location is not None:
                    status = 307
                    headers["Location"] = location
                if html:
                    body = f"<html><body><h1>{status}</h1><p>{text}</p></body></html>".encode()
                    headers["Content-Type"] = "text/html"
                else:
                    body = json.dumps({"errors": [{"code": "UNKNOWN", "message": text}],
                                       "success": False, "result": {}}).encode()
                    headers["Content-Type"] = "application/json"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = serve_in_thread(self._server, "echo", start=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        stop_serving(self._server, self._thread)


# -- the CLI, as a process, through faults ----------------------------------------------


def run_cli(args: list[str], *, token: str, password: str) -> tuple[int, str, str]:
    env = child_environment({"AKUA_API_TOKEN": token, "REGISTRY_PASSWORD": password})
    done = subprocess.run(child_command(args), env=env, cwd=ROOT,
                          capture_output=True, timeout=120, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def common_args(registry_host: str, api_url: str, state: Path) -> list[str]:
    return ["run", "--registry", registry_host, "--plain-http", "--username", USER,
            "--state", str(state), "--api-url", api_url, "--log-format", "json",
            "--log-level", "debug", "--concurrency", "4", "--rate", "500"]


def state_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (state, state.with_name(state.name + "-wal"))
                    if p.exists())


@pytest.mark.slow
def test_cli_runs_leak_no_secret(seeder, registry_factory, make_akua, tmp_path: Path) -> None:
    world = seed_mixed_registry(seeder)
    registry = registry_factory(users={USER: PASSWORD})
    akua: AkuaDouble = make_akua(token=TOKEN, error_5xx_rate=0.2, force_429_rate=0.2,
                                 retry_after=None, seed=13)
    state = tmp_path / "state.db"
    outputs: list[str] = []

    # Everything imported through 5xx and 429, logged at debug level.
    status, out, err = run_cli(common_args(registry.host, akua.url, state),
                               token=TOKEN, password=PASSWORD)
    outputs += [out, err]
    assert status == 1, err[-3000:]
    assert len(akua.writes()) == len(world.versions)
    counts = akua.counts()
    assert counts["429"] > 0 and counts.get("500", 0) + counts.get("502", 0) + counts.get("503", 0)
    assert '"level": "debug"' in err  # the debug level was on
    assert '"event": "api.retry"' in err

    # A wrong token: 401, the run stops.
    fresh = tmp_path / "fresh.db"
    status, out, err = run_cli(common_args(registry.host, akua.url, fresh),
                               token=WRONG_TOKEN, password=PASSWORD)
    outputs += [out, err]
    assert status == 3 and "refused the token" in err

    # A wrong registry password: the registry refuses, the run stops.
    status, out, err = run_cli(common_args(registry.host, akua.url, tmp_path / "other.db"),
                               token=TOKEN, password=WRONG_PASSWORD)
    outputs += [out, err]
    assert status == 3 and "refused the credentials" in err

    for text in outputs:
        assert leaks(text) == [], text[-2000:]
    for path in (state, fresh, tmp_path / "other.db"):
        assert path.exists()
        assert leaks(state_bytes(path)) == []


@pytest.mark.parametrize("status", [500, 401])
def test_cli_against_a_registry_echoing_the_credentials(status: int, tmp_path: Path, cli) -> None:
    # In process: what is checked is the CLI's output (test_cli_runs_leak_no_secret runs processes).
    with EchoServer(status, basic_challenge=True) as echo:
        result = cli(common_args(echo.host, "http://127.0.0.1:9/v1", tmp_path / "s.db"),
                     env={"AKUA_API_TOKEN": TOKEN, "REGISTRY_PASSWORD": PASSWORD})
        code, out, err = result.status, result.stdout, result.stderr
        assert any(r["authorization"] == f"Basic {basic(PASSWORD)}" for r in echo.requests)
    assert code == 3
    assert "GET /v2/" in err  # the first request: the API check, before the catalog
    assert leaks(out) == [] and leaks(err) == [], err[-2000:]


# -- exceptions of the Akua client ------------------------------------------------------


def akua_client(url: str, token: str = TOKEN) -> AkuaClient:
    endpoint = ApiEndpoint(url=url, token=Secret(token), timeout_s=5.0)
    return AkuaClient(endpoint, AdaptiveRateLimiter(1000, 100),
                      policy=RetryPolicy(attempts=2, base_s=0.001, cap_s=0.001), concurrency=2)


async def failure_of(call: Callable[[AkuaClient], Awaitable[Any]], client: AkuaClient) -> Exception:
    async with client:
        with pytest.raises(Exception) as caught:  # any failure: its text is what is checked
            await call(client)
    return caught.value


async def list_packages(client: AkuaClient) -> Any:
    return [item async for item in client.packages()]


async def import_one(client: AkuaClient) -> Any:
    body = {"name": "a/b", "oci_ref": "oci://r/a/b", "version": {"semver": "1.0.0"}}
    return await client.import_package(body, "key-1")


async def create_version(client: AkuaClient) -> Any:
    # Through the importer, which owns looking before resending an ambiguous create-version.
    request = build_request(PackageTarget(name="a/b", oci_ref="oci://r/a/b", description=None),
                            semver="1.0.0", digest="sha256:" + "a" * 64, input_schema={})
    return await Importer(client, PackageDirectory(client)).write(request, package_id="pkg_1")


CALLS = {"list": list_packages, "import": import_one, "create-version": create_version}


@pytest.mark.anyio
@pytest.mark.parametrize("call", list(CALLS))
async def test_akua_client_exceptions_hide_the_token(call: str, make_akua) -> None:
    flaky = make_akua(token=TOKEN, error_5xx_rate=1.0)
    exc = await failure_of(CALLS[call], akua_client(flaky.url))
    assert "gave up" in str(exc)
    assert leaks(exception_text(exc)) == []

    refusing = make_akua(token=TOKEN)
    exc = await failure_of(CALLS[call], akua_client(refusing.url, WRONG_TOKEN))
    assert "refused the token" in str(exc)
    assert leaks(exception_text(exc)) == []


@pytest.mark.anyio
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(("status", "html"), [(500, False), (502, True), (401, False), (403, True),
                                              (404, False), (422, False), (400, True)])
async def test_akua_client_exceptions_hide_a_token_the_server_echoes(
    call: str, status: int, html: bool
) -> None:
    with EchoServer(status, html=html) as echo:
        exc = await failure_of(CALLS[call], akua_client(f"http://{echo.host}/v1"))
        assert any(TOKEN in r["authorization"] for r in echo.requests)  # it was sent, and echoed
    assert isinstance(exc, PackageGone) or str(status) in str(exc)
    assert leaks(exception_text(exc)) == [], exception_text(exc)


@pytest.mark.anyio
async def test_reprs_hide_the_secrets() -> None:
    client = akua_client("http://127.0.0.1:9/v1")
    settings = resolve(flags={"registry": "127.0.0.1:5000", "username": USER}, environ={
        "AKUA_API_TOKEN": TOKEN, "REGISTRY_PASSWORD": PASSWORD}, config_file=None, need_token=True)
    endpoint = RegistryEndpoint(host="127.0.0.1:5000", username=USER, password=PASSWORD)
    for thing in (client, client.endpoint, settings, endpoint, RegistryClient(endpoint),
                  Registry(endpoint)):
        assert leaks(repr(thing)) == [] and leaks(str(thing)) == []


# -- exceptions of the registry client --------------------------------------------------


def registry_failure(host: str, password: str) -> CrawlerError:
    client = RegistryClient(RegistryEndpoint(host=host, plain_http=True, username=USER,
                                             password=password, timeout_s=5.0))
    try:
        with pytest.raises(CrawlerError) as caught:
            client.list_tags("team/app")
    finally:
        client.close()
    return caught.value


def test_registry_exceptions_hide_a_refused_password(seeder, registry_factory) -> None:
    seed_mixed_registry(seeder)
    registry = registry_factory(users={USER: PASSWORD})
    exc = registry_failure(registry.host, WRONG_PASSWORD)
    assert "refused access to repository 'team/app' for user 'robot'" in str(exc)
    assert leaks(exception_text(exc)) == []


@pytest.mark.parametrize("status", [500, 401, 403, 404, 418])
def test_registry_exceptions_hide_credentials_the_server_echoes(status: int) -> None:
    with EchoServer(status, basic_challenge=True) as echo:
        exc = registry_failure(echo.host, PASSWORD)
        assert any(basic(PASSWORD) in r["authorization"] for r in echo.requests)
    assert str(status) in str(exc)
    assert leaks(exception_text(exc)) == [], exception_text(exc)


@pytest.mark.anyio
async def test_registry_facade_exceptions_hide_credentials_the_server_echoes() -> None:
    with EchoServer(503, basic_challenge=True) as echo:
        endpoint = RegistryEndpoint(host=echo.host, plain_http=True, username=USER,
                                    password=PASSWORD, timeout_s=5.0)
        async with Registry(endpoint, policy=RetryPolicy(attempts=2, base_s=0.001,
                                                         cap_s=0.001)) as registry:
            with pytest.raises(CrawlerError) as caught:
                await registry.tags("team/app")
    assert "503" in str(caught.value)
    assert leaks(exception_text(caught.value)) == []


# -- where the token may travel ---------------------------------------------------------




def test_plan_takes_a_plain_http_api_url_to_a_remote_host(
    seeder, registry_factory, tmp_path: Path, monkeypatch, capsys
) -> None:
    # A plan sends nothing to Akua (REVIEW P7): the run's --api-url is accepted as it is,
    # and no request ever reaches it (10.20.30.40 is no host of this machine).
    seed_mixed_registry(seeder)
    registry = registry_factory()
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    status = main(["plan", "--registry", registry.host, "--plain-http",
                   "--state", str(tmp_path / "s.db"), "--api-url", "http://10.20.30.40:8080/v1",
                   "--log-format", "json"])
    out, err = capsys.readouterr()
    assert status == 1, err[-3000:]  # the mixed world's two invalid artifacts
    assert "plain HTTP" not in err and "IMPORT" in out
    assert leaks(err + out) == []


@pytest.mark.parametrize("url", ["http://akua.example.com/v1", "http://10.20.30.40:8080/v1",
                                 "http://[2001:db8::1]/v1", "http://127.0.0.1.example.com/v1"])
def test_no_token_over_plain_http_to_a_remote_host(
    url: str, tripwire: socket.socket, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    status = main(["run", "--registry", f"127.0.0.1:{tripwire.getsockname()[1]}", "--plain-http",
                   "--state", str(tmp_path / "s.db"), "--api-url", url])
    err = capsys.readouterr().err
    assert status == 2
    assert "plain HTTP to a non-loopback host" in err
    assert leaks(err) == []
    assert not contacted(tripwire)


@pytest.mark.anyio
async def test_a_redirect_does_not_carry_the_token_elsewhere(tripwire: socket.socket) -> None:
    elsewhere = f"http://127.0.0.1:{tripwire.getsockname()[1]}/v1/packages"
    with EchoServer(307, location=elsewhere) as echo:
        exc = await failure_of(list_packages, akua_client(f"http://{echo.host}/v1"))
    assert "307" in str(exc)
    assert not contacted(tripwire)
    assert leaks(exception_text(exc)) == []


# -- the log redactor, whatever the secret and wherever it sits --------------------------

_SECRET = st.from_regex(r"[A-Za-z0-9_-]{6,40}", fullmatch=True).map(lambda s: "sk" + s)
_AROUND = st.text(max_size=30)


# The values are drawn around a marker that each example then replaces with its secret:
# one strategy built once, instead of a new recursive strategy built (and its caches
# filled) for every example, which cost most of this test's time.
_MARK = "\x00the-secret\x00"


def _text_around_the_mark(a: str, b: str) -> str:
    return a + _MARK + b


_TEXT = st.builds(_text_around_the_mark, _AROUND, _AROUND)
_EMBEDDED = st.recursive(
    st.one_of(_TEXT, _TEXT.map(ValueError), _TEXT.map(lambda t: RuntimeError("x", t))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c"]), inner,
                                                     max_size=3)), max_leaves=6)


def _embedded(value: Any, secret: str) -> Any:
    """``value`` with the secret in place of every marker (in texts, lists, dicts, exceptions)."""
    if isinstance(value, str):
        return value.replace(_MARK, secret)
    if isinstance(value, list):
        return [_embedded(item, secret) for item in value]
    if isinstance(value, dict):
        return {key: _embedded(item, secret) for key, item in value.items()}
    if isinstance(value, BaseException):
        return type(value)(*(_embedded(arg, secret) for arg in value.args))
    raise AssertionError(f"not drawn by _EMBEDDED: {value!r}")


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data(), token=_SECRET, password=_SECRET,
       level=st.sampled_from(["debug", "info", "warning", "error"]),
       log_format=st.sampled_from(["json", "console"]))
def test_log_lines_never_carry_a_secret(
    data: st.DataObject, token: str, password: str, level: str, log_format: str
) -> None:
    secret = data.draw(st.sampled_from([token, password]))
    fields = _embedded(data.draw(st.dictionaries(st.sampled_from(["reason", "detail", "problems"]),
                                                 _EMBEDDED, min_size=1, max_size=3)), secret)
    stream = io.StringIO()
    configure(log_format=log_format, level="debug", secrets=[token, password], stream=stream)
    try:
        logger = structlog.get_logger("crawler")
        getattr(logger, level)("probe", **fields)
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception("probe.failed", detail=fields.get("detail"))
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    assert "probe" in output
    assert token not in output and password not in output, output

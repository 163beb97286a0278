"""One --ca-file trusted by every HTTP stack, and client certificates for the registry.

Real TLS on loopback: docker-registry serving HTTPS (and requiring a client certificate)
with a certificate from a throwaway CA (trustme), and the Akua double behind the same CA.
No environment variable (REQUESTS_CA_BUNDLE, SSL_CERT_FILE) is set: the option alone works.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
import requests
import trustme

from crawler.registry.direct import DirectLine
from testkit.akua_double import AkuaDouble
from testkit.registry import package_annotations
from tests.plugins.cli import CliResult, run_in_process

SCHEMA = {"type": "object", "properties": {"replicas": {"type": "integer"}}}


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(organization_name="akua-crawler test CA")


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("akua-crawler-client")
    files = {name: tmp_path / f"{name}.pem" for name in
             ("ca", "server_cert", "server_key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["server_cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def probe(ca: trustme.CA, pki: dict[str, Path], *, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


@pytest.fixture
def tls_akua(ca: trustme.CA, akua_token: str):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    double = AkuaDouble(token=akua_token, tls=context).start()
    try:
        yield double
    finally:
        double.stop()


def run(registry_host: str, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys,
        *extra: str) -> CliResult:
    args = ["run", "--registry", registry_host, "--api-url", akua.url, "--state",
            str(tmp_path / "state.db"), "--log-format", "json", *extra]
    return run_in_process(args, monkeypatch, capsys, {"AKUA_API_TOKEN": akua.switches.token})


def test_one_ca_file_for_the_registry_and_the_api(
    seeder, registry_factory, ca, pki, tls_akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory(tls={"certificate": str(pki["server_cert"]), "key": str(pki["server_key"])},
                                tls_probe=probe(ca, pki))
    assert tls_akua.url.startswith("https://")

    untrusted = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys)
    assert untrusted.status == 3  # the registry's certificate is not trusted: nothing read
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr or "certificate verify" in untrusted.stderr
    assert tls_akua.writes() == []

    done = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys, "--ca-file", str(pki["ca"]))
    assert done.status == 0, done.stderr
    assert [p["name"] for p in tls_akua.packages()] == ["team/app"]


def test_the_api_alone_needs_the_ca_too(
    seeder, registry_factory, ca, pki, tls_akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The registry over plain HTTP; only the API over TLS: without the CA, Akua is not reached."""
    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory()
    done = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys, "--plain-http")
    assert done.status in (1, 3)
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "certificate verify" in done.stderr
    assert tls_akua.writes() == []
    done = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys, "--plain-http",
               "--ca-file", str(pki["ca"]))
    assert done.status == 0, done.stderr
    assert len(tls_akua.writes()) == 1


def test_client_certificate_for_a_registry_that_requires_one(
    seeder, registry_factory, ca, pki, tls_akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory(
        tls={"certificate": str(pki["server_cert"]), "key": str(pki["server_key"]),
             "clientcas": [str(pki["ca"])]},
        tls_probe=probe(ca, pki, client=True),
    )
    refused = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys, "--ca-file", str(pki["ca"]))
    assert refused.status == 3
    assert tls_akua.writes() == []
    done = run(registry.host, tls_akua, tmp_path, monkeypatch, capsys, "--ca-file", str(pki["ca"]),
               "--client-cert", str(pki["client_cert"]), "--client-key", str(pki["client_key"]))
    assert done.status == 0, done.stderr
    assert [p["name"] for p in tls_akua.packages()] == ["team/app"]


def test_bad_tls_files_are_config_errors(pki, tmp_path: Path, monkeypatch, capsys) -> None:
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("not a certificate\n")
    for extra, message in [
        (["--ca-file", str(not_pem)], "ca_file: .*junk.pem holds no usable CA certificate"),
        (["--ca-file", str(tmp_path / "missing.pem")], "--ca-file: .*missing.pem is not a readable file"),
        (["--client-cert", str(pki["client_cert"])], "client_cert and client_key: give both"),
        (["--client-cert", str(pki["client_cert"]), "--client-key", str(pki["server_key"])],
         "client_cert: .* not a usable certificate and key"),
    ]:
        done = run_in_process(["plan", "--registry", "127.0.0.1:9", *extra], monkeypatch, capsys)
        assert done.status == 2, extra
        assert re.search(message, done.stderr), (message, done.stderr)


def test_a_plain_http_registry_reached_with_tls_says_to_set_plain_http(
    seeder, registry_factory, akua: AkuaDouble, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The usual first-run mistake: a local registry without --plain-http.  The run stops
    (exit 3) with the fix in its reason, not only OpenSSL's WRONG_VERSION_NUMBER."""
    seeder.add_artifact("team/app", ["1.0.0"], annotations=package_annotations(SCHEMA, None))
    registry = registry_factory()
    done = run(registry.host, akua, tmp_path, monkeypatch, capsys, "--no-docker-config")
    assert done.status == 3
    assert "answered without TLS" in done.stderr and "plain_http = true (--plain-http)" in done.stderr
    assert "WRONG_VERSION_NUMBER" in done.stderr  # the cause, too
    assert akua.writes() == []
    done = run(registry.host, akua, tmp_path, monkeypatch, capsys, "--no-docker-config", "--plain-http")
    assert done.status == 0, done.stderr
    assert len(akua.writes()) == 1


@pytest.mark.parametrize(("failed_url", "hinted"), [
    ("https://Registry.Example.com/v2/", True),  # the registry itself (requests lowers the host)
    ("https://auth.example.com/token", False),  # its token realm: not the registry's fault
])
def test_the_plain_http_hint_is_only_for_the_registrys_own_host(failed_url: str, hinted: bool) -> None:
    """OpenSSL's WRONG_VERSION_NUMBER from another host (a token realm, a redirect) must not
    send the operator to --plain-http; the cause is in the reason either way."""
    import requests

    from crawler.registry.client import RegistryClient
    from crawler.registry.endpoint import RegistryEndpoint
    from crawler.registry.errors import RegistryUnavailable

    cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    cause.reason = "WRONG_VERSION_NUMBER"  # as OpenSSL's errors carry it
    request = requests.Request("GET", failed_url).prepare()
    client = RegistryClient(RegistryEndpoint(host="registry.example.com", use_docker_config=False))
    try:
        with pytest.raises(RegistryUnavailable) as raised, client._translated("registry.example.com /v2/"):
            raise requests.exceptions.SSLError(cause, request=request)
    finally:
        client.close()
    text = str(raised.value)
    assert ("answered without TLS" in text) is hinted
    assert "WRONG_VERSION_NUMBER" in text


def test_the_manifest_line_makes_the_checks_requests_makes(
    registry_factory, ca, pki
) -> None:
    """crawler.registry.direct (the registry threads' own connection for manifests): the
    configured CA, no verification when insecure, and the client certificate."""
    registry = registry_factory(
        tls={"certificate": str(pki["server_cert"]), "key": str(pki["server_key"]),
             "clientcas": [str(pki["ca"])]},
        tls_probe=probe(ca, pki, client=True),
    )
    base = f"https://{registry.host}"
    client = (str(pki["client_cert"]), str(pki["client_key"]))

    def get(verify: bool | str, cert: tuple[str, str] | None) -> int:
        line = DirectLine(base, timeout_s=10.0, verify=verify, cert=cert)
        try:
            answer = line.send("GET", base + "/v2/", {"Accept": "application/json"}, 1 << 16)
            assert answer is not None
            return answer.status_code
        finally:
            line.close()

    assert get(str(pki["ca"]), client) == 200
    assert get(False, client) == 200  # insecure: the certificate is not checked
    with pytest.raises(requests.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        get(True, client)  # the default bundle does not know the test CA
    with pytest.raises(requests.ConnectionError, match=r"(?i)certificate"):
        get(str(pki["ca"]), None)  # the registry requires a client certificate
    with pytest.raises(requests.ConnectionError, match="No such file"):
        get(str(pki["ca"]), (str(pki["ca"]) + ".missing", str(pki["client_key"])))


def test_the_manifest_line_refuses_a_certificate_for_another_name(
    registry_factory, ca, tmp_path: Path
) -> None:
    other = ca.issue_cert("registry.other.test")
    cert, key = tmp_path / "other.pem", tmp_path / "other.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in other.cert_chain_pems))
    other.private_key_pem.write_to_path(str(key))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    probe_context = ssl.create_default_context()
    ca.configure_trust(probe_context)
    probe_context.check_hostname = False  # the probe only waits for the registry to serve
    registry = registry_factory(tls={"certificate": str(cert), "key": str(key)},
                                tls_probe=probe_context)
    base = f"https://{registry.host}"
    line = DirectLine(base, timeout_s=10.0, verify=str(ca_file), cert=None)
    try:
        with pytest.raises(requests.ConnectionError, match="mismatch"):
            line.send("GET", base + "/v2/", {"Accept": "application/json"}, 1 << 16)
    finally:
        line.close()
    insecure = DirectLine(base, timeout_s=10.0, verify=False, cert=None)
    try:
        answer = insecure.send("GET", base + "/v2/", {"Accept": "application/json"}, 1 << 16)
        assert answer is not None and answer.status_code == 200
    finally:
        insecure.close()

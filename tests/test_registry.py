"""The registry client against a real docker-registry 2.8 and, for answers a
real registry will not give (broken bodies, loops, stalls), tiny loopback servers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

import testkit.registry
from crawler.errors import (
    ConfigError,
    CrawlerError,
    InvalidArtifact,
    RepositoryRefused,
    TransientFailure,
)
from crawler.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    BadManifest,
    Manifest,
    Registry,
    RegistryAuthFailed,
    RegistryClient,
    RegistryEndpoint,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
)
from crawler.retry import RetryPolicy
from testkit.registry import (
    INSTALL_HINT,
    LocalRegistry,
    RegistryBinaryMissing,
    Seeder,
    find_registry_binary,
    listening_port,
    listening_tcp_ports,
    listening_tcp_ports_from_proc,
    package_annotations,
)
from testkit.serving import LoopbackHandler
from tests.plugins.registry import RegistryFactory

FAST_RETRY = RetryPolicy(attempts=2, base_s=0.001, cap_s=0.01)
PASSWORD = "s3cret-Pa55word"


def endpoint(host: str, **overrides: Any) -> RegistryEndpoint:
    settings: dict[str, Any] = {"host": host, "plain_http": True, "timeout_s": 5.0}
    settings.update(overrides)
    return RegistryEndpoint(**settings)


def client_for(host: str, **overrides: Any) -> RegistryClient:
    return RegistryClient(endpoint(host, **overrides))


# ------------------------------------------------------------ tiny servers


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeRegistry:
    """A loopback HTTP server answering from ``routes`` (path with query -> reply)."""

    routes: dict[str, Reply | Callable[[BaseHTTPRequestHandler], Reply]] = field(
        default_factory=dict
    )
    seen: list[str] = field(default_factory=list)
    host: str = ""

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"


def _handler(fake: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, with_body: bool) -> None:
            fake.seen.append(f"{self.command} {self.path}")
            route = fake.routes.get(self.path)
            headers: dict[str, str]
            if route is None:
                status, headers, body = 404, {}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
            else:
                status, headers, body = route(self) if callable(route) else route
            self.send_response(status)
            sent = {"Content-Type": "application/json", **headers}
            for name, value in sent.items():
                self.send_header(name, value)
            if "Content-Length" not in sent:
                if sent.get("Connection") == "close":
                    self.close_connection = True  # body ends at EOF: no length at all
                else:
                    self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(with_body=True)

        def do_HEAD(self) -> None:
            self._reply(with_body=False)

    return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.host = f"127.0.0.1:{server.server_address[1]}"
    # A short poll interval only makes shutdown() at teardown prompt.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def stalled_host() -> Iterator[str]:
    """A loopback server that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)  # lets the accept loop notice the stop flag
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)  # keep it open, say nothing

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def manifest_reply(body: bytes, **headers: str) -> Reply:
    return 200, {"Content-Type": OCI_MANIFEST, **headers}, body


# ------------------------------------------------------------ settings


def test_endpoint_masks_the_password_and_validates() -> None:
    settings = endpoint("r.example:443", username="alice", password=PASSWORD)
    assert PASSWORD not in repr(settings)
    assert "password='***'" in repr(settings)
    assert PASSWORD not in repr(RegistryClient(settings))
    assert PASSWORD not in repr(Registry(settings))
    assert "password=None" in repr(endpoint("r.example"))
    for bad in ("https://r.example", "r.example/path", "user:pw@r.example", ""):
        with pytest.raises(ConfigError):
            endpoint(bad)
    with pytest.raises(ConfigError):
        endpoint("r.example", username="alice")
    with pytest.raises(ConfigError):
        endpoint("r.example", timeout_s=0)


def test_error_classes_sit_in_the_crawler_tree() -> None:
    assert issubclass(RegistryUnavailable, TransientFailure)
    assert issubclass(RegistryNotFound, InvalidArtifact)
    assert issubclass(BadManifest, InvalidArtifact)
    assert issubclass(RegistryAuthFailed, CrawlerError)
    assert not issubclass(RegistryAuthFailed, TransientFailure | InvalidArtifact)


# ------------------------------------------------------------ local registry


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(RegistryBinaryMissing) as caught:
        find_registry_binary(tmp_path / "docker-registry")
    assert str(caught.value) == INSTALL_HINT
    assert str(caught.value) == (
        "docker-registry not found: install it with `apt-get install -y docker-registry`"
    )


def test_local_registry_starts_serves_seeding_and_stops(registry_root: Path) -> None:
    seeder = Seeder(registry_root)
    before = seeder.add_artifact("demo/early", ["1.0.0"])
    with LocalRegistry(registry_root) as registry:
        assert registry.host.startswith("127.0.0.1:")
        assert registry.url == f"http://{registry.host}"
        pid = registry.pid
        assert pid is not None
        # Storage is read on every request: seeding after start shows at once.
        after = seeder.add_artifact("demo/late", ["2.0.0"])
        client = client_for(registry.host)
        assert client.head_manifest("demo/early", "1.0.0") == before
        assert client.head_manifest("demo/late", "2.0.0") == after
        registry.restart()
        assert client_for(registry.host).list_tags("demo/late") == ["2.0.0"]
        pid = registry.pid
    assert registry.pid is None and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: the PID no longer names our child


def test_listening_ports_read_alike_from_sock_diag_and_from_proc(
    local_registry: LocalRegistry, tripwire: socket.socket
) -> None:
    # Other workers open and close listeners meanwhile: compare only the sockets we hold.
    inode, port = os.fstat(tripwire.fileno()).st_ino, tripwire.getsockname()[1]
    assert listening_tcp_ports()[inode] == port
    assert listening_tcp_ports_from_proc(os.getpid())[inode] == port
    pid = local_registry.pid
    assert pid is not None
    assert local_registry.port in listening_tcp_ports_from_proc(pid).values()


def test_a_registrys_port_is_found_through_proc_where_sock_diag_fails(
    local_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port the registry was started on (found through sock_diag) is found again
    when netlink refuses, and netlink is not asked again in that session."""
    asked: list[bool] = []

    def refused() -> dict[int, int]:
        asked.append(True)
        raise OSError("netlink refused")

    monkeypatch.setattr(testkit.registry, "listening_tcp_ports", refused)
    monkeypatch.setattr(testkit.registry, "_sock_diag_failed", False)
    pid = local_registry.pid
    assert pid is not None
    for _ in range(2):
        assert listening_port(pid) == local_registry.port
    assert asked == [True]


# ------------------------------------------------------------ catalog and tags


def test_catalog_of_more_than_1000_repositories_is_paged(
    seeder: Seeder, registry_factory: RegistryFactory
) -> None:
    names = [f"catalog/r{i:04d}" for i in range(1005)]
    for name in names:  # the catalog only walks the tree: folders, no artifacts needed
        seeder.add_listed_repository(name)
    registry = registry_factory()

    client = client_for(registry.host)
    first = client.catalog_page(None)
    assert first.entries == names[:1000]
    assert first.link is not None and first.link.startswith(f"{registry.url}/v2/_catalog?")
    second = client.catalog_page(first.link)
    assert second.entries == names[1000:]
    assert second.link is None

    async def walk() -> tuple[list[str], int]:
        async with Registry(endpoint(registry.host), policy=FAST_RETRY) as facade:
            found = [name async for name in facade.repositories()]
            return found, facade.statistics().requests["catalog"]

    found, catalog_requests = anyio.run(walk)
    assert found == names
    assert catalog_requests == 3  # two pages, then one last= probe answering an empty page


def test_tags_including_a_repository_whose_tags_were_all_deleted(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    seeder.add_artifact("tags/full", ["1.0.0", "1.1.0", "latest"])
    seeder.add_empty_repository("tags/emptied")
    seeder.add_artifact("tags/never-tagged", [])  # no _manifests/tags directory at all
    client = client_for(local_registry.host)

    assert sorted(client.list_tags("tags/full")) == ["1.0.0", "1.1.0", "latest"]
    assert client.list_tags("tags/emptied") == []  # the registry said "tags": null
    # distribution 2.8.2 tells the two empty cases apart: without the tags
    # directory the repository is unknown to tags/list.
    with pytest.raises(RegistryNotFound) as caught:
        client.list_tags("tags/never-tagged")
    assert caught.value.code == "NAME_UNKNOWN"


def test_registry_answers_tags_null_for_the_emptied_repository(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    seeder.add_empty_repository("tags/emptied")
    with urllib.request.urlopen(f"{local_registry.url}/v2/tags/emptied/tags/list") as answer:
        assert json.loads(answer.read()) == {"name": "tags/emptied", "tags": None}


def test_unknown_repository_and_reference_are_not_found(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    seeder.add_artifact("known/pkg", ["1.0.0"])
    client = client_for(local_registry.host)
    with pytest.raises(RegistryNotFound) as caught:
        client.list_tags("unknown/pkg")
    assert caught.value.code == "NAME_UNKNOWN"
    assert local_registry.host in str(caught.value) and "unknown/pkg" in str(caught.value)

    with pytest.raises(RegistryNotFound) as caught:
        client.get_manifest("known/pkg", "9.9.9")
    assert caught.value.code == "MANIFEST_UNKNOWN"
    assert f"{local_registry.host}/known/pkg:9.9.9" in str(caught.value)

    with pytest.raises(RegistryNotFound):
        client.head_manifest("known/pkg", "9.9.9")


# ------------------------------------------------------------ manifests


def test_manifest_digest_media_type_and_document(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    annotations = package_annotations({"type": "object"}, "A demo package")
    digest = seeder.add_artifact("pkgs/demo", ["1.2.3"], annotations=annotations)
    client = client_for(local_registry.host)

    manifest = client.get_manifest("pkgs/demo", "1.2.3")
    assert isinstance(manifest, Manifest)
    assert manifest.digest == digest
    assert manifest.digest == "sha256:" + hashlib.sha256(manifest.raw).hexdigest()
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.document["annotations"] == annotations
    assert json.loads(manifest.document["annotations"]["dev.akua.package.input-schema"]) == {
        "type": "object"
    }
    assert client.get_manifest("pkgs/demo", digest).raw == manifest.raw
    assert client.head_manifest("pkgs/demo", "1.2.3") == digest


def test_docker_schema2_manifest_and_an_empty_index(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    # Every kind's outcome is in tests/test_manifest_kinds.py; here only the client.
    docker_digest = seeder.add_artifact("kinds/docker", ["1"], media_type=DOCKER_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    index_digest = seeder.add_artifact("kinds/index", ["1"], manifest_bytes=index)
    client = client_for(local_registry.host)

    docker = client.get_manifest("kinds/docker", "1")
    assert (docker.digest, docker.media_type) == (docker_digest, DOCKER_MANIFEST)
    empty = client.get_manifest("kinds/index", "1")
    assert (empty.digest, empty.media_type) == (index_digest, OCI_INDEX)
    assert empty.no_schema_reason == "index without a platform manifest and no input schema"


def test_manifest_over_the_size_limit(seeder: Seeder, local_registry: LocalRegistry) -> None:
    seeder.add_artifact("big/pkg", ["1"], annotations={"padding": "x" * 4000})
    client = client_for(local_registry.host, max_manifest_bytes=1024)
    with pytest.raises(BadManifest) as caught:
        client.get_manifest("big/pkg", "1")
    assert "limit of 1024 bytes" in str(caught.value)
    assert f"{local_registry.host}/big/pkg:1" in str(caught.value)


def test_over_limit_body_without_length_stops_reading(fake_registry: FakeRegistry) -> None:
    body = json.dumps({"schemaVersion": 2, "pad": "y" * 100_000}).encode()
    fake_registry.routes["/v2/r/manifests/1"] = manifest_reply(body, Connection="close")
    with pytest.raises(BadManifest, match="limit of 2048 bytes"):
        client_for(fake_registry.host, max_manifest_bytes=2048).get_manifest("r", "1")


def test_real_registry_answers_500_for_a_manifest_it_cannot_parse(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    # distribution parses stored manifests before serving them, so a broken
    # one never reaches us as a body: it is a 500, i.e. "unavailable".  The
    # BadManifest checks for broken bodies are exercised with a fake below.
    seeder.add_artifact("broken/pkg", ["1"], manifest_bytes=b"not json{")
    with pytest.raises(RegistryUnavailable, match="HTTP 500 UNKNOWN"):
        client_for(local_registry.host).get_manifest("broken/pkg", "1")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json{", "manifest is not JSON: Expecting value at line 1 column 1"),
        (b'{"a": "\xff"}', "manifest is not UTF-8 (byte 7)"),
        (b"[1, 2]", "manifest is JSON but not an object (list)"),
    ],
)
def test_manifest_that_is_not_a_json_object(
    fake_registry: FakeRegistry, body: bytes, reason: str
) -> None:
    fake_registry.routes["/v2/r/manifests/1"] = manifest_reply(body)
    with pytest.raises(BadManifest) as caught:
        client_for(fake_registry.host).get_manifest("r", "1")
    assert str(caught.value) == f"{fake_registry.host}/r:1: {reason}"


def test_manifest_digest_header_must_match_the_body(fake_registry: FakeRegistry) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    wrong = "sha256:" + "0" * 64
    fake_registry.routes["/v2/r/manifests/good"] = manifest_reply(
        body, **{"Docker-Content-Digest": good}
    )
    fake_registry.routes["/v2/r/manifests/wrong"] = manifest_reply(
        body, **{"Docker-Content-Digest": wrong}
    )
    fake_registry.routes["/v2/r/manifests/odd"] = manifest_reply(
        body, **{"Docker-Content-Digest": "md5:abc"}
    )
    fake_registry.routes[f"/v2/r/manifests/{wrong}"] = manifest_reply(body)
    client = client_for(fake_registry.host)

    assert client.get_manifest("r", "good").digest == good
    assert client.get_manifest("r", "odd").digest == good  # unusable header: hash the bytes
    with pytest.raises(BadManifest, match="Docker-Content-Digest says sha256:0000"):
        client.get_manifest("r", "wrong")
    with pytest.raises(BadManifest, match="reference says sha256:0000") as caught:
        client.get_manifest("r", wrong)
    assert f"{fake_registry.host}/r@{wrong}" in str(caught.value)


def test_media_type_from_content_type_parameters_and_fallback(
    fake_registry: FakeRegistry,
) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}).encode()
    fake_registry.routes["/v2/r/manifests/params"] = manifest_reply(
        body, **{"Content-Type": f"{OCI_MANIFEST}; charset=utf-8"}
    )
    fake_registry.routes["/v2/r/manifests/generic"] = manifest_reply(
        body, **{"Content-Type": "application/json"}
    )
    fake_registry.routes["/v2/r/manifests/other"] = manifest_reply(
        body, **{"Content-Type": "text/html"}
    )
    client = client_for(fake_registry.host)
    assert client.get_manifest("r", "params").media_type == OCI_MANIFEST
    assert client.get_manifest("r", "generic").media_type == DOCKER_MANIFEST
    with pytest.raises(BadManifest, match="unexpected media type text/html"):
        client.get_manifest("r", "other")


def test_head_reads_the_digest_header_and_gets_only_without_one(
    fake_registry: FakeRegistry,
) -> None:
    digest = "sha256:" + "a" * 64
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    fake_registry.routes["/v2/r/manifests/1"] = manifest_reply(
        b"", **{"Docker-Content-Digest": digest}
    )
    fake_registry.routes["/v2/r/manifests/2"] = manifest_reply(body)
    fake_registry.routes["/v2/r/manifests/3"] = manifest_reply(
        body, **{"Docker-Content-Digest": "sha256:short"}
    )
    client = client_for(fake_registry.host)
    assert client.head_manifest("r", "1") == digest
    assert fake_registry.seen == ["HEAD /v2/r/manifests/1"]
    computed = "sha256:" + hashlib.sha256(body).hexdigest()
    assert client.head_manifest("r", "2") == computed  # no header: GET and hash the bytes
    assert client.head_manifest("r", "3") == computed  # unusable header: the same
    assert fake_registry.seen[1:] == [
        "HEAD /v2/r/manifests/2", "GET /v2/r/manifests/2",
        "HEAD /v2/r/manifests/3", "GET /v2/r/manifests/3",
    ]


# ------------------------------------------------------------ pagination guards


def _tags_page(tags: list[str], link: str | None = None) -> Reply:
    headers = {"Link": f'<{link}>; rel="next"'} if link else {}
    return 200, headers, json.dumps({"name": "r", "tags": tags}).encode()


def test_tags_follow_relative_and_absolute_links(fake_registry: FakeRegistry) -> None:
    fake_registry.routes.update(
        {
            "/v2/r/tags/list?n=1000": _tags_page(["a", "b"], "/v2/r/tags/list?last=b&n=1000"),
            "/v2/r/tags/list?last=b&n=1000": _tags_page(
                ["c"], fake_registry.url("/v2/r/tags/list?last=c&n=1000")
            ),
            "/v2/r/tags/list?last=c&n=1000": _tags_page(["d", "b"], "list?last=d&n=1000"),
            "/v2/r/tags/list?last=d&n=1000": _tags_page(["e"]),
        }
    )
    assert client_for(fake_registry.host).list_tags("r") == ["a", "b", "c", "d", "e"]


def test_tags_stop_when_the_registry_repeats_a_page(fake_registry: FakeRegistry) -> None:
    # The same page again and again, always linking to itself.
    fake_registry.routes["/v2/r/tags/list?n=1000"] = _tags_page(["a"], "/v2/r/tags/list?n=1000")
    assert client_for(fake_registry.host).list_tags("r") == ["a"]
    assert fake_registry.seen == ["GET /v2/r/tags/list?n=1000"]


def test_tags_stop_when_new_urls_bring_no_new_tags(fake_registry: FakeRegistry) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> Reply:
        page = int(parse_qs(urlsplit(handler.path).query).get("page", ["0"])[0])
        return _tags_page(["a", "b"], f"/v2/r/tags/list?n=1000&page={page + 1}")

    fake_registry.routes["/v2/r/tags/list?n=1000"] = endless
    fake_registry.routes["/v2/r/tags/list?n=1000&page=1"] = endless
    assert client_for(fake_registry.host).list_tags("r") == ["a", "b"]
    assert len(fake_registry.seen) == 2


def test_link_off_the_registry_is_refused(fake_registry: FakeRegistry) -> None:
    fake_registry.routes["/v2/r/tags/list?n=1000"] = _tags_page(
        ["a"], "http://elsewhere.invalid/v2/r/tags/list?last=a"
    )
    with pytest.raises(RegistryProtocolError, match="points off the registry"):
        client_for(fake_registry.host).list_tags("r")


def test_catalog_null_and_bad_listings(fake_registry: FakeRegistry) -> None:
    fake_registry.routes["/v2/_catalog?n=1000"] = (200, {}, b'{"repositories": null}')
    fake_registry.routes["/v2/bad/tags/list?n=1000"] = (200, {}, b'{"tags": [1]}')
    fake_registry.routes["/v2/html/tags/list?n=1000"] = (200, {}, b"<html>")
    client = client_for(fake_registry.host)
    assert (client.catalog_page(None).entries, client.catalog_page(None).link) == ([], None)
    with pytest.raises(RegistryProtocolError, match="not a list of strings"):
        client.list_tags("bad")
    with pytest.raises(RegistryProtocolError, match="listing is not JSON"):
        client.list_tags("html")


# ------------------------------------------------------------ failures and retries


def test_refused_connection_is_unavailable_quickly(refused_host: str) -> None:
    host = refused_host  # nothing listens there

    async def attempt() -> Registry:
        facade = Registry(endpoint(host), policy=FAST_RETRY)
        with pytest.raises(RegistryUnavailable) as caught:
            await facade.tags("some/repo")
        assert "cannot reach the registry" in str(caught.value)
        assert f"{host}/some/repo" in str(caught.value)
        return facade

    facade = anyio.run(attempt)
    stats = facade.statistics()
    assert (stats.requests["tags"], stats.retries, stats.failures) == (2, 1, 1)
    facade.close()


def test_stalled_server_hits_the_timeout(stalled_host: str) -> None:
    async def attempt() -> Registry:
        facade = Registry(endpoint(stalled_host, timeout_s=0.5), policy=FAST_RETRY)
        with pytest.raises(RegistryUnavailable, match=r"no complete answer within 0.5s"):
            await facade.manifest("slow/repo", "1.0.0")
        return facade

    facade = anyio.run(attempt)
    # Two attempts, each cut by the deadline: our retry budget, not oras' minutes of its own.
    stats = facade.statistics()
    assert (stats.requests["manifest_get"], stats.retries, stats.failures) == (2, 1, 1)
    facade.close()


def test_unavailable_answers_are_retried_honouring_retry_after(
    fake_registry: FakeRegistry,
) -> None:
    answers = iter(
        [
            (503, {"Retry-After": "0"}, b'{"errors":[{"code":"UNAVAILABLE"}]}'),
            (429, {"Retry-After": "0"}, b""),
            _tags_page(["1.0.0"]),
        ]
    )
    fake_registry.routes["/v2/r/tags/list?n=1000"] = lambda handler: next(answers)

    async def attempt() -> tuple[list[str], Any]:
        slow = RetryPolicy(attempts=3, base_s=60.0, cap_s=60.0)  # Retry-After: 0 must win
        async with Registry(endpoint(fake_registry.host), policy=slow) as facade:
            return await facade.tags("r"), facade.statistics()

    tags, stats = anyio.run(attempt)
    assert tags == ["1.0.0"]
    # Three tries of the page, then the last= probe (404 here: the listing is complete).
    assert (stats.retries, stats.failures, stats.requests["tags"]) == (2, 0, 4)


def test_retry_after_is_parsed_into_the_error(fake_registry: FakeRegistry) -> None:
    fake_registry.routes["/v2/r/tags/list?n=1000"] = (503, {"Retry-After": "7"}, b"")
    with pytest.raises(RegistryUnavailable) as caught:
        client_for(fake_registry.host).list_tags("r")
    assert caught.value.retry_after == 7.0
    fake_registry.routes["/v2/r/tags/list?n=1000"] = (503, {"Retry-After": "\u00b2"}, b"")
    with pytest.raises(RegistryUnavailable) as caught:
        client_for(fake_registry.host).list_tags("r")
    assert caught.value.retry_after is None


def test_concurrent_calls_share_the_named_limiter(
    seeder: Seeder, local_registry: LocalRegistry
) -> None:
    digests = {f"{i}.0.0": seeder.add_artifact("many/pkg", [f"{i}.0.0"]) for i in range(20)}

    async def fetch_all() -> tuple[dict[str, str], Any]:
        found: dict[str, str] = {}
        async with Registry(endpoint(local_registry.host), max_in_flight=3) as facade:

            async def one(tag: str) -> None:
                found[tag] = (await facade.manifest("many/pkg", tag)).digest

            async with anyio.create_task_group() as group:
                for tag in digests:
                    group.start_soon(one, tag)
            return found, facade.statistics()

    found, stats = anyio.run(fetch_all)
    assert found == digests
    assert stats.limiter_name == Registry.limiter_name == "registry"
    assert (stats.max_in_flight, stats.in_flight, stats.waiting) == (3, 0, 0)
    assert stats.requests == {
        "catalog": 0, "tags": 0, "manifest_get": 20, "manifest_head": 0, "blob_get": 0
    }
    assert stats.total_requests == 20


# ------------------------------------------------------------ authentication


def test_basic_auth_with_htpasswd(registry_factory: RegistryFactory, seeder: Seeder) -> None:
    digest = seeder.add_artifact("private/pkg", ["1.0.0"])
    registry = registry_factory(users={"alice": PASSWORD})

    client = client_for(registry.host, username="alice", password=PASSWORD)
    assert client.list_tags("private/pkg") == ["1.0.0"]
    assert client.get_manifest("private/pkg", "1.0.0").digest == digest
    assert client.head_manifest("private/pkg", "1.0.0") == digest
    assert client.catalog_page(None).entries == ["private/pkg"]

    secrets = (PASSWORD, base64.b64encode(f"alice:{PASSWORD}".encode()).decode())
    wrong = client_for(registry.host, username="alice", password="not-" + PASSWORD)
    anonymous = client_for(registry.host)
    calls: list[Callable[[RegistryClient], object]] = [
        lambda c: c.list_tags("private/pkg"),
        lambda c: c.get_manifest("private/pkg", "1.0.0"),
        lambda c: c.head_manifest("private/pkg", "1.0.0"),
    ]
    for candidate in (wrong, anonymous):
        for call in calls:
            # Refused on a repository request: that repository ends, the run goes on.
            with pytest.raises(RepositoryRefused) as caught:
                call(candidate)
            assert caught.value.repository == "private/pkg"
            assert caught.value.user == candidate.endpoint.username
            text = f"{caught.value} {caught.value!r} {candidate!r} {candidate.endpoint!r}"
            assert f"{registry.host}/private/pkg" in text
            assert not any(secret in text for secret in secrets)
            assert "not-" + PASSWORD not in text
    with pytest.raises(RepositoryRefused, match="'private/pkg' for user 'alice'"):
        wrong.list_tags("private/pkg")
    with pytest.raises(RepositoryRefused, match="'private/pkg' for user anonymous"):
        anonymous.list_tags("private/pkg")
    # Refused at GET /v2/ (or the catalog): the credentials themselves, the run stops.
    client.check_access()
    with pytest.raises(RegistryAuthFailed, match="refused the credentials of user 'alice'"):
        wrong.check_access()
    with pytest.raises(RegistryAuthFailed, match="none are configured"):
        anonymous.check_access()
    with pytest.raises(RegistryAuthFailed, match="refused the credentials of user 'alice'"):
        wrong.catalog_page(None)


def test_docker_config_credentials(
    registry_factory: RegistryFactory,
    seeder: Seeder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeder.add_artifact("private/pkg", ["1.0.0"])
    registry = registry_factory(users={"bob": PASSWORD})
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {registry.host: {"auth": auth}}})
    )
    monkeypatch.setenv("HOME", str(home))
    client = client_for(registry.host, use_docker_config=True)
    assert client.list_tags("private/pkg") == ["1.0.0"]


def test_token_auth_gets_a_new_token_for_each_scope(fake_registry: FakeRegistry) -> None:
    """oras keeps its first token for every scope; the client must fetch another."""
    issued: list[str] = []
    basic = "Basic " + base64.b64encode(f"carol:{PASSWORD}".encode()).decode()

    def token(handler: BaseHTTPRequestHandler) -> Reply:
        if handler.headers.get("Authorization") != basic:
            return 401, {}, b"{}"
        scope = parse_qs(urlsplit(handler.path).query)["scope"][0]
        issued.append(scope)
        return 200, {}, json.dumps({"token": f"tok:{scope}"}).encode()

    def protected(repo: str) -> Callable[[BaseHTTPRequestHandler], Reply]:
        scope = f"repository:{repo}:pull"

        def answer(handler: BaseHTTPRequestHandler) -> Reply:
            if handler.headers.get("Authorization") == f"Bearer tok:{scope}":
                return _tags_page([f"{repo}-1"])
            challenge = (
                f'Bearer realm="{fake_registry.url("/token")}",service="fake",scope="{scope}"'
            )
            return 401, {"Www-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'

        return answer

    for repo in ("one", "two"):
        fake_registry.routes[f"/v2/{repo}/tags/list?n=1000"] = protected(repo)
        fake_registry.routes[f"/v2/{repo}/tags/list?n=1000&last={repo}-1"] = protected(repo)
        for path in (
            f"/token?service=fake&scope=repository%3A{repo}%3Apull",
            f"/token?scope=repository%3A{repo}%3Apull&service=fake",
        ):
            fake_registry.routes[path] = token
    client = client_for(fake_registry.host, username="carol", password=PASSWORD)
    assert client.list_tags("one") == ["one-1"]
    assert client.list_tags("two") == ["two-1"]
    assert client.list_tags("one") == ["one-1"]
    assert issued == ["repository:one:pull", "repository:two:pull", "repository:one:pull"]


def test_manifest_requests_reuse_the_token_and_fetch_one_per_scope(
    fake_registry: FakeRegistry,
) -> None:
    """The lean manifest path (oras_compat W11) sends the token oras holds, and on a
    401 for another scope gets a fitting one through oras' challenge path."""
    issued: list[str] = []
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()

    def token(handler: BaseHTTPRequestHandler) -> Reply:
        scope = parse_qs(urlsplit(handler.path).query)["scope"][0]
        issued.append(scope)
        return 200, {}, json.dumps({"token": f"tok:{scope}"}).encode()

    def protected(repo: str) -> Callable[[BaseHTTPRequestHandler], Reply]:
        scope = f"repository:{repo}:pull"

        def answer(handler: BaseHTTPRequestHandler) -> Reply:
            if handler.headers.get("Authorization") == f"Bearer tok:{scope}":
                return manifest_reply(body)
            challenge = (
                f'Bearer realm="{fake_registry.url("/token")}",service="fake",scope="{scope}"'
            )
            return 401, {"Www-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'

        return answer

    for repo in ("one", "two"):
        for tag in ("1", "2"):
            fake_registry.routes[f"/v2/{repo}/manifests/{tag}"] = protected(repo)
        for path in (
            f"/token?service=fake&scope=repository%3A{repo}%3Apull",
            f"/token?scope=repository%3A{repo}%3Apull&service=fake",
        ):
            fake_registry.routes[path] = token
    client = client_for(fake_registry.host, username="carol", password=PASSWORD)
    for repo, tag in (("one", "1"), ("one", "2"), ("two", "1"), ("two", "2")):
        assert client.get_manifest(repo, tag).raw == body
    assert issued == ["repository:one:pull", "repository:two:pull"]
    manifests = [line for line in fake_registry.seen if "/manifests/" in line]
    # one: 401, token, 200, then 200 with the same token; two: the other scope's
    # token gets a 401, a fitting token, 200, then 200.
    assert manifests == [
        "GET /v2/one/manifests/1", "GET /v2/one/manifests/1", "GET /v2/one/manifests/2",
        "GET /v2/two/manifests/1", "GET /v2/two/manifests/1", "GET /v2/two/manifests/2",
    ]


def test_interleaved_repositories_keep_their_tokens(
    seeder: Seeder, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    """oras_compat W12 against a real token server: one client reading manifests of
    two repositories in turn asks for one token per repository, not one per switch."""
    from testkit.token_server import TokenServer

    tags = [f"1.{i}.0" for i in range(3)]
    for repo in ("tok/a", "tok/b"):
        for tag in tags:
            seeder.add_artifact(repo, [tag], annotations={"n": f"{repo}:{tag}"})
    grants = ("repository:tok/a:pull", "repository:tok/b:pull")
    tokens = TokenServer(users={"carol": PASSWORD}, grants={"carol": grants},
                         workdir=tmp_path / "tokens").start()
    try:
        registry = registry_factory(token_auth=tokens.registry_auth())
        client = client_for(registry.host, username="carol", password=PASSWORD)
        for tag in tags:
            for repo in ("tok/a", "tok/b"):
                assert client.get_manifest(repo, tag).annotations == {"n": f"{repo}:{tag}"}
        assert [r.scopes for r in tokens.requests] == [("repository:tok/a:pull",),
                                                       ("repository:tok/b:pull",)]
    finally:
        tokens.close()


def test_heads_of_several_tags_in_one_call(seeder: Seeder, local_registry: LocalRegistry) -> None:
    one = seeder.add_artifact("heads/pkg", ["1.0.0", "v1.0.0"])
    other = seeder.add_artifact("heads/pkg", ["1.0.0_build"], annotations={"x": "y"})

    async def go() -> tuple[dict[str, str], dict[str, str], Any]:
        async with Registry(endpoint(local_registry.host)) as facade:
            found = await facade.heads("heads/pkg", ["v1.0.0", "1.0.0_build"])
            return found, await facade.heads("heads/pkg", []), facade.statistics()

    found, none, stats = anyio.run(go)
    assert found == {"v1.0.0": one, "1.0.0_build": other}
    assert none == {}
    assert stats.requests["manifest_head"] == 2

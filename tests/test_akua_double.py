"""The Akua double itself: it must be as strict as Akua and fail as asked."""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from crawler.retry import parse_retry_after
from testkit.akua_double import AkuaDouble

MakeAkua = Callable[..., AkuaDouble]
SCHEMA = {"type": "object", "properties": {"replicas": {"type": "integer"}}}


def import_body(
    name: str = "demo", oci_ref: str = "oci://registry.example/demo", semver: str = "1.0.0"
) -> dict[str, Any]:
    return {
        "name": name,
        "oci_ref": oci_ref,
        "description": "a demo package",
        "version": {"semver": semver, "ref": f"{oci_ref}:{semver}", "input_schema": SCHEMA},
    }


def version_body(semver: str = "1.1.0") -> dict[str, Any]:
    return {"semver": semver, "ref": f"ref-{semver}", "input_schema": SCHEMA}


@pytest.fixture
def api(akua: AkuaDouble, akua_token: str) -> Iterator[httpx.Client]:
    with client_for(akua, akua_token) as client:
        yield client


@functools.cache
def tls() -> ssl.SSLContext:
    """One verifying context for every client here: building one loads the CA bundle (~0.1 s)."""
    return httpx.create_ssl_context()


def client_for(double: AkuaDouble, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=double.url, headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=tls()
    )


def get(url: str, **options: Any) -> httpx.Response:
    return httpx.get(url, verify=tls(), **options)


def post(url: str, **options: Any) -> httpx.Response:
    return httpx.post(url, verify=tls(), **options)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The one error in a default envelope, after checking the envelope's shape."""
    doc = response.json()
    assert doc["success"] is False
    assert doc["result"] == {}
    assert len(doc["errors"]) >= 1
    assert all(e["code"] == response.status_code for e in doc["errors"])
    error: dict[str, Any] = doc["errors"][0]
    return error


# --- the happy path -------------------------------------------------------


def test_import_create_version_get_and_list(akua: AkuaDouble, api: httpx.Client) -> None:
    imported = api.post("/packages:import", json=import_body())
    assert imported.status_code == 201
    pkg = imported.json()
    assert pkg["id"].startswith("pkg_")
    assert pkg["html_url"] == f"https://akua.dev/packages/{pkg['id']}"
    assert pkg["workspace_id"].startswith("ws_")
    assert pkg["name"] == "demo"
    assert pkg["description"] == "a demo package"
    assert pkg["display_image_url"] is None
    assert pkg["source"] == {"kind": "oci", "oci_ref": "oci://registry.example/demo"}
    assert isinstance(pkg["created_at"], int)
    first_version_id = pkg["latest_version_id"]
    assert first_version_id.startswith("ver_")

    created = api.post(f"/packages/{pkg['id']}/versions", json=version_body("1.1.0"))
    assert created.status_code == 201
    ver = created.json()
    assert ver["id"].startswith("ver_")
    assert ver["package_id"] == pkg["id"]
    assert (ver["semver"], ver["ref"], ver["input_schema"]) == ("1.1.0", "ref-1.1.0", SCHEMA)
    assert isinstance(ver["published_at"], int)
    assert isinstance(ver["created_at"], int)

    fetched = api.get(f"/packages/{pkg['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["latest_version_id"] == ver["id"]

    versions = api.get(f"/packages/{pkg['id']}/versions").json()
    assert [v["semver"] for v in versions["data"]] == ["1.1.0", "1.0.0"]  # newest first
    assert versions["data"][1]["id"] == first_version_id
    assert (versions["has_more"], versions["next_cursor"]) == (False, None)

    listing = api.get("/packages").json()
    assert [p["id"] for p in listing["data"]] == [pkg["id"]]
    assert [w.created_id for w in akua.writes()] == [pkg["id"], ver["id"]]
    assert akua.counts()["201"] == 2


def test_colon_may_be_percent_encoded(akua: AkuaDouble, api: httpx.Client) -> None:
    for spelling in ("%3A", "%3a"):
        name = f"pkg-{spelling}"
        response = api.post(
            f"/packages{spelling}import", json=import_body(name, f"oci://r.example/{name}")
        )
        assert response.status_code == 201, response.text
    assert len(akua.packages()) == 2


def test_keep_alive_serves_several_requests_on_one_connection(
    akua: AkuaDouble, akua_token: str
) -> None:
    where = urlsplit(akua.url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    sockets = []
    try:
        for _ in range(3):
            conn.request("GET", "/v1/packages", headers={"Authorization": f"Bearer {akua_token}"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Length") is not None
            assert response.getheader("Connection") != "close"
            response.read()
            sockets.append(conn.sock)
        # http.client drops its socket after a closing answer and opens a new one.
        assert sockets[0] is not None
        assert sockets == [sockets[0]] * 3
    finally:
        conn.close()


# --- authentication and headers ---------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic c2tfYWt1YV90ZXN0X3Rva2Vu", "sk_akua_test_token"]
)
def test_401_without_the_right_bearer_token(akua: AkuaDouble, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = post(f"{akua.url}/packages:import", json=import_body(), headers=headers)
    assert response.status_code == 401
    assert error_of(response)["message"]
    assert akua.packages() == []
    assert akua.received[-1].status == 401


def test_received_masks_the_token(akua: AkuaDouble, api: httpx.Client, akua_token: str) -> None:
    api.get("/packages")
    headers = akua.received[-1].headers
    assert headers["authorization"] == "Bearer ***"
    assert akua_token not in json.dumps(akua.state(log=True))


def test_akua_context_length_and_required_workspace(
    make_akua: MakeAkua, akua_token: str
) -> None:
    double = make_akua(required_workspace="ws_team")
    with client_for(double, akua_token) as api:
        assert api.get("/packages").status_code == 200  # absent: the token's own workspace
        assert api.get("/packages", headers={"akua-context": "ws_team"}).status_code == 200
        other = api.get("/packages", headers={"akua-context": "ws_other"})
        assert other.status_code == 403
        assert error_of(other)["path"] == ["header", "akua-context"]
        too_long = api.get("/packages", headers={"akua-context": "w" * 54})
        assert too_long.status_code == 422
        assert error_of(too_long)["path"] == ["header", "akua-context"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_415_unless_the_body_is_declared_json(
    akua: AkuaDouble, api: httpx.Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = api.post(
        "/packages:import", content=json.dumps(import_body()).encode(), headers=headers
    )
    assert response.status_code == 415
    assert error_of(response)["path"] == ["header", "content-type"]
    assert akua.packages() == []


def test_content_type_parameters_are_allowed(api: httpx.Client) -> None:
    response = api.post(
        "/packages:import",
        content=json.dumps(import_body()).encode(),
        headers={"Content-Type": "Application/JSON; charset=UTF-8"},
    )
    assert response.status_code == 201


# --- validation ---------------------------------------------------------------


def _with(path: list[str], value: Any) -> dict[str, Any]:
    body = import_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_with(["surprise"], 1), ["body", "surprise"]),
        (_with(["version", "surprise"], 1), ["body", "version", "surprise"]),
        (_with(["version", "semver"], "v1.0.0"), ["body", "version", "semver"]),
        (_with(["version", "semver"], "1.0"), ["body", "version", "semver"]),
        (_with(["version", "semver"], "01.0.0"), ["body", "version", "semver"]),
        # Python's re would accept these two; ECMA-262 (JSON Schema's regex) does not.
        (_with(["version", "semver"], "1.0.0\n"), ["body", "version", "semver"]),
        (_with(["version", "semver"], "1\u0661.0.0"), ["body", "version", "semver"]),
        (_with(["name"], "n" * 121), ["body", "name"]),
        (_with(["name"], ""), ["body", "name"]),
        (_with(["oci_ref"], "registry.example/demo"), ["body", "oci_ref"]),
        (_with(["oci_ref"], "docker://registry.example/demo"), ["body", "oci_ref"]),
        (_with(["description"], "d" * 1001), ["body", "description"]),
        (_with(["display_image_url"], "not a uri"), ["body", "display_image_url"]),
        (_with(["version", "input_schema"], []), ["body", "version", "input_schema"]),
        (_with(["version", "ref"], "r" * 513), ["body", "version", "ref"]),
        ({"name": "demo", "oci_ref": "oci://r/demo"}, ["body", "version"]),
        (
            _with(
                ["version", "compatibility"],
                {"clusterTypes": [], "kubernetes": {}, "placement": {"providers": "all", "regions": []}},
            ),
            ["body", "version", "compatibility", "placement", "providers"],
        ),
    ],
)
def test_422_names_the_failing_field(
    akua: AkuaDouble, api: httpx.Client, body: dict[str, Any], path: list[str]
) -> None:
    response = api.post("/packages:import", json=body)
    assert response.status_code == 422, response.text
    assert [e["path"] for e in response.json()["errors"]] == [path]
    assert akua.packages() == []


def test_valid_edge_values_pass(akua: AkuaDouble, api: httpx.Client) -> None:
    body = import_body("n" * 120, semver="1.0.0-rc.1+build.5")
    body["display_image_url"] = "https://img.example/x.png"
    body["version"]["compatibility"] = {
        "clusterTypes": ["eks"],
        "kubernetes": {"minVersion": "1.28"},
        "placement": {"providers": "any", "regions": ["eu-west-1"]},
    }
    response = api.post("/packages:import", json=body, headers={"idempotency-key": "k" * 64})
    assert response.status_code == 201, response.text
    assert response.json()["display_image_url"] == "https://img.example/x.png"


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b'{"name": "a", "name": "b"}', b"NaN"],
)
def test_422_for_a_body_that_is_not_one_json_object(api: httpx.Client, raw: bytes) -> None:
    response = api.post(
        "/packages:import", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["path"] == ["body"]


@pytest.mark.parametrize("key", ["", "k" * 65])
def test_422_for_an_idempotency_key_outside_1_to_64(
    akua: AkuaDouble, api: httpx.Client, key: str
) -> None:
    response = api.post("/packages:import", json=import_body(), headers={"idempotency-key": key})
    assert response.status_code == 422
    assert error_of(response)["path"] == ["header", "idempotency-key"]
    assert akua.packages() == []


def test_version_body_is_validated_too(akua: AkuaDouble, api: httpx.Client) -> None:
    package_id = akua.add_package("demo", "oci://r/demo", [("1.0.0", "r", {})])
    body = version_body("1.0") | {"extra": True}
    response = api.post(f"/packages/{package_id}/versions", json=body)
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == [
        ["body", "extra"],
        ["body", "semver"],
    ]


# --- conflicts, unknown packages, idempotency --------------------------------------


def test_409_for_a_taken_name_or_oci_ref(akua: AkuaDouble, api: httpx.Client) -> None:
    assert api.post("/packages:import", json=import_body("a", "oci://r/a")).status_code == 201
    same_name = api.post("/packages:import", json=import_body("a", "oci://r/other"))
    assert same_name.status_code == 409
    assert error_of(same_name)["path"] == ["body", "name"]
    same_ref = api.post("/packages:import", json=import_body("other", "oci://r/a"))
    assert same_ref.status_code == 409
    assert error_of(same_ref)["path"] == ["body", "oci_ref"]
    assert len(akua.packages()) == 1
    assert not akua.find_duplicates()


def test_409_for_an_existing_semver(akua: AkuaDouble, api: httpx.Client) -> None:
    package_id = akua.add_package("demo", "oci://r/demo", [("1.0.0", "r", {})])
    assert api.post(f"/packages/{package_id}/versions", json=version_body("1.1.0")).status_code == 201
    again = api.post(f"/packages/{package_id}/versions", json=version_body("1.1.0"))
    assert again.status_code == 409
    first = api.post(f"/packages/{package_id}/versions", json=version_body("1.0.0"))
    assert first.status_code == 409
    assert [v["semver"] for v in akua.versions(package_id)] == ["1.0.0", "1.1.0"]


def test_404_for_an_unknown_package(api: httpx.Client) -> None:
    assert api.post("/packages/pkg_nope/versions", json=version_body()).status_code == 404
    assert api.get("/packages/pkg_nope").status_code == 404
    missing = api.get("/packages/pkg_nope/versions")
    assert missing.status_code == 404
    assert error_of(missing)["path"] == ["path", "id"]
    assert api.get("/nowhere").status_code == 404


def test_405_for_a_wrong_method(api: httpx.Client) -> None:
    response = api.delete("/packages")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_idempotent_import_returns_the_first_answer(akua: AkuaDouble, api: httpx.Client) -> None:
    key = {"idempotency-key": "import-demo-1"}
    first = api.post("/packages:import", json=import_body(), headers=key)
    again = api.post("/packages:import", json=import_body(), headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert len(akua.packages()) == 1
    assert len(akua.writes()) == 1  # the replay is no new write
    other_body = api.post("/packages:import", json=import_body("x", "oci://r/x"), headers=key)
    assert other_body.status_code == 422
    assert error_of(other_body)["path"] == ["header", "idempotency-key"]


def test_without_unique_names_a_second_import_makes_a_duplicate(
    make_akua: MakeAkua, akua_token: str
) -> None:
    double = make_akua(unique_names=False)
    with client_for(double, akua_token) as api:
        first = api.post("/packages:import", json=import_body())
        second = api.post("/packages:import", json=import_body())
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    dups = double.find_duplicates()
    assert dups
    assert dups.oci_refs == {
        "oci://registry.example/demo": [first.json()["id"], second.json()["id"]]
    }
    assert dups.oci_versions == [("oci://registry.example/demo", "1.0.0")]
    assert dups.versions == []


def test_find_duplicates_on_preloaded_state(akua: AkuaDouble) -> None:
    a = akua.add_package("a", "oci://r/a", [("1.0.0", "r", {}), ("2.0.0", "r2", {})])
    akua.add_package("b", "oci://r/b", [("1.0.0", "r", {})])
    assert not akua.find_duplicates()
    b2 = akua.add_package("a-again", "oci://r/a", [("2.0.0", "r2", {})])
    dups = akua.find_duplicates()
    assert dups.oci_refs == {"oci://r/a": [a, b2]}
    assert dups.oci_versions == [("oci://r/a", "2.0.0")]
    with pytest.raises(ValueError, match="same semver"):
        akua.add_package("c", "oci://r/c", [("1.0.0", "r", {}), ("1.0.0", "r", {})])
    with pytest.raises(ValueError, match="SemVer"):
        akua.add_package("d", "oci://r/d", [("v1", "r", {})])


def test_concurrent_imports_of_one_name_create_one_package(
    akua: AkuaDouble, akua_token: str
) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        with client_for(akua, akua_token) as api:
            barrier.wait()  # all eight at once: the lock, not luck, must decide
            statuses.append(api.post("/packages:import", json=import_body()).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 7
    assert len(akua.packages()) == 1


# --- the published artifact ---------------------------------------------------------


def test_expected_artifact_is_compared(make_akua: MakeAkua, akua_token: str) -> None:
    ref = "oci://registry.example/demo:1.0.0"
    double = make_akua(expected={("oci://registry.example/demo", "1.0.0"): (ref, SCHEMA)})
    with client_for(double, akua_token) as api:
        wrong_ref = import_body()
        wrong_ref["version"]["ref"] = "oci://elsewhere"
        response = api.post("/packages:import", json=wrong_ref)
        assert response.status_code == 422
        assert error_of(response) == {
            "code": 422,
            "message": "ref does not match the published artifact",
            "path": ["body", "version", "ref"],
        }
        wrong_schema = import_body()
        wrong_schema["version"]["input_schema"] = {"type": "object"}
        response = api.post("/packages:import", json=wrong_schema)
        assert error_of(response)["message"] == "input_schema does not match the published artifact"
        unknown = api.post("/packages:import", json=import_body(semver="9.9.9"))
        assert unknown.status_code == 422
        assert api.post("/packages:import", json=import_body()).status_code == 201


# --- rate limits and injected faults -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_write_rate_limit_answers_429_with_retry_after_seconds(
    make_akua: MakeAkua, akua_token: str
) -> None:
    clock = FakeClock()
    double = make_akua(write_rate_limit=0.001, write_burst=1, clock=clock)
    with client_for(double, akua_token) as api:
        assert api.post("/packages:import", json=import_body("a", "oci://r/a")).status_code == 201
        limited = api.post("/packages:import", json=import_body("b", "oci://r/b"))
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1000"  # one token per 1000 s
        assert error_of(limited)["code"] == 429
        assert api.get("/packages").status_code == 200  # reads are not limited
        clock.now += 1000
        assert api.post("/packages:import", json=import_body("b", "oci://r/b")).status_code == 201
    assert double.counts()["429"] == 1
    assert len(double.packages()) == 2


def test_retry_after_as_http_date(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua(write_rate_limit=0.01, write_burst=1, retry_after="date", clock=FakeClock())
    with client_for(double, akua_token) as api:
        api.post("/packages:import", json=import_body("a", "oci://r/a"))
        limited = api.post("/packages:import", json=import_body("b", "oci://r/b"))
    assert limited.status_code == 429
    value = limited.headers["Retry-After"]
    assert value.endswith(" GMT")
    wait = parse_retry_after(value)
    assert wait is not None
    assert 90 <= wait <= 101  # 100 s, read back at one-second resolution


def test_retry_after_can_be_left_out(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua(force_429_rate=1.0, retry_after=None)
    with client_for(double, akua_token) as api:
        response = api.get("/packages")
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_forced_429_hits_reads_and_writes(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua(force_429_rate=1.0)
    with client_for(double, akua_token) as api:
        read = api.get("/packages")
        write = api.post("/packages:import", json=import_body())
    assert (read.status_code, write.status_code) == (429, 429)
    assert read.headers["Retry-After"] == "1"
    assert double.packages() == []
    assert double.counts()["429"] == 2


def test_5xx_faults_come_before_anything(make_akua: MakeAkua) -> None:
    double = make_akua(error_5xx_rate=1.0)
    # Not even the token is looked at.
    response = post(f"{double.url}/packages:import", json=import_body())
    assert response.status_code in (500, 502, 503)
    assert double.packages() == []


def test_faults_follow_the_seed(make_akua: MakeAkua, akua_token: str) -> None:
    def statuses(seed: int) -> list[int]:
        double = make_akua(error_5xx_rate=0.5, seed=seed)
        with client_for(double, akua_token) as api:
            return [api.get("/packages").status_code for _ in range(30)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200} < set(first)  # both outcomes occur, or the rate did nothing


def test_drop_after_commit_commits_but_the_client_gets_no_answer(
    make_akua: MakeAkua, akua_token: str
) -> None:
    double = make_akua(drop_after_commit_rate=1.0)
    key = {"idempotency-key": "drop-1"}
    with client_for(double, akua_token) as api:
        with pytest.raises(httpx.TransportError):
            api.post("/packages:import", json=import_body(), headers=key)
        (pkg,) = double.packages()
        assert [w.created_id for w in double.writes()] == [pkg["id"]]
        assert double.received[-1].status is None
        assert double.counts()["dropped"] == 1
        double.configure(drop_after_commit_rate=0.0)
        retry = api.post("/packages:import", json=import_body(), headers=key)
    assert retry.status_code == 201
    assert retry.json()["id"] == pkg["id"]
    assert len(double.writes()) == 1
    assert not double.find_duplicates()


def test_drop_before_commit_commits_nothing(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua(drop_before_commit_rate=1.0)
    with client_for(double, akua_token) as api, pytest.raises(httpx.TransportError):
        api.post("/packages:import", json=import_body())
    assert double.packages() == []
    assert double.writes() == []


def test_latency_is_added(make_akua: MakeAkua, akua_token: str) -> None:
    # The answer comes later than a client willing to wait a tenth of the latency.
    double = make_akua(latency_s=2.0)
    with client_for(double, akua_token) as api, pytest.raises(httpx.ReadTimeout):
        api.get("/packages", timeout=httpx.Timeout(5.0, read=0.2))


# --- error envelopes ---------------------------------------------------------------------


def test_alternative_error_envelope(make_akua: MakeAkua) -> None:
    double = make_akua(alt_error_envelope=True)
    response = get(f"{double.url}/packages")
    assert response.status_code == 401
    doc = response.json()
    assert set(doc) == {"error"}
    assert doc["error"]["code"] == "unauthorized"
    assert isinstance(doc["error"]["message"], str)


def test_html_error_pages_like_a_proxy(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua(force_429_rate=1.0, html_error_statuses=[429])
    with client_for(double, akua_token) as api:
        response = api.get("/packages")
    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<h1>429 Too Many Requests</h1>" in response.text
    assert response.headers["Retry-After"] == "1"


# --- paging ---------------------------------------------------------------------------------


def test_paging_with_cursor(akua: AkuaDouble, api: httpx.Client) -> None:
    ids = [akua.add_package(f"p{i}", f"oci://r/p{i}", [("1.0.0", "r", {})]) for i in range(5)]
    seen: list[str] = []
    pages = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.get("/packages", params=params).json()
        pages.append((len(page["data"]), page["has_more"]))
        seen += [p["id"] for p in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids  # creation order, each once
    assert pages == [(2, True), (2, True), (1, False)]
    assert len(api.get("/packages").json()["data"]) == 5  # default limit 50


def test_version_paging_is_newest_first_and_stable_under_inserts(
    akua: AkuaDouble, api: httpx.Client
) -> None:
    package_id = akua.add_package("p", "oci://r/p", [(f"1.{i}.0", "r", {}) for i in range(4)])
    first = api.get(f"/packages/{package_id}/versions", params={"limit": 2}).json()
    assert [v["semver"] for v in first["data"]] == ["1.3.0", "1.2.0"]
    # A version created meanwhile must neither shift nor repeat the next page.
    assert api.post(f"/packages/{package_id}/versions", json=version_body("2.0.0")).status_code == 201
    second = api.get(
        f"/packages/{package_id}/versions", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [v["semver"] for v in second["data"]] == ["1.1.0", "1.0.0"]
    assert second["has_more"] is False


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "limit=", "limit=1&limit=2", "cursor=%25%25", "cursor=eA"],
)
def test_422_for_bad_paging_parameters(api: httpx.Client, query: str) -> None:
    response = api.get(f"/packages?{query}")
    assert response.status_code == 422
    assert error_of(response)["path"][0] == "query"


def test_a_cursor_only_fits_its_own_listing(akua: AkuaDouble, api: httpx.Client) -> None:
    package_id = akua.add_package("p", "oci://r/p", [(f"1.{i}.0", "r", {}) for i in range(3)])
    cursor = api.get(f"/packages/{package_id}/versions", params={"limit": 1}).json()["next_cursor"]
    assert api.get("/packages", params={"cursor": cursor}).status_code == 422


# --- admin endpoint, configure, restart -------------------------------------------------------


def test_admin_endpoint_needs_no_token(akua: AkuaDouble, akua_token: str) -> None:
    admin = akua.base_url + "/_double"
    configured = post(f"{admin}/configure", json={"alt_error_envelope": True, "latency_s": 0})
    assert configured.status_code == 200
    assert configured.json()["switches"]["alt_error_envelope"] is True
    assert akua.switches.alt_error_envelope is True
    assert get(f"{akua.url}/packages").json()["error"]["code"] == "unauthorized"

    made = post(
        f"{admin}/packages",
        json={
            "name": "p",
            "oci_ref": "oci://r/p",
            "versions": [{"semver": "1.0.0", "ref": "r", "input_schema": {}}],
        },
    )
    assert made.status_code == 201
    state = get(f"{admin}/state", params={"log": 1}).json()
    assert [p["id"] for p in state["packages"]] == [made.json()["id"]]
    assert state["versions"][made.json()["id"]][0]["semver"] == "1.0.0"
    assert state["counts"]["401"] == 1
    assert state["received"][0]["status"] == 401
    assert state["switches"]["token"] == "***"
    assert state["duplicates"] == {"oci_refs": {}, "versions": [], "oci_versions": []}

    bad = post(f"{admin}/configure", json={"no_such_switch": 1})
    assert bad.status_code == 422
    assert post(f"{admin}/configure", json={"force_429_rate": 2}).status_code == 422

    reset = post(f"{admin}/reset", json={"switches": True})
    assert reset.status_code == 200
    assert akua.packages() == []
    assert akua.received == []
    assert akua.switches.alt_error_envelope is False


def test_configure_checks_names_and_values(akua: AkuaDouble) -> None:
    with pytest.raises(ValueError, match="unknown"):
        akua.configure(no_such_switch=True)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        akua.configure(error_5xx_rate=1.5)
    with pytest.raises(ValueError, match="retry_after"):
        akua.configure(retry_after="minutes")
    assert akua.configure(write_rate_limit=5.0).burst == 1.0  # max(1, 5 / 10)
    assert akua.configure(write_rate_limit=50.0).burst == 5.0


def test_stop_closes_kept_alive_connections(make_akua: MakeAkua, akua_token: str) -> None:
    double = make_akua()
    with client_for(double, akua_token) as api:
        assert api.get("/packages").status_code == 200
        double.stop()
        with pytest.raises(httpx.TransportError):
            api.get("/packages")


def _spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.akua_double", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()  # printed once it is listening
    return proc, url


def test_process_mode_keeps_state_across_a_restart(tmp_path: Path) -> None:
    token = "sk_process"
    state = tmp_path / "akua-state.json"
    args = ["--port", "0", "--token", token, "--state-file", str(state), "--no-unique-names"]
    proc, url = _spawn(args)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        headers = {"Authorization": f"Bearer {token}", "idempotency-key": "k1"}
        first = post(f"{url}/packages:import", json=import_body(), headers=headers)
        assert first.status_code == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

    proc, url = _spawn(args)
    try:
        state_doc = get(url.removesuffix("/v1") + "/_double/state").json()
        assert [p["id"] for p in state_doc["packages"]] == [first.json()["id"]]
        assert state_doc["switches"]["unique_names"] is False
        again = post(f"{url}/packages:import", json=import_body(), headers=headers)
        assert again.status_code == 201
        assert again.content == first.content  # the idempotency key survived too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

"""Who may read which repository, and with which credentials, through the CLI.

Real parts only: docker-registry with htpasswd users or with token auth
(``testkit.token_server`` issuing scoped RS256 tokens), Docker config files in
``$DOCKER_CONFIG`` or ``~/.docker``, and credential helper scripts on PATH.

* Docker config: ``auths`` entries and ``credHelpers``/``credsStore`` helpers,
  from either location; a helper that hangs, fails or prints garbage ends the
  run with exit 3 naming it, never a traceback.
* Token realm: the password goes to a realm over plain HTTP only on the
  registry's own host; a realm on another loopback address gets nothing.
* Per-repository refusal: a token that leaves one repository out ends that
  repository (failed, naming it and the user); the run aborts only when every
  repository was refused, or at ``GET /v2/`` when the credentials are wrong.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from crawler.registry import RegistryEndpoint
from crawler.registry.auth import RealmRefused, check_realm
from testkit.registry import LocalRegistry, Seeder, package_annotations
from testkit.token_server import TokenServer
from tests.plugins.cli import run_in_process
from tests.plugins.credential_helpers import write_helper
from tests.plugins.registry import RegistryFactory

USER = "alice"
PASSWORD = "Pw-alice-KESTREL-51"
HELPER_SECRET = "Pw-helper-MARTEN-77"
REPOSITORIES = ("team/a", "team/b", "team/c")


def seed(seeder: Seeder) -> None:
    for repository in REPOSITORIES:
        schema = {"type": "object", "title": repository}
        seeder.add_artifact(repository, ["1.0.0"], annotations=package_annotations(schema, None))


def plan(host: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
         *extra: str) -> tuple[int, str, list[dict[str, Any]], str]:
    result = run_in_process(
        ["plan", "--registry", host, "--plain-http", "--state", str(tmp_path / "state.db"),
         "--log-format", "json", "--log-level", "debug", "--concurrency", "2", *extra],
        pytest.MonkeyPatch(), capsys)
    assert result.closing["exit_status"] == result.status  # one closing event, every time
    return result.status, result.stdout, result.events, result.stderr


def planned(out: str) -> set[str]:
    return {line.split()[1] for line in out.splitlines() if line.startswith("IMPORT")}


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_config(folder: Path, document: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(document))
    return folder / "config.json"


def answering_helper(folder: Path, name: str, password: str) -> Path:
    seen = folder / f"{name}.stdin"
    answer = json.dumps({"Username": USER, "Secret": password})
    write_helper(folder, name, f"cat > {seen}\necho '{answer}'\n")
    return seen


@pytest.fixture
def htpasswd_registry(seeder: Seeder, registry_factory: RegistryFactory) -> LocalRegistry:
    seed(seeder)
    return registry_factory(users={USER: PASSWORD})


# -- Docker config ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["DOCKER_CONFIG", "HOME"])
def test_auths_entry_from_either_location(
    where: str, htpasswd_registry: LocalRegistry, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    document = {"auths": {htpasswd_registry.host: basic_auth(USER, PASSWORD)}}
    if where == "DOCKER_CONFIG":
        write_config(tmp_path / "docker-config", document)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    else:
        write_config(Path(os.environ["HOME"]) / ".docker", document)
    status, out, _, err = plan(htpasswd_registry.host, capsys, tmp_path)
    assert status == 0, err[-2000:]
    assert planned(out) == set(REPOSITORIES)


def test_docker_config_location_wins_over_home(
    htpasswd_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_config(Path(os.environ["HOME"]) / ".docker",
                 {"auths": {htpasswd_registry.host: basic_auth(USER, PASSWORD)}})
    config = write_config(tmp_path / "dc", {"auths": {htpasswd_registry.host: basic_auth(
        USER, "not-the-password")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    status, out, _, err = plan(htpasswd_registry.host, capsys, tmp_path)
    assert status == 3 and planned(out) == set()
    assert f"refused the credentials of user 'alice' (from auths entry '{htpasswd_registry.host}'" \
        in err and str(config) in err


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credential_helpers(
    key: str, htpasswd_registry: LocalRegistry, helpers: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The helper's secret is the real password; the inline entry would be refused.
    seen = answering_helper(helpers, "testkeys", PASSWORD)
    helper = {htpasswd_registry.host: "testkeys"} if key == "credHelpers" else "testkeys"
    write_config(tmp_path / "dc", {key: helper, "auths": {
        htpasswd_registry.host: basic_auth(USER, "stale-password")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    status, out, _, err = plan(htpasswd_registry.host, capsys, tmp_path)
    assert status == 0, err[-2000:]
    assert planned(out) == set(REPOSITORIES)
    assert seen.read_text() == htpasswd_registry.host  # asked once, for this host


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("sleep 600 &\nwait\n", "no answer for {host} within 0.5s"),
        (f"echo '{HELPER_SECRET}'\necho 'the keyring is locked' >&2\nexit 4\n",
         "exited with status 4 for {host}: the keyring is locked"),
        (f"echo 'user={HELPER_SECRET}'\n", "not the expected JSON"),
    ],
    ids=["hangs", "exits-non-zero", "prints-garbage"],
)
def test_a_broken_helper_ends_the_run_with_exit_3_naming_it(
    body: str, expected: str, htpasswd_registry: LocalRegistry, helpers: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    write_helper(helpers, "broken", body)
    write_config(tmp_path / "dc", {"credHelpers": {htpasswd_registry.host: "broken"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    status, out, events, err = plan(htpasswd_registry.host, capsys, tmp_path,
                                    "--registry-timeout", "0.5")
    assert status == 3 and planned(out) == set()
    aborted = [e for e in events if e["event"] == "run.aborted"]
    assert len(aborted) == 1
    assert "docker-credential-broken" in aborted[0]["reason"]
    assert expected.format(host=htpasswd_registry.host) in aborted[0]["reason"]
    assert "Traceback" not in err and HELPER_SECRET not in err


def test_a_helper_secret_never_shows(
    htpasswd_registry: LocalRegistry, helpers: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    answering_helper(helpers, "wrong", HELPER_SECRET)  # the registry refuses this one
    write_config(tmp_path / "dc", {"credsStore": "wrong"})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    status, out, _, err = plan(htpasswd_registry.host, capsys, tmp_path)
    assert status == 3
    assert "docker-credential-wrong" in err
    encoded = base64.b64encode(f"{USER}:{HELPER_SECRET}".encode()).decode()
    assert HELPER_SECRET not in err + out and encoded not in err + out


# -- token auth: realms and scopes ------------------------------------------------------


@pytest.fixture
def token_world(seeder: Seeder, registry_factory: RegistryFactory,
                tmp_path: Path) -> Iterator[Any]:
    seed(seeder)

    def start(grants: Collection[str], *, realm_host: str = "127.0.0.1") -> tuple[
            LocalRegistry, TokenServer]:
        tokens = TokenServer(users={USER: PASSWORD}, grants={USER: grants}, host=realm_host,
                             workdir=tmp_path / f"tokens-{realm_host}")
        servers.append(tokens.start())
        return registry_factory(token_auth=tokens.registry_auth()), tokens

    servers: list[TokenServer] = []
    yield start
    for server in servers:
        server.close()


ALL = ("registry:catalog:*", *(f"repository:{r}:pull" for r in REPOSITORIES))


def test_a_realm_on_another_host_gets_no_credentials(
    token_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, tokens = token_world(ALL, realm_host="127.0.0.2")
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    status, out, events, err = plan(registry.host, capsys, tmp_path, "--username", USER)
    assert status == 3 and planned(out) == set()
    reason = next(e for e in events if e["event"] == "run.aborted")["reason"]
    assert "refusing to send the credentials of user 'alice' to the token realm " \
        f"http://{tokens.host}" in reason
    assert "plain HTTP to another host" in reason
    assert [r for r in tokens.requests if r.authorization] == []  # nothing was sent there
    assert PASSWORD not in err


def test_a_realm_on_the_registrys_own_host_works(
    token_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, tokens = token_world(ALL)
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    status, out, _, err = plan(registry.host, capsys, tmp_path, "--username", USER)
    assert status == 0, err[-2000:]
    assert planned(out) == set(REPOSITORIES)
    assert {r.user for r in tokens.requests} == {USER}


def test_one_refused_repository_ends_alone(
    token_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, tokens = token_world([s for s in ALL if s != "repository:team/b:pull"])
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    status, out, events, err = plan(registry.host, capsys, tmp_path, "--username", USER)
    assert status == 1, err[-2000:]
    assert planned(out) == {"team/a", "team/c"}
    failed = [e for e in events if e["event"] == "item.failed"]
    assert [e["repository"] for e in failed] == ["team/b"]
    assert "refused access to repository 'team/b' for user 'alice'" in failed[0]["reason"]
    assert "insufficient_scope" in failed[0]["reason"] or "UNAUTHORIZED" in failed[0]["reason"]
    finished = next(e for e in events if e["event"] == "run.finished")
    assert finished["exit_status"] == 1
    # The registry really asked for team/b, and the token server really left it out.
    asked = [r for r in tokens.requests if "repository:team/b:pull" in r.scopes]
    assert asked and all(r.granted == () for r in asked)


@pytest.mark.parametrize("selected", [False, True], ids=["catalog", "--repository"])
def test_every_repository_refused_aborts(
    selected: bool, token_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, _ = token_world(["registry:catalog:*"])
    monkeypatch.setenv("REGISTRY_PASSWORD", PASSWORD)
    extra = ["--repository", "team/a", "--repository", "team/b"] if selected else []
    status, out, events, _ = plan(registry.host, capsys, tmp_path, "--username", USER, *extra)
    assert status == 3 and planned(out) == set()
    count = 2 if selected else 3
    reason = next(e for e in events if e["event"] == "run.aborted")["reason"]
    assert f"refused every repository so far ({count} of {count}) to user 'alice'" in reason


def test_wrong_credentials_abort_at_the_api_check(
    token_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry, tokens = token_world(ALL)
    monkeypatch.setenv("REGISTRY_PASSWORD", "not-" + PASSWORD)
    status, out, events, _ = plan(registry.host, capsys, tmp_path, "--username", USER)
    assert status == 3 and planned(out) == set()
    reason = next(e for e in events if e["event"] == "run.aborted")["reason"]
    assert "GET /v2/" in reason and "refused the credentials of user 'alice'" in reason
    assert all(r.scopes == () for r in tokens.requests)  # never got as far as a repository


@pytest.mark.parametrize(
    ("realm", "plain_http", "allowed"),
    [
        ("https://auth.example.com/token", False, True),
        ("https://auth.example.com/token", True, True),
        ("http://registry.example.com:5001/token", True, True),  # own host, another port
        ("http://REGISTRY.example.com/token", True, True),
        ("http://registry.example.com/token", False, False),  # the registry wanted TLS
        ("http://auth.example.com/token", True, False),
        ("http://127.0.0.2:5000/token", True, False),
        ("ftp://registry.example.com/token", True, False),
    ],
)
def test_the_realm_rule(realm: str, plain_http: bool, allowed: bool) -> None:
    endpoint = RegistryEndpoint(host="registry.example.com:5000", plain_http=plain_http,
                                username=USER, password=PASSWORD)
    if allowed:
        check_realm(realm, endpoint)
    else:
        with pytest.raises(RealmRefused, match="refusing to send the credentials of user 'alice'"):
            check_realm(realm, endpoint)

"""Docker configuration and credential helpers, with real helper programs on PATH.

Each helper is a small shell script written to a temporary folder put first on
PATH: one that answers, one that has nothing, one that hangs (with a child of
its own), one that fails, one that prints garbage.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from crawler.credentials import (
    Credentials,
    CredentialsUnavailable,
    docker_config_path,
    docker_credentials,
)
from crawler.errors import RunAborted
from tests.plugins.credential_helpers import write_helper

HOST = "127.0.0.1:5999"
SECRET = "helper-s3cret-OTTER-42"


def answering(folder: Path, name: str, user: str = "helper-user") -> Path:
    """A helper that records its argument and stdin, then answers for any host."""
    log = folder / f"{name}.log"
    answer = json.dumps({"ServerURL": HOST, "Username": user, "Secret": SECRET})
    write_helper(folder, name, f'echo "$1 $(cat)" >> {log}\necho \'{answer}\'\n')
    return log


def write_config(folder: Path, document: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(document))
    return path


def inline(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_config_location_follows_docker_config(tmp_path: Path) -> None:
    assert docker_config_path({"HOME": str(tmp_path)}) == tmp_path / ".docker" / "config.json"
    assert docker_config_path({"HOME": str(tmp_path), "DOCKER_CONFIG": "/etc/dc"}) == Path(
        "/etc/dc/config.json"
    )


def test_auths_from_home_and_from_docker_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home / ".docker", {"auths": {HOST: inline("home-user", "pw-home")}})
    found = docker_credentials(HOST, environ={"HOME": str(home)})
    assert found is not None and (found.username, found.password) == ("home-user", "pw-home")
    assert str(home / ".docker" / "config.json") in found.source

    elsewhere = tmp_path / "elsewhere"
    write_config(elsewhere, {"auths": {f"https://{HOST}/v1/": {"username": "dc-user",
                                                                "password": "pw-dc"}}})
    found = docker_credentials(HOST, environ={"HOME": str(home), "DOCKER_CONFIG": str(elsewhere)})
    assert found is not None and (found.username, found.password) == ("dc-user", "pw-dc")
    assert "pw-dc" not in repr(found) and "pw-dc" not in found.source

    # DOCKER_CONFIG decides alone: a folder without a config means anonymous.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert docker_credentials(HOST, environ={"HOME": str(home), "DOCKER_CONFIG": str(empty)}) is None
    assert docker_credentials("other.example:5000", environ={"HOME": str(home)}) is None


def test_cred_helpers_entry_and_creds_store(helpers: Path, tmp_path: Path) -> None:
    per_host = answering(helpers, "perhost", user="per-host-user")
    store = answering(helpers, "store", user="store-user")
    config = tmp_path / "dc"
    write_config(config, {"credHelpers": {HOST: "perhost"}, "credsStore": "store",
                          "auths": {HOST: inline("inline-user", "pw-inline")}})
    environ = {**os.environ, "DOCKER_CONFIG": str(config)}
    found = docker_credentials(HOST, environ=environ)
    assert found == Credentials(username="per-host-user", password=SECRET, source=found.source)
    assert "docker-credential-perhost" in found.source
    assert per_host.read_text().split() == ["get", HOST]
    assert not store.exists()

    found = docker_credentials("other.example:5000", environ=environ)
    assert found is not None and found.username == "store-user"
    assert store.read_text().split() == ["get", "other.example:5000"]


def test_a_helper_without_credentials_leaves_the_auths_entry(helpers: Path, tmp_path: Path) -> None:
    write_helper(helpers, "empty", 'echo "credentials not found in native keychain"\nexit 1\n')
    config = tmp_path / "dc"
    write_config(config, {"credsStore": "empty", "auths": {HOST: inline("inline-user", "pw")}})
    environ = {**os.environ, "DOCKER_CONFIG": str(config)}
    found = docker_credentials(HOST, environ=environ)
    assert found is not None and found.username == "inline-user"
    assert docker_credentials("nobody.example", environ=environ) is None


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_hanging_helper_is_cut_off_with_its_children(helpers: Path, tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    write_helper(helpers, "hang", f"sleep 600 &\necho $! > {child_pid}\nwait\n")
    config = tmp_path / "dc"
    write_config(config, {"credHelpers": {HOST: "hang"}})
    with pytest.raises(CredentialsUnavailable) as caught:
        docker_credentials(HOST, environ={**os.environ, "DOCKER_CONFIG": str(config)},
                           timeout_s=0.5)
    assert isinstance(caught.value, RunAborted) and caught.value.exit_status == 3
    reason = str(caught.value)
    assert "docker-credential-hang" in reason and "no answer" in reason and "0.5s" in reason
    pid = int(child_pid.read_text())
    for _ in range(500):  # the kernel reaps the killed child shortly; poll the real condition
        if _gone(pid):
            break
        time.sleep(0.01)
    assert _gone(pid), "the helper's own child outlived it"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"echo '{SECRET}'\necho 'keyring locked' >&2\nexit 3\n",
         "exited with status 3 for 127.0.0.1:5999: keyring locked"),
        (f"echo 'Username={SECRET}'\n", "not the expected JSON"),
        ('echo \'{"Username": "u"}\'\n', "not the expected JSON"),
        ('echo \'["u", "s"]\'\n', "not the expected JSON"),
        (f'echo \'{{"Username": "<token>", "Secret": "{SECRET}"}}\'\n', "identity token"),
    ],
    ids=["non-zero", "not-json", "no-secret", "not-an-object", "identity-token"],
)
def test_a_broken_helper_ends_the_run_naming_it(
    helpers: Path, tmp_path: Path, body: str, expected: str
) -> None:
    write_helper(helpers, "broken", body)
    config = tmp_path / "dc"
    write_config(config, {"credsStore": "broken"})
    with pytest.raises(CredentialsUnavailable) as caught:
        docker_credentials(HOST, environ={**os.environ, "DOCKER_CONFIG": str(config)})
    reason = str(caught.value)
    assert "docker-credential-broken" in reason and str(config / "config.json") in reason
    assert expected in reason
    assert SECRET not in reason and SECRET not in repr(caught.value)


def test_a_missing_helper_and_a_broken_config(helpers: Path, tmp_path: Path) -> None:
    config = tmp_path / "dc"
    write_config(config, {"credHelpers": {HOST: "absent"}})
    environ = {**os.environ, "DOCKER_CONFIG": str(config)}
    with pytest.raises(CredentialsUnavailable, match=r"docker-credential-absent .*not found on PATH"):
        docker_credentials(HOST, environ=environ)
    (config / "config.json").write_text("{not json")
    with pytest.raises(CredentialsUnavailable, match=r"config\.json: not JSON"):
        docker_credentials(HOST, environ=environ)
    write_config(config, {"auths": {HOST: {"auth": "%%%"}}})
    with pytest.raises(CredentialsUnavailable, match="not base64 of user:password"):
        docker_credentials(HOST, environ=environ)

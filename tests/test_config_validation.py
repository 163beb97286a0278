"""Configuration that passes validation works: what cannot travel in a header or a URL is refused.

Each case exits 2 naming the key, before anything is contacted (the tripwire
stands in for the registry and the API and must see no connection).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from crawler.cli import main
from crawler.config import resolve
from crawler.errors import ConfigError
from tests.tripwire import contacted

TOKEN = "sk_akua_config_validation"


def settle(flags: dict[str, object] | None = None, environ: dict[str, str] | None = None,
           config_file: Path | None = None) -> object:
    return resolve(flags={"registry": "r.example", **(flags or {})}, environ=environ or {},
                   config_file=config_file, need_token=False)


@pytest.mark.parametrize("token", ["sk_akua_ünïcode", "sk_akua_\u200b", "sk akua", "sk_akua_\x7f"])
def test_a_token_that_cannot_be_a_header_is_refused(token: str) -> None:
    refused = r"AKUA_API_TOKEN: (must be printable ASCII|contains whitespace)"
    with pytest.raises(ConfigError, match=refused) as caught:
        settle(environ={"AKUA_API_TOKEN": token})
    assert token not in str(caught.value)


@pytest.mark.parametrize("workspace", ["ws_ünï", "ws_1\nX-Injected: 1", "ws 1", "ws_\t1", "ws_\x00"])
@pytest.mark.parametrize("source", ["flag", "env", "workspace_env"])
def test_a_workspace_that_cannot_be_a_header_is_refused(workspace: str, source: str) -> None:
    where = {"flag": "--workspace", "env": "AKUA_CRAWLER_WORKSPACE",
             "workspace_env": "AKUA_WORKSPACE_ID"}[source]
    flags = {"workspace": workspace} if source == "flag" else {}
    environ = {where: workspace} if source != "flag" else {}
    with pytest.raises(ConfigError, match=f"{where}: .*printable ASCII"):
        settle(flags, environ)


@pytest.mark.parametrize("url", ["https://api.akua.dev:99999/v1", "https://api.akua.dev:http/v1",
                                 "https://api.akua.dev:0/v1", "https://api.akua.dev:/v1",
                                 "https://api.akua.dev:-1/v1", "https://api.akua.dev/v 1",
                                 "https://äpi.akua.dev/v1"])
def test_an_api_url_that_cannot_be_reached_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="--api-url"):
        settle({"api_url": url})


@pytest.mark.parametrize(("line", "message"), [
    ('concurrency = "5"', "concurrency: expected int, got str"),
    ("concurrency = 5.5", "concurrency: expected int, got float"),
    ('rate = "10"', "rate: expected float"),
    ('recheck_digests = "yes"', "recheck_digests: expected bool"),
    ("recheck_digests = 1", "recheck_digests: expected bool"),
    ("api_url = 5", "api_url: expected a string"),
    ('repositories = "team/app"', "repositories: expected a list of strings .*, got str"),
    ('include = "team/*"', "include: expected a list of strings .*, got str"),
])
def test_wrong_toml_types_are_refused(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        settle(config_file=config)


def test_right_toml_types_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('concurrency = 5\nrate = 10\nrecheck_digests = true\nrepositories = ["a/b"]\n'
                      "retry_rejected = true\n")
    settings = settle(config_file=config)
    assert (settings.concurrency, settings.rate, settings.retry_rejected) == (5, 10.0, True)


def test_a_repositories_string_in_a_source_table_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[source]]\nregistry = "r.example"\nrepositories = "team/app"\n')
    with pytest.raises(ConfigError, match=r"source 'r\.example': repositories: expected a list of strings"):
        resolve(flags={}, environ={}, config_file=config, need_token=False)


def test_the_environment_still_spells_a_list_with_commas() -> None:
    settings = settle(environ={"AKUA_CRAWLER_REPOSITORIES": "team/app, team/web"})
    assert settings.repositories == ("team/app", "team/web")


def test_a_repositories_string_in_the_file_exits_2_before_contact(
    tripwire: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = tripwire.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(f'registry = "127.0.0.1:{port}"\nplain_http = true\nrepositories = "team/app"\n'
                      f'api_url = "http://127.0.0.1:{port}/v1"\n')
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    assert main(["run", "--config", str(config), "--state", str(tmp_path / "s.db")]) == 2
    err = capsys.readouterr().err
    assert "repositories: expected a list of strings" in err and "Traceback" not in err
    assert not contacted(tripwire)


def test_an_unknown_crawler_variable_is_refused_like_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match="AKUA_CRAWLER_CONCURENCY: unknown setting"):
        settle(environ={"AKUA_CRAWLER_CONCURENCY": "4"})
    settle(environ={"AKUA_CRAWLER_CONCURRENCY": "4", "AKUA_API_TOKEN": TOKEN, "AKUA_OTHER": "x"})


def test_retry_rejected_has_a_flag_and_a_variable() -> None:
    assert settle({"retry_rejected": True}).retry_rejected is True
    assert settle(environ={"AKUA_CRAWLER_RETRY_REJECTED": "true"}).retry_rejected is True
    assert settle().retry_rejected is False


@pytest.mark.parametrize(("flag", "value", "env"), [
    ("--workspace", "ws_1\nX: y", {}),
    ("--api-url", "http://127.0.0.1:70000/v1", {}),
    ("--api-url", "http://127.0.0.1:port/v1", {}),
    (None, None, {"AKUA_API_TOKEN": "sk_akua_tökén"}),
    (None, None, {"AKUA_CRAWLER_RATE_LIMIT": "5"}),
])
def test_the_cli_exits_2_before_any_contact(
    flag: str | None, value: str | None, env: dict[str, str], tripwire: socket.socket,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AKUA_API_TOKEN", TOKEN)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    port = tripwire.getsockname()[1]
    args = ["run", "--registry", f"127.0.0.1:{port}", "--plain-http", "--state", str(tmp_path / "s.db"),
            "--api-url", f"http://127.0.0.1:{port}/v1"]
    if flag is not None:
        args += [flag, str(value)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "Traceback" not in err
    assert not contacted(tripwire)


def test_the_config_file_variable_is_not_an_unknown_setting(tmp_path: Path) -> None:
    settle(environ={"AKUA_CRAWLER_CONFIG": str(tmp_path / "c.toml")})

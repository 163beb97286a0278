"""[[source]] tables, per-source filters, names and credentials, shards: config only, no contact."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.config import Secret, resolve
from crawler.errors import ConfigError
from crawler.shards import Shard


def settings_from(flags=None, environ=None, config_file=None):
    return resolve(flags=flags or {}, environ=environ or {}, config_file=config_file, need_token=False)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crawler.toml"
    path.write_text(text)
    return path


def test_fleet_example_resolves(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config" / "fleet.toml"
    text = example.read_text()
    secret_file = tmp_path / "registry-password"
    secret_file.write_text("s3cret-from-file\n")
    repositories = tmp_path / "ghcr.txt"
    repositories.write_text("# GHCR has no catalog\nacme/app\nacme/db   # the database\n\nacme/app\n")
    text = text.replace("/run/secrets/registry-password", str(secret_file))
    text = text.replace("/etc/akua-crawler/ghcr-repositories.txt", str(repositories))
    settings = settings_from(environ={"GHCR_TOKEN": "ghcr-token-value"},
                             config_file=write_toml(tmp_path, text))
    charts, ghcr = settings.source_list()
    assert (charts.name, charts.registry, ghcr.name, ghcr.registry) == (
        "charts", "registry.example.com", "ghcr", "ghcr.io")
    assert charts.password == Secret("s3cret-from-file")
    assert ghcr.password == Secret("ghcr-token-value")
    assert ghcr.repositories == ("acme/app", "acme/db")
    assert charts.repositories == ()  # the catalog
    assert charts.repository_filter.rejects("charts/app") is None
    assert charts.repository_filter.rejects("charts/tmp-x") == "matched by exclude 'charts/tmp-*'"
    assert charts.names.name_of("charts/app") == "app"
    assert charts.names.name_of("charts/old-app") == "legacy-app"
    assert ghcr.names.name_of("acme/app") == "ghcr-app"
    assert charts.tag_filter.prereleases is False  # inherited from the top level
    assert ghcr.tag_filter.prereleases is True  # its own key
    assert ghcr.registry_rate == 20.0
    assert {"s3cret-from-file", "ghcr-token-value"} <= set(settings.secrets())
    assert "s3cret-from-file" not in repr(settings)
    assert "ghcr-token-value" not in repr(settings)


def test_flag_wins_over_every_source(tmp_path: Path) -> None:
    config = write_toml(tmp_path, """
prereleases = false
[[source]]
registry = "a.example"
semver = "^1"
[[source]]
registry = "b.example"
""")
    a, b = settings_from({"semver": ">=2"}, config_file=config).source_list()
    assert a.name == "a.example"  # the default name is the registry
    assert a.tag_filter.semver is not None and a.tag_filter.semver.text == ">=2"
    assert b.tag_filter.semver is not None and b.tag_filter.semver.text == ">=2"
    a, _ = settings_from({"prereleases": True}, config_file=config).source_list()
    assert a.tag_filter.prereleases is True


@pytest.mark.parametrize(
    ("text", "flags", "environ", "message"),
    [
        ('registry = "a.example"\n[[source]]\nregistry = "b.example"\n', {}, {},
         "registry: set per \\[\\[source\\]\\]"),
        ('[[source]]\nregistry = "b.example"\n', {"repositories": ["x/y"]}, {},
         "repositories: set per \\[\\[source\\]\\]"),
        ('[[source]]\nname = "b"\n', {}, {}, r"source\[0\]: registry: not set"),
        ('[[source]]\nregistry = "b.example"\ncolour = "red"\n', {}, {},
         r"source\[0\]: unknown key 'colour'"),
        ('[[source]]\nregistry = "b.example"\npassword = "hunter2"\n', {}, {},
         "names its secret with password_env or password_file"),
        ('[[source]]\nregistry = "a.example"\n[[source]]\nregistry = "a.example"\n', {}, {},
         "two sources are named 'a.example'"),
        ('[[source]]\nname = "a"\nregistry = "a.example"\nusername = "bob"\n', {}, {},
         "source 'a': username is set but neither password_env nor password_file"),
        ('[[source]]\nname = "a"\nregistry = "a.example"\nusername = "bob"\npassword_env = "A_PW"\n',
         {}, {}, "source 'a': username is set but A_PW is empty"),
        ('[[source]]\nname = "a"\nregistry = "a.example"\nsemver = ">=a"\n', {}, {},
         "source 'a': semver: '>=a' is not a SemVer range"),
        ('[[source]]\nname = "a"\nregistry = "a.example"\nname_rule = "strip_prefix"\n', {}, {},
         "source 'a': name_prefix: name_rule = \"strip_prefix\" needs a name_prefix"),
        ('[[source]]\nname = "a"\nregistry = "a.example"\nrepositories_file = "/nonexistent/r.txt"\n',
         {}, {}, "source 'a': repositories_file: cannot read /nonexistent/r.txt"),
        ('source = 3\n', {}, {}, "'source' must be \\[\\[source\\]\\] tables"),
    ],
)
def test_bad_sources_are_named(tmp_path: Path, text, flags, environ, message) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(flags, environ, write_toml(tmp_path, text))


def test_repositories_file_bad_line_named(tmp_path: Path) -> None:
    listing = tmp_path / "repos.txt"
    listing.write_text("team/app\nTeam/Bad Name\n")
    with pytest.raises(ConfigError, match=r"repos.txt:2: 'Team/Bad Name' is not a valid OCI repository"):
        settings_from({"registry": "r.example", "repositories_file": str(listing)})


def test_simple_case_has_one_source_with_filters_and_names() -> None:
    settings = settings_from({
        "registry": "r.example", "include": ["team/*"], "deny_tags": [".*-rc.*"],
        "name_rule": "last_segment", "name_overrides": ["team/app=the-app"],
    }, {"AKUA_CRAWLER_PRERELEASES": "false"})
    (source,) = settings.source_list()
    assert source.name == source.registry == "r.example"
    assert source.names.name_of("team/app") == "the-app"
    assert source.names.name_of("team/db") == "db"
    assert source.tag_filter.prereleases is False
    assert source.repository_filter.rejects("other/x") is not None


def test_name_override_flag_syntax() -> None:
    with pytest.raises(ConfigError, match=r"--name-override\[0\]: 'team/app' is not REPOSITORY=NAME"):
        settings_from({"registry": "r.example", "name_overrides": ["team/app"]})


def test_password_file_for_the_simple_case(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    settings = settings_from({"registry": "r.example", "username": "bob"},
                             {"REGISTRY_PASSWORD_FILE": str(secret)})
    assert settings.password == Secret("from-a-file")
    with pytest.raises(ConfigError, match="REGISTRY_PASSWORD and REGISTRY_PASSWORD_FILE are both set"):
        settings_from({"registry": "r.example", "username": "bob"},
                      {"REGISTRY_PASSWORD_FILE": str(secret), "REGISTRY_PASSWORD": "env-one"})
    assert settings.source_list()[0].password == Secret("from-a-file")
    secret.write_text("")
    with pytest.raises(ConfigError, match=r"REGISTRY_PASSWORD_FILE: .* is empty"):
        settings_from({"registry": "r.example", "username": "bob"},
                      {"REGISTRY_PASSWORD_FILE": str(secret)})


def test_shard_from_flag_and_from_job_index(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    settings = settings_from({"registry": "r.example", "shard": "1/3", "state": str(state),
                              "rate": 30, "registry_rate": 90})
    assert settings.shard == Shard(1, 3)
    assert settings.state == tmp_path / "state.shard-1-of-3.db"
    assert settings.rate == pytest.approx(10.0)
    assert settings.source_list()[0].registry_rate == pytest.approx(30.0)
    settings = settings_from({"registry": "r.example", "shard_count": 4, "state": str(state),
                              "shard_rate": 2.5}, {"JOB_COMPLETION_INDEX": "3"})
    assert settings.shard == Shard(3, 4)
    assert settings.rate == 2.5
    # No count: the job index alone does not shard (a plain Job has one too).
    assert settings_from({"registry": "r.example"}, {"JOB_COMPLETION_INDEX": "3"}).shard is None
    with pytest.raises(ConfigError, match=r"JOB_COMPLETION_INDEX: shard index 4 is not in 0\.\.3"):
        settings_from({"registry": "r.example", "shard_count": 4}, {"JOB_COMPLETION_INDEX": "4"})
    with pytest.raises(ConfigError, match="shard: 1/3 disagrees with shard_count = 4"):
        settings_from({"registry": "r.example", "shard": "1/3", "shard_count": 4})


def test_token_from_a_file_or_a_systemd_credential(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("sk_akua_from_file\n")
    settings = resolve(flags={"registry": "r.example"}, environ={"AKUA_API_TOKEN_FILE": str(token)},
                       config_file=None, need_token=True)
    assert settings.token == Secret("sk_akua_from_file")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "akua-api-token").write_text("sk_akua_from_systemd")
    (credentials / "registry-password").write_text("pw-from-systemd")
    settings = resolve(flags={"registry": "r.example", "username": "bob"},
                       environ={"CREDENTIALS_DIRECTORY": str(credentials)}, config_file=None,
                       need_token=True)
    assert settings.token == Secret("sk_akua_from_systemd")
    assert settings.password == Secret("pw-from-systemd")
    with pytest.raises(ConfigError, match="AKUA_API_TOKEN and AKUA_API_TOKEN_FILE are both set"):
        resolve(flags={"registry": "r.example"},
                environ={"AKUA_API_TOKEN_FILE": str(token), "AKUA_API_TOKEN": "sk_akua_x"},
                config_file=None, need_token=True)
    with pytest.raises(ConfigError, match=r"AKUA_API_TOKEN_FILE: cannot read .*/missing"):
        resolve(flags={"registry": "r.example"}, environ={"AKUA_API_TOKEN_FILE": str(tmp_path / "missing")},
                config_file=None, need_token=True)
    token.write_text("two words\n")
    with pytest.raises(ConfigError, match="whitespace or control characters") as caught:
        resolve(flags={"registry": "r.example"}, environ={"AKUA_API_TOKEN_FILE": str(token)},
                config_file=None, need_token=True)
    assert "two words" not in str(caught.value)


def test_state_directory_is_the_default_state(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    settings = settings_from({"registry": "r.example"})
    assert settings.state == tmp_path / "a" / "state.db"

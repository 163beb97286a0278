"""The deployment files are valid for the tools that will read them.

- systemd's own ``systemd-analyze verify`` checks the service, timer and notify units
  (with ExecStart pointed at this checkout's console script, which it requires to exist);
- the Kubernetes manifests pass ``kubernetes-validate``'s strict check against the
  official schemas of a current Kubernetes release (offline);
- the Dockerfile is checked for what the README promises (pinned base, non-root user,
  exec-form ENTRYPOINT, a state volume, sources that exist). It is not built here: no
  container base image can be fetched on this machine (see README, "Deployment").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "deploy" / "systemd"
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"
INSTALLED_EXEC = "/opt/akua-crawler/.venv/bin/akua-crawler"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
    return found


def _verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_systemd_analyze(), "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=60, check=False)


def _units_here(tmp_path: Path) -> list[Path]:
    console_script = Path(sys.executable).with_name("akua-crawler")
    assert console_script.exists(), "pip install -e . first: the akua-crawler console script is missing"
    units = []
    for unit in sorted(SYSTEMD.iterdir()):
        text = unit.read_text().replace(INSTALLED_EXEC, str(console_script))
        (tmp_path / unit.name).write_text(text)
        units.append(tmp_path / unit.name)
    return units


def test_systemd_units_verify(tmp_path: Path) -> None:
    units = _units_here(tmp_path)
    assert {u.name for u in units} == {
        "akua-crawler.service", "akua-crawler.timer", "akua-crawler-notify@.service",
    }
    done = _verify(units)
    assert done.returncode == 0, done.stderr
    assert "Unknown key" not in done.stderr and "Unknown section" not in done.stderr, done.stderr


def test_systemd_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    units = _units_here(tmp_path)
    timer = next(u for u in units if u.suffix == ".timer")
    timer.write_text(timer.read_text().replace("OnCalendar=*-*-* 03:17:00", "OnCalendar=not a date"))
    assert _verify(units).returncode != 0


def test_service_promises() -> None:
    service = (SYSTEMD / "akua-crawler.service").read_text()
    for line in ("StateDirectory=akua-crawler", "LoadCredential=akua-api-token:",
                 "OnFailure=akua-crawler-notify@%n.service", "TimeoutStopSec=60"):
        assert line in service
    timer = (SYSTEMD / "akua-crawler.timer").read_text()
    assert "Persistent=yes" in timer and "RandomizedDelaySec=" in timer


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_kubernetes_manifests_validate_strictly() -> None:
    docs = _documents()
    assert {d["kind"] for d in docs} >= {"CronJob", "PersistentVolumeClaim", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_does_catch_a_wrong_field() -> None:
    cronjob = next(d for d in _documents() if d["kind"] == "CronJob")
    cronjob["spec"]["concurrencyPolice"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, KUBERNETES_VERSION, strict=True)


def test_cronjob_promises() -> None:
    cronjob = next(d for d in _documents() if d["kind"] == "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 30  # the crawler's default grace period
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes["token"] and "persistentVolumeClaim" in volumes["state"]
    claim = next(d for d in _documents() if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["AKUA_API_TOKEN_FILE"].startswith("/run/secrets/")


def _instructions() -> list[tuple[str, str]]:
    out = []
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_promises() -> None:
    steps = _instructions()
    base = next(rest for word, rest in steps if word == "ARG" and rest.startswith("BASE="))
    assert base.removeprefix("BASE=").split(":")[1].count(".") == 2, "base pinned to an exact release"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert ("ENTRYPOINT", '["akua-crawler"]') in steps
    assert any(word == "VOLUME" and "/var/lib/akua-crawler" in rest for word, rest in steps)
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_state_directory_is_the_default_state_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from crawler.config import default_state_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_path() == tmp_path / "xdg" / "akua-crawler" / "state.db"
    # systemd sets STATE_DIRECTORY (colon-separated when several are configured): the first wins.
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'one'}:{tmp_path / 'two'}")
    assert default_state_path() == tmp_path / "one" / "state.db"


def test_sharded_job_promises(tmp_path: Path) -> None:
    from crawler.config import resolve
    from crawler.shards import Shard

    job = next(d for d in _documents() if d["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 30
    environ = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert int(environ["AKUA_CRAWLER_SHARD_COUNT"]) == job["spec"]["completions"]
    # What the last pod of the job resolves to: its shard, its own state file, its share of the rate.
    environ = {**environ, "JOB_COMPLETION_INDEX": "2", "AKUA_API_TOKEN": "sk_akua_x",
               "AKUA_CRAWLER_STATE": str(tmp_path / "state.db")}
    environ.pop("AKUA_API_TOKEN_FILE")
    settings = resolve(flags={"registry": "r.example", "rate": 9}, environ=environ,
                       config_file=None, need_token=True)
    assert settings.shard == Shard(2, 3)
    assert settings.state == tmp_path / "state.shard-2-of-3.db"
    assert settings.rate == 3

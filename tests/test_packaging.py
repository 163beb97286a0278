"""The distribution is honest: one version, a license, the wheel holds the crawler only."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import crawler

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_defined_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert importlib.metadata.version("akua-crawler") == crawler.__version__


def test_the_license_file_matches_the_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text().splitlines()[0]


def test_only_the_crawler_is_packaged() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["crawler*"]
    assert not (ROOT / "crawler" / "testing").exists()

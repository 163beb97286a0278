"""The schema_sources option: values, order, and refusals naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.config import resolve
from crawler.errors import ConfigError


def _settings(flags=None, environ=None, config_file=None):
    flags = {"registry": "r.example", **(flags or {})}
    return resolve(flags=flags, environ=environ or {}, config_file=config_file, need_token=False)


def test_default_is_annotation_then_package() -> None:
    assert _settings().schema_sources == ("annotation", "package")


def test_each_source_of_configuration(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('schema_sources = ["package"]\n')
    assert _settings(config_file=config).schema_sources == ("package",)
    assert _settings(environ={"AKUA_CRAWLER_SCHEMA_SOURCES": "Package, annotation"}).schema_sources == (
        "package", "annotation",
    )
    assert _settings({"schema_sources": ["annotation"]}).schema_sources == ("annotation",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["layers"], r"schema_sources\[0\]: 'layers' is not one of annotation, package"),
        ([], "give at least one of annotation, package"),
        (["package", "package"], "names a source twice"),
        ("", "give at least one"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, value: object, message: str) -> None:
    config = tmp_path / "c.toml"
    import json

    config.write_text(f"schema_sources = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=message):
        _settings(config_file=config)

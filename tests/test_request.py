"""The one place request bodies are built: every contract check before sending."""

from __future__ import annotations

import pytest

from crawler.errors import InvalidArtifact
from crawler.request import PackageTarget, build_request

DIGEST = "sha256:" + "a" * 64
SCHEMA = {"type": "object", "properties": {"port": {"type": "integer"}}}


def target(name: str = "team/app", oci_ref: str = "oci://r.example/team/app") -> PackageTarget:
    return PackageTarget(name=name, oci_ref=oci_ref, description="The app.")


def test_both_bodies_are_built_once_and_agree() -> None:
    request = build_request(target(), semver="1.2.0", digest=DIGEST, input_schema=SCHEMA)
    assert request.version_body == {"semver": "1.2.0", "ref": DIGEST, "input_schema": SCHEMA}
    assert request.import_body == {
        "name": "team/app", "oci_ref": "oci://r.example/team/app", "description": "The app.",
        "version": request.version_body,
    }


def test_a_name_over_120_characters_is_invalid_with_what_to_do() -> None:
    name = "team/" + "a" * 130
    with pytest.raises(InvalidArtifact) as caught:
        build_request(target(name=name), semver="1.0.0", digest=DIGEST, input_schema=SCHEMA)
    assert "is 135 characters, Akua allows at most 120" in caught.value.reason
    assert "map the repository to a shorter package name" in caught.value.reason


def test_an_oci_ref_over_the_limit_is_invalid() -> None:
    with pytest.raises(InvalidArtifact, match="oci_ref is 2100 characters"):
        build_request(target(oci_ref="oci://r/" + "a" * 2092), semver="1.0.0", digest=DIGEST,
                      input_schema=SCHEMA)


def test_any_other_contract_violation_is_invalid_naming_the_field() -> None:
    with pytest.raises(InvalidArtifact, match=r"cannot form a valid Akua request: .*\$\.version\.semver"):
        build_request(target(), semver="x" * 200, digest=DIGEST, input_schema=SCHEMA)

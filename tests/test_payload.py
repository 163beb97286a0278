from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crawler import contract
from crawler.payload import (
    DESCRIPTION_ANNOTATION,
    ContractViolation,
    check_import_body,
    check_version_body,
    description_from,
    idempotency_key,
    import_body,
    oci_ref,
    version_body,
)

# --- oci_ref ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "repository", "expected"),
    [
        ("ghcr.io", "acme/charts/redis", "oci://ghcr.io/acme/charts/redis"),
        ("localhost:5000", "redis", "oci://localhost:5000/redis"),
        ("[::1]:5000", "a/b", "oci://[::1]:5000/a/b"),
    ],
)
def test_oci_ref(registry: str, repository: str, expected: str) -> None:
    assert oci_ref(registry, repository) == expected


@pytest.mark.parametrize(
    ("registry", "repository"),
    [
        ("", "redis"),
        ("ghcr.io", ""),
        ("https://ghcr.io", "redis"),  # a URL, not a host
        ("ghcr.io/acme", "redis"),
        ("ghcr.io", "/redis"),
        ("ghcr.io", "redis/"),
        ("ghcr.io", "redis:1.2.3"),  # tag
        ("ghcr.io", "redis@sha256:" + "0" * 64),  # digest
    ],
)
def test_oci_ref_refuses_what_is_not_a_host_and_repository(
    registry: str, repository: str
) -> None:
    with pytest.raises(ValueError):
        oci_ref(registry, repository)


# --- description --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (None, (None, False)),
        ({}, (None, False)),
        ({DESCRIPTION_ANNOTATION: 42}, (None, False)),
        ({DESCRIPTION_ANNOTATION: None}, (None, False)),
        ({DESCRIPTION_ANNOTATION: "Redis, packaged"}, ("Redis, packaged", False)),
        ({DESCRIPTION_ANNOTATION: ""}, ("", False)),
        ({DESCRIPTION_ANNOTATION: "bad \ud800 text"}, ("bad \ufffd text", False)),
    ],
)
def test_description_from(
    annotations: dict[str, object] | None, expected: tuple[str | None, bool]
) -> None:
    assert description_from(annotations) == expected


def test_description_cut_at_exactly_the_limit() -> None:
    at_limit = "é" * contract.DESCRIPTION_MAX
    assert contract.DESCRIPTION_MAX == 1000
    assert description_from({DESCRIPTION_ANNOTATION: at_limit}) == (at_limit, False)
    over = at_limit + "x"
    assert description_from({DESCRIPTION_ANNOTATION: over}) == (at_limit, True)


# --- bodies -------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"port": {"type": "integer"}}}


def _version(**changes: Any) -> dict[str, Any]:
    body = version_body("1.2.3-rc.1+b.5", "oci://ghcr.io/acme/redis:1.2.3-rc.1_b.5", SCHEMA)
    body.update(changes)
    return body


def _import(**changes: Any) -> dict[str, Any]:
    body = import_body(
        name="redis",
        oci_ref="oci://ghcr.io/acme/redis",
        description=None,
        version=_version(),
    )
    body.update(changes)
    return body


def test_version_body_shape_and_schema_passed_through() -> None:
    body = _version()
    assert body == {
        "semver": "1.2.3-rc.1+b.5",
        "ref": "oci://ghcr.io/acme/redis:1.2.3-rc.1_b.5",
        "input_schema": SCHEMA,
    }
    assert body["input_schema"] is SCHEMA
    check_version_body(body)


def test_import_body_always_carries_description() -> None:
    body = _import()
    assert body["description"] is None
    assert set(body) == {"name", "oci_ref", "description", "version"}
    check_import_body(body)
    check_import_body(_import(description="Redis"))


def test_import_body_with_compatibility_is_checked_not_crashed() -> None:
    # The contract's nested $ref only resolves when $defs sit at the root.
    compatibility = {
        "clusterTypes": ["kaas"],
        "kubernetes": {},
        "placement": {"providers": "any", "regions": ["eu"]},
    }
    check_import_body(_import(version=_version(compatibility=compatibility)))
    bad = {**compatibility, "placement": {"providers": "some", "regions": []}}
    with pytest.raises(ContractViolation, match=r"\$\.version\.compatibility\.placement"):
        check_import_body(_import(version=_version(compatibility=bad)))


@pytest.mark.parametrize(
    ("body", "path", "keyword"),
    [
        (_version(extra=1), "$", "additionalProperties"),
        (_version(semver="v1.2.3"), "$.semver", "pattern"),
        (_version(semver="1.2"), "$.semver", "pattern"),
        (_version(semver=""), "$.semver", "minLength"),
        (_version(ref=""), "$.ref", "minLength"),
        (_version(input_schema=[]), "$.input_schema", "type"),
        ({"semver": "1.2.3", "ref": "r"}, "$", "required"),
        ("not an object", "$", "type"),
    ],
)
def test_bad_version_bodies(body: Any, path: str, keyword: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        check_version_body(body)
    assert f"version body breaks the API contract at {path}: {keyword}:" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "path", "keyword"),
    [
        (_import(unknown="x"), "$", "additionalProperties"),
        (_import(name="n" * (contract.NAME_MAX + 1)), "$.name", "maxLength"),
        (_import(name=""), "$.name", "minLength"),
        (_import(oci_ref="ghcr.io/acme/redis"), "$.oci_ref", "pattern"),
        (_import(description="d" * 1001), "$.description", "maxLength"),
        (_import(description=5), "$.description", "type"),
        (_import(version=_version(semver="1.2.03")), "$.version.semver", "pattern"),
        (_import(version=_version(extra=True)), "$.version", "additionalProperties"),
    ],
)
def test_bad_import_bodies(body: dict[str, Any], path: str, keyword: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        check_import_body(body)
    assert f"import body breaks the API contract at {path}: {keyword}:" in str(caught.value)


@pytest.mark.parametrize("semver", ["1.2.3\n", "1\u0661.2.3", "1.2.3-\u0661a"])
def test_semver_is_checked_as_the_api_reads_its_pattern(semver: str) -> None:
    # The contract pattern must mean in Python what it means in ECMA-262.
    with pytest.raises(ContractViolation, match=r"at \$\.semver: pattern:"):
        check_version_body(_version(semver=semver))
    with pytest.raises(ContractViolation, match=r"at \$\.version\.semver: pattern:"):
        check_import_body(_import(version=_version(semver=semver)))


def test_long_values_are_cut_in_the_message() -> None:
    with pytest.raises(ContractViolation) as caught:
        check_import_body(_import(name="n" * 5000))
    assert len(str(caught.value)) < 300


# --- idempotency key ------------------------------------------------------------------

FIELDS: dict[str, Any] = {
    "api_url": "https://api.akua.dev/v1",
    "workspace": "team-a",
    "oci_ref": "oci://ghcr.io/acme/redis",
    "semver": "1.2.3",
    "digest": "sha256:" + "ab" * 32,
}


def test_idempotency_key_is_stable_and_fits() -> None:
    key = idempotency_key(**FIELDS)
    assert key == idempotency_key(**dict(FIELDS))
    assert len(key) == contract.IDEMPOTENCY_KEY_MAX
    assert re.fullmatch(r"akc1-[0-9a-f]{59}", key)
    # Pinned: changing the encoding would give every version already
    # imported a new key, so it must be a deliberate, visible change.
    assert key == "akc1-0ebebf661b54292ceaf77a80cee813444800eeb01d43fb34dce43badf5e"


def test_no_workspace_is_the_empty_workspace() -> None:
    assert idempotency_key(**{**FIELDS, "workspace": None}) == idempotency_key(
        **{**FIELDS, "workspace": ""}
    )


def test_fields_cannot_bleed_into_each_other() -> None:
    a = idempotency_key(**{**FIELDS, "oci_ref": "oci://x/ab", "semver": "1.0.0"})
    b = idempotency_key(**{**FIELDS, "oci_ref": "oci://x/a", "semver": "b1.0.0"})
    assert a != b


_field_names = st.sampled_from(sorted(FIELDS))


@given(_field_names, st.text(max_size=80), st.data())
def test_any_changed_field_changes_the_key(name: str, text: str, data: st.DataObject) -> None:
    base = {**FIELDS, **{n: data.draw(st.text(max_size=20), label=n) for n in FIELDS}}
    changed = {**base, name: text}
    assume(base[name] != text)
    key, other = idempotency_key(**base), idempotency_key(**changed)
    assert key != other
    assert len(key) <= contract.IDEMPOTENCY_KEY_MAX
    assert len(other) <= contract.IDEMPOTENCY_KEY_MAX


# --- the compiled fast path never accepts what jsonschema refuses -------------------

_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["1.2.3", "1.2.3\n", "01.2.3", "1.2.3-rc.1+b.5", "1.2.3-", "v1.2.3", "",
                     "oci://ghcr.io/a/b", "oci:/x", "redis", "Redis", "a" * 300]),
)
_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), _TEXT,
                   st.lists(_TEXT, max_size=2), st.dictionaries(_TEXT, _TEXT, max_size=2))


@st.composite
def _mutated_body(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["version", "import"]))
    body: dict[str, Any] = _version() if kind == "version" else _import()
    target = body if kind == "version" or draw(st.booleans()) else body["version"]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*target, "extra", "compatibility", "description"]))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(_VALUE)
    return kind, body


@given(_mutated_body())
def test_fast_body_check_never_accepts_what_jsonschema_refuses(case: tuple[str, Any]) -> None:
    from crawler import payload

    kind, body = case
    validator, fast = ((payload._VERSION_VALIDATOR, payload._FAST_VERSION) if kind == "version"
                       else (payload._IMPORT_VALIDATOR, payload._FAST_IMPORT))
    if fast.is_valid(body):
        assert list(validator.iter_errors(body)) == []
    # And the public check decides as jsonschema alone does.
    refused = next(iter(validator.iter_errors(body)), None) is not None
    check = check_version_body if kind == "version" else check_import_body
    if refused:
        with pytest.raises(ContractViolation):
            check(body)
    else:
        check(body)

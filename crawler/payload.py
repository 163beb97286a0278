"""Request bodies for the Akua API, and the checks that guard them.

The checks exist to catch the crawler's own bugs before a request leaves:
a body that fails them is never sent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

import jsonschema_rs
from jsonschema import (  # type: ignore[import-untyped]
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from crawler import contract

DESCRIPTION_ANNOTATION: Final = "org.opencontainers.image.description"
IDEMPOTENCY_KEY_PREFIX: Final = "akc1-"

_MESSAGE_MAX: Final = 200
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class ContractViolation(Exception):
    """A body the crawler built breaks the API contract: a crawler bug."""


# Built once: construction resolves references and is the costly part.
_VERSION_VALIDATOR: Final = Draft202012Validator(
    contract.VERSION_BODY_SCHEMA, format_checker=FormatChecker()
)
_IMPORT_VALIDATOR: Final = Draft202012Validator(
    contract.IMPORT_BODY_SCHEMA, format_checker=FormatChecker()
)

# The compiled engine only ever says "valid" quickly: a body it refuses goes to
# jsonschema, which decides and words the message.  So a difference between the two
# engines (Python's ``$`` before a final newline, formats jsonschema leaves unchecked)
# can never let through what jsonschema refuses: tests/test_payload.py compares them.
_FAST_VERSION: Final = jsonschema_rs.validator_for(contract.VERSION_BODY_SCHEMA, validate_formats=True)
_FAST_IMPORT: Final = jsonschema_rs.validator_for(contract.IMPORT_BODY_SCHEMA, validate_formats=True)


#: An OCI repository name (distribution spec): lowercase path components joined by "/".
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME: Final = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
REPOSITORY_NAME_MAX: Final = 255


def repository_name_problem(name: str) -> str | None:
    """Why ``name`` (a catalog entry, say) is not a valid OCI repository name, or None."""
    if len(name) > REPOSITORY_NAME_MAX:
        return f"repository name {name[:40]!r}… is longer than {REPOSITORY_NAME_MAX} characters"
    if REPOSITORY_NAME.fullmatch(name) is None:
        return (
            f"{name!r} is not a valid OCI repository name (lowercase letters, digits and "
            "separators . _ __ - in components joined by /)"
        )
    return None


def oci_ref(registry: str, repository: str) -> str:
    """``oci://HOST[:PORT]/REPOSITORY``: the package's identity, without tag or digest."""
    if not registry or any(c in registry for c in "/@ \t\r\n"):
        raise ValueError(f"registry must be 'host' or 'host:port', got {registry!r}")
    if (
        not repository
        or repository.startswith("/")
        or repository.endswith("/")
        or any(c in repository for c in ":@ \t\r\n")
    ):
        raise ValueError(f"repository must be a path without tag or digest, got {repository!r}")
    return f"oci://{registry}/{repository}"


def description_from(annotations: Mapping[str, object] | None) -> tuple[str | None, bool]:
    """The package description and whether it had to be cut to fit the API.

    Lone surrogates (possible from JSON ``\\ud800`` escapes) become U+FFFD,
    since the body could not be encoded as UTF-8 otherwise.
    """
    if annotations is None:
        return None, False
    value = annotations.get(DESCRIPTION_ANNOTATION)
    if not isinstance(value, str):
        return None, False
    value = _SURROGATE.sub("\ufffd", value)
    if len(value) > contract.DESCRIPTION_MAX:
        return value[: contract.DESCRIPTION_MAX], True
    return value, False


def version_body(semver: str, ref: str, input_schema: dict[str, Any]) -> dict[str, Any]:
    """Body of ``POST /packages/{id}/versions``; ``input_schema`` is the caller's dict."""
    return {"semver": semver, "ref": ref, "input_schema": input_schema}


def import_body(
    *, name: str, oci_ref: str, description: str | None, version: dict[str, Any]
) -> dict[str, Any]:
    """Body of ``POST /packages:import``; ``description`` is always sent, null when absent."""
    return {"name": name, "oci_ref": oci_ref, "description": description, "version": version}


def check_version_body(body: object) -> None:
    """Raise ContractViolation unless ``body`` is a valid version body."""
    _check(_VERSION_VALIDATOR, body, "version body", _FAST_VERSION)


def check_import_body(body: object) -> None:
    """Raise ContractViolation unless ``body`` is a valid import body."""
    _check(_IMPORT_VALIDATOR, body, "import body", _FAST_IMPORT)


def _check(validator: Any, body: object, what: str, fast: jsonschema_rs.Validator) -> None:
    try:
        if fast.is_valid(body):
            return
    except (ValueError, TypeError, OverflowError):  # a value the compiled engine cannot take
        pass
    error = best_match(validator.iter_errors(body))
    if error is not None:
        raise ContractViolation(
            f"{what} breaks the API contract at {error.json_path}: "
            f"{error.validator}: {_cut(error.message)}"
        )


def _cut(text: str) -> str:
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"


def idempotency_key(
    *, api_url: str, workspace: str | None, oci_ref: str, semver: str, digest: str
) -> str:
    """A stable key for one import, so a retried request is not applied twice.

    Fields are length-prefixed rather than joined with a separator, so no
    value can shift content into its neighbour.  No workspace and the empty
    workspace are the same (the API has no empty workspace name).
    """
    digest_input = bytearray()
    for field in (api_url, workspace or "", oci_ref, semver, digest):
        # surrogatepass: never raise, whatever the caller passes
        encoded = field.encode("utf-8", "surrogatepass")
        digest_input += f"{len(encoded)}:".encode() + encoded
    hex_digest = hashlib.sha256(digest_input).hexdigest()
    return IDEMPOTENCY_KEY_PREFIX + hex_digest[
        : contract.IDEMPOTENCY_KEY_MAX - len(IDEMPOTENCY_KEY_PREFIX)
    ]

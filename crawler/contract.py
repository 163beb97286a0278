"""What the Akua packages API accepts, as data.

These are the request-body schemas of Akua's public OpenAPI 3.1 document
(info.version 1.0.0) for ``POST /packages:import`` and
``POST /packages/{id}/versions``, restated here so the crawler can check
every body before it is sent without shipping the document.  Both bodies
forbid unknown fields.  The document itself is vendored in the repository
(``contracts/akua-openapi-packages.json``); ``tests/test_contract.py`` fails
when these schemas or limits drift from it, and the test double validates
requests with the document's own schemas.
"""

from __future__ import annotations

from typing import Any, Final

API_URL_DEFAULT: Final = "https://api.akua.dev/v1"

#: Strict SemVer 2.0 (semver.org's recommended expression), no ``v`` prefix.
SEMVER_PATTERN: Final = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$(?!\n)"
)
# Written with [0-9] rather than \d and with $(?!\n) so that Python's re, which lets \d
# match any Unicode digit and $ match before a final newline, accepts exactly what the
# ECMA-262 regex of the OpenAPI document accepts.

NAME_MAX: Final = 120
OCI_REF_MAX: Final = 2048
DESCRIPTION_MAX: Final = 1000
SEMVER_MAX: Final = 128
REF_MAX: Final = 512
WORKSPACE_MAX: Final = 53
IDEMPOTENCY_KEY_MAX: Final = 64
PAGE_LIMIT_MAX: Final = 100

VERSION_BODY_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["semver", "ref", "input_schema"],
    "properties": {
        "semver": {
            "type": "string",
            "minLength": 1,
            "maxLength": SEMVER_MAX,
            "pattern": SEMVER_PATTERN,
        },
        "ref": {"type": "string", "minLength": 1, "maxLength": REF_MAX},
        "input_schema": {"type": "object"},
        "compatibility": {
            "type": "object",
            "required": ["clusterTypes", "kubernetes", "placement"],
            "properties": {
                "clusterTypes": {"type": "array", "items": {"type": "string"}},
                "kubernetes": {
                    "type": "object",
                    "properties": {
                        "minVersion": {"type": "string"},
                        "maxVersion": {"type": "string"},
                    },
                },
                "placement": {
                    "type": "object",
                    "required": ["providers", "regions"],
                    "properties": {
                        "providers": {"$ref": "#/$defs/anyOrList"},
                        "regions": {"$ref": "#/$defs/anyOrList"},
                    },
                },
                "kaas": {
                    "type": "object",
                    "required": ["networkProfile"],
                    "properties": {
                        "networkProfile": {
                            "type": "string",
                            "enum": ["linux_cilium", "mixed_os_calico"],
                        }
                    },
                },
            },
        },
    },
    "$defs": {
        "anyOrList": {
            "anyOf": [
                {"type": "string", "enum": ["any"]},
                {"type": "array", "items": {"type": "string"}},
            ]
        }
    },
}

IMPORT_BODY_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "oci_ref", "version"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
        "description": {"type": ["string", "null"], "maxLength": DESCRIPTION_MAX},
        "display_image_url": {"type": "string", "maxLength": 2048, "format": "uri"},
        "oci_ref": {
            "type": "string",
            "minLength": 1,
            "maxLength": OCI_REF_MAX,
            "pattern": "^oci://",
        },
        "version": VERSION_BODY_SCHEMA,
    },
    # The embedded version schema's "$ref": "#/$defs/..." resolves from this root.
    "$defs": VERSION_BODY_SCHEMA["$defs"],
}

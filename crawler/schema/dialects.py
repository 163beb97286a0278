"""Which JSON Schema dialect a schema is written in, from its ``$schema``.

Publishers spell the same dialect several ways, so each is recognised with
``http`` or ``https`` and with or without the empty fragment ``#``:

- draft-04, draft-06, draft-07: ``json-schema.org/draft-0N/schema``;
- 2019-09, 2020-12: ``json-schema.org/draft/YYYY-MM/schema``;
- the historical "latest" alias ``json-schema.org/schema``, checked as
  **2020-12**: "latest" names the newest metaschema, and jsonschema,
  check-jsonschema and jsonschema-rs all read it so.  Helm-era charts that
  carry it with draft-07 habits (tuple ``items``) fail there too; accepting
  them here would only move the failure to whoever validates next.

No ``$schema`` means 2020-12, the dialect Akua derives its schemas in.  Any
other value is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import referencing.jsonschema
from jsonschema import (  # type: ignore[import-untyped]
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
)
from jsonschema.protocols import Validator  # type: ignore[import-untyped]
from referencing import Specification

from crawler.schema.problems import Problem, json_type, short


@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    name: str  # "draft-07"
    uri: str  # the metaschema's own id, as jsonschema and referencing bundle it
    validator: type[Validator]
    specification: Specification[Any]
    # Up to draft-07 a "$ref" makes its siblings (even "$id") ignored.
    ref_overrides_siblings: bool
    # Keywords whose value is a reference to resolve.
    reference_keywords: frozenset[str]

    def __repr__(self) -> str:
        return f"Dialect({self.name})"


def _dialect(name: str, uri: str, validator: type[Validator], keywords: set[str]) -> Dialect:
    return Dialect(
        name=name,
        uri=uri,
        validator=validator,
        specification=referencing.jsonschema.specification_with(uri),
        ref_overrides_siblings=name.startswith("draft-"),
        reference_keywords=frozenset(keywords),
    )


DRAFT4: Final = _dialect("draft-04", "http://json-schema.org/draft-04/schema#", Draft4Validator, {"$ref"})
DRAFT6: Final = _dialect("draft-06", "http://json-schema.org/draft-06/schema#", Draft6Validator, {"$ref"})
DRAFT7: Final = _dialect("draft-07", "http://json-schema.org/draft-07/schema#", Draft7Validator, {"$ref"})
DRAFT201909: Final = _dialect(
    "2019-09", "https://json-schema.org/draft/2019-09/schema", Draft201909Validator,
    {"$ref", "$recursiveRef"},
)
DRAFT202012: Final = _dialect(
    "2020-12", "https://json-schema.org/draft/2020-12/schema", Draft202012Validator,
    {"$ref", "$dynamicRef"},
)
DIALECTS: Final = (DRAFT4, DRAFT6, DRAFT7, DRAFT201909, DRAFT202012)
DEFAULT_DIALECT: Final = DRAFT202012
#: Where "json-schema.org/schema" (the old "latest" address) is checked.
LATEST_ALIAS_DIALECT: Final = DRAFT202012


def _spellings(host_path: str, dialect: Dialect) -> dict[str, Dialect]:
    return {
        f"{scheme}://{host_path}{fragment}": dialect
        for scheme in ("http", "https")
        for fragment in ("", "#")
    }


#: Every accepted ``$schema`` value and the dialect it names.
SUPPORTED_DIALECTS: Final[Mapping[str, Dialect]] = MappingProxyType(
    {
        **_spellings("json-schema.org/draft-04/schema", DRAFT4),
        **_spellings("json-schema.org/draft-06/schema", DRAFT6),
        **_spellings("json-schema.org/draft-07/schema", DRAFT7),
        **_spellings("json-schema.org/draft/2019-09/schema", DRAFT201909),
        **_spellings("json-schema.org/draft/2020-12/schema", DRAFT202012),
        **_spellings("json-schema.org/schema", LATEST_ALIAS_DIALECT),
    }
)


def dialect_of(schema: Mapping[str, Any]) -> Dialect:
    """The dialect the top-level ``$schema`` names; raises Problem for an unknown one."""
    if "$schema" not in schema:
        return DEFAULT_DIALECT
    uri = schema["$schema"]
    if not isinstance(uri, str):
        raise Problem(f"$schema must be a string, not {json_type(uri)}")
    dialect = SUPPORTED_DIALECTS.get(uri)
    if dialect is None:
        raise Problem(
            f"$schema {short(uri)} is not a supported dialect "
            f"(draft-04, draft-06, draft-07, 2019-09, 2020-12)"
        )
    return dialect

"""A package's input JSON Schema: extraction, limits, dialects, regexes, references.

Modules, one concept each:

- ``extract``: the annotation → a checked schema, the limits, the verdict cache;
- ``dialects``: ``$schema`` spellings and what each names;
- ``regexes``: ECMA-262 regular expressions (regress);
- ``metaschema``: the metaschema check (jsonschema-rs fast path, jsonschema's words);
- ``references``: what resolves without a network, what would need one;
- ``problems``: how a verdict is worded.
"""

from crawler.schema.dialects import (
    DEFAULT_DIALECT,
    DIALECTS,
    LATEST_ALIAS_DIALECT,
    SUPPORTED_DIALECTS,
    Dialect,
)
from crawler.schema.extract import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_SUBSCHEMAS,
    REMOTE_REFS_CHOICES,
    REMOTE_REFS_DEFAULT,
    SCHEMA_ANNOTATION_DEFAULT,
    VERDICT_CACHE_SIZE,
    FoundSchema,
    RemoteRefs,
    SchemaInvalid,
    check_schema_text,
    extract_input_schema,
)
from crawler.schema.regexes import MAX_REGEX_ALTERNATIVES

__all__ = [
    "DEFAULT_DIALECT",
    "DIALECTS",
    "LATEST_ALIAS_DIALECT",
    "MAX_REGEX_ALTERNATIVES",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "MAX_SUBSCHEMAS",
    "REMOTE_REFS_CHOICES",
    "REMOTE_REFS_DEFAULT",
    "SCHEMA_ANNOTATION_DEFAULT",
    "SUPPORTED_DIALECTS",
    "VERDICT_CACHE_SIZE",
    "Dialect",
    "FoundSchema",
    "RemoteRefs",
    "SchemaInvalid",
    "check_schema_text",
    "extract_input_schema",
]

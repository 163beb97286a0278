"""Per-schema cost of the input-schema check, in milliseconds.

    python -m bench.schema_cost [--count N]

Every schema is distinct (its title carries a counter), so the verdict cache
never answers and each call pays the whole check: decoding, the walk, the
metaschema and the references.  Three shapes: the benchmark's small 2020-12
schema, a Helm-like draft-07 values schema of 60 properties (patterns,
definitions, references) and the same written for 2020-12.  Prints the median
of five rounds per shape, in CPU time; no target, it is a before/after measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.worlds import small_schema
from crawler.schema import SCHEMA_ANNOTATION_DEFAULT, extract_input_schema


def helm_like(title: str, dialect: str) -> dict[str, Any]:
    defs = "definitions" if "draft-07" in dialect else "$defs"
    properties: dict[str, Any] = {}
    for i in range(60):
        kind = i % 4
        if kind == 0:
            properties[f"name{i}"] = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
        elif kind == 1:
            properties[f"port{i}"] = {"$ref": f"#/{defs}/port"}
        elif kind == 2:
            properties[f"labels{i}"] = {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 63},
            }
        else:
            properties[f"mode{i}"] = {"enum": ["a", "b", "c"], "default": "a"}
    return {
        "$schema": dialect,
        "title": title,
        "type": "object",
        "properties": properties,
        defs: {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
        "required": ["name0"],
    }


def _cost(make: Callable[[str], dict[str, Any]], count: int) -> float:
    texts = [json.dumps(make(f"schema {time.perf_counter_ns()} {i}")) for i in range(count)]
    # CPU time of this process: on a shared machine wall time mostly measures the neighbours.
    started = time.process_time()
    for text in texts:
        extract_input_schema({SCHEMA_ANNOTATION_DEFAULT: text}, (SCHEMA_ANNOTATION_DEFAULT,))
    return (time.process_time() - started) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    shapes: dict[str, Callable[[str], dict[str, Any]]] = {
        "small 2020-12": small_schema,
        "helm-like draft-07 (60 properties)": lambda t: helm_like(
            t, "http://json-schema.org/draft-07/schema#"
        ),
        "helm-like 2020-12 (60 properties)": lambda t: helm_like(
            t, "https://json-schema.org/draft/2020-12/schema"
        ),
    }
    for name, make in shapes.items():
        _cost(make, 20)  # warm-up: validators built, caches primed
        rounds = [_cost(make, args.count) for _ in range(5)]
        print(f"{name:40s} {statistics.median(rounds):8.3f} CPU ms per schema "
              f"(rounds {min(rounds):.3f}-{max(rounds):.3f})")


if __name__ == "__main__":
    main()

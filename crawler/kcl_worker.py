"""The child process that runs KCL's library: ``python -m crawler.kcl_worker MEMORY_BYTES``.

kcl-lib is native code: a ``package.k`` nesting ten thousand parentheses
overflows its parser's stack and kills the process with SIGSEGV.  It
therefore never runs inside the crawler.  This child imports it, answers
requests one at a time, and exits at the end of its input; the crawler's
side (``crawler.kcl_pool``) bounds each request's time and restarts a child
that died.  Its address space is capped (RLIMIT_AS) before anything loads.

Wire format, both directions: a 4-byte big-endian length, then that many
bytes.  The child speaks first, once: ``{"ready": true}`` or ``{"ready":
false, "error": "..."}`` when kcl-lib cannot be imported.  Then each request
is the UTF-8 text of a ``package.k`` and each answer is ``{"schema": {...}}``
or ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import resource
import signal
import struct
import sys
from typing import IO, Any, Final

from crawler.kcl_export import (
    SERDE_JSON_MAX_DEPTH,
    ExportError,
    export_input_schema,
    json_depth,
)

FRAME_HEADER: Final = struct.Struct(">I")
PACKAGE_FILENAME: Final = "package.k"
# Unresolved imports (akua.*, charts.*) are expected: only the package file is
# given to KCL, as the exporter gives it; they do not stop the mapping.
_IMPORT_NOT_FOUND: Final = "Error(CannotFindModule)"
_MAX_ERROR_CHARS: Final = 300


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame, or None at the end of the stream."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def write_frame(stream: IO[bytes], document: dict[str, Any]) -> None:
    payload = json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
    stream.write(FRAME_HEADER.pack(len(payload)) + payload)
    stream.flush()


def main(argv: list[str]) -> int:
    # The crawler's Ctrl-C reaches its whole process group; the crawler decides
    # when this child ends (by closing its input), so an interrupted run can
    # still finish the derivations in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    memory = int(argv[1]) if len(argv) > 1 else 0
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    try:
        import kcl_lib.api as kcl_api
    except ImportError as exc:
        write_frame(answers, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 0
    api = kcl_api.API()
    write_frame(answers, {"ready": True})
    while (request := read_frame(requests)) is not None:
        write_frame(answers, derive(kcl_api, api, request))
    return 0


def derive(kcl_api: Any, api: Any, request: bytes) -> dict[str, Any]:
    """The answer for one ``package.k``."""
    try:
        source = request.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {"error": f"package.k is not UTF-8 (byte {exc.start})"}
    try:
        parsed = api.parse_program(
            kcl_api.ParseProgramArgs(paths=[PACKAGE_FILENAME], sources=[source])
        )
        syntax = [e for e in parsed.errors if e.level == "error" and e.code != _IMPORT_NOT_FOUND]
        if syntax:
            return {"error": f"package.k does not parse: {_diagnostic(syntax[0])}"}
        depth = json_depth(parsed.ast_json)
        if depth > SERDE_JSON_MAX_DEPTH:
            return {
                "error": (
                    f"package.k's syntax tree nests {depth} levels deep; Akua's exporter reads "
                    f"it as JSON and stops at {SERDE_JSON_MAX_DEPTH}"
                )
            }
        ast = json.loads(parsed.ast_json)
        mapping = api.get_schema_type_mapping(
            kcl_api.GetSchemaTypeMappingArgs(
                exec_args=kcl_api.ExecProgramArgs(
                    k_filename_list=[PACKAGE_FILENAME], k_code_list=[source], compile_only=True
                ),
                schema_name="Input",
            )
        )
        types = {name: plain_type(t) for name, t in mapping.schema_type_mapping.items()}
        return {"schema": export_input_schema(types, ast)}
    except ExportError as exc:
        return {"error": str(exc)}
    except RecursionError:
        return {"error": "package.k nests too deeply to be read"}
    except Exception as exc:  # noqa: BLE001 - kcl-lib raises plain Exception; report, don't die
        return {"error": f"kcl-lib failed: {_short(str(exc))}"}


def plain_type(kcl_type: Any) -> dict[str, Any]:
    """A KclType message as the plain dict ``crawler.kcl_export`` reads."""
    return {
        "type": kcl_type.type,
        "schema_name": kcl_type.schema_name,
        "default": kcl_type.default,
        "required": list(kcl_type.required),
        "properties": {name: plain_type(p) for name, p in kcl_type.properties.items()},
        "item": plain_type(kcl_type.item) if kcl_type.HasField("item") else None,
        "union_types": [plain_type(u) for u in kcl_type.union_types],
    }


def _diagnostic(error: Any) -> str:
    messages = list(error.messages)
    if not messages:
        return _short(str(error.code))
    first = messages[0]
    where = f"line {first.pos.line}" if first.pos.line else ""
    if where and first.pos.column:
        where += f", column {first.pos.column}"
    return _short(f"{where}: {first.msg}" if where else first.msg)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


if __name__ == "__main__":
    sys.exit(main(sys.argv))

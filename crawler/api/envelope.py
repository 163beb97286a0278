"""Turning any Akua error response into one readable sentence.

Akua documents ``{"success": false, "errors": [{"code", "message", "path"?}],
"result": {}}`` and its intro page shows ``{"error": {"code", "message"}}``.
Proxies in between answer HTML or nothing at all; none of that may crash
the crawler or flood the log.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

SNIPPET_MAX: Final = 200
_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def error_message(status: int, body: bytes, content_type: str = "") -> str:
    """``HTTP 422: 7002 name is too long (body.name)`` or the best that can be said."""
    detail = _from_json(body) if body else None
    if detail is None:
        detail = _snippet(body, content_type)
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status} with an empty body"


def _from_json(body: bytes) -> str | None:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        parts = [_entry(entry) for entry in errors[:5] if isinstance(entry, dict)]
        if len(errors) > 5:
            parts.append(f"and {len(errors) - 5} more")
        return "; ".join(part for part in parts if part) or None
    error = data.get("error")
    if isinstance(error, dict):
        return _entry(error)
    if isinstance(error, str):
        return _clip(error)
    message = data.get("message")
    return _clip(message) if isinstance(message, str) else None


def _entry(entry: dict[str, Any]) -> str:
    code = entry.get("code")
    message = entry.get("message")
    text = _clip(message) if isinstance(message, str) else "(no message)"
    if isinstance(code, int | str) and not isinstance(code, bool):
        text = f"{code} {text}"
    path = entry.get("path")
    if isinstance(path, list) and path and all(isinstance(p, str | int) for p in path):
        text += f" ({'.'.join(str(p) for p in path)})"
    return text


def _snippet(body: bytes, content_type: str) -> str:
    text = body.decode("utf-8", errors="replace")
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        text = _TAGS.sub(" ", text)
    text = _clip(text)
    return f"non-JSON body: {text}" if text else ""


def _clip(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= SNIPPET_MAX else text[: SNIPPET_MAX - 1] + "…"

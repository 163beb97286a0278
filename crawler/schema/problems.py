"""How a verdict on a schema is worded: the problem, its place, short quotes.

Every check of the schema text raises :class:`Problem` with a detail that
does not yet name the annotation key; extraction adds the key.  Reason parts
are cut so a whole reason stays around 300 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeAlias

SHORT_REPR: Final = 60
SHORT_PATH: Final = 100
SHORT_MESSAGE: Final = 140

_JSON_PATH_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)

# A linked path (parent, step) so a walk does O(1) work per node and
# renders a path only when it reports one.
Path: TypeAlias = tuple["Path", str | int] | None


class Problem(Exception):
    """A verdict on the schema text, before the annotation key is named."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def render_path(path: Path) -> str:
    steps: list[str | int] = []
    while path is not None:
        path, step = path
        steps.append(step)
    return render_steps(reversed(steps))


def render_steps(steps: Iterable[str | int]) -> str:
    """``$.a[0]['$ref']`` for the steps ``a``, ``0``, ``$ref``."""
    rendered = ["$"]
    for step in steps:
        if isinstance(step, int):
            rendered.append(f"[{step}]")
        elif _JSON_PATH_NAME.fullmatch(step):
            rendered.append(f".{step}")
        else:
            rendered.append(f"[{short(step)}]")
    return cut("".join(rendered), SHORT_PATH)


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def short(value: str) -> str:
    return cut(repr(value), SHORT_REPR)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

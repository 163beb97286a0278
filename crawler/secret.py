"""``Secret``: a string that never shows itself.

Its own module, so whatever carries a secret (the HTTP clients, the
settings) can hold one without importing the configuration machinery.
"""

from __future__ import annotations

from typing import Final

#: The shortest secret the log redaction masks: shorter strings would mask ordinary words,
#: so configuration refuses a shorter token or password (``secret_sources.py``).
MASKED_FROM: Final = 4


class Secret:
    """A string that never shows itself in a repr, a log or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

"""Regular expressions in schemas are ECMA-262, checked with a real ECMA-262 engine.

JSON Schema says ``pattern``, the names under ``patternProperties`` and
strings of ``format: "regex"`` are ECMA-262 regular expressions.  Python's
``re`` is a different dialect (it takes ``(?i)``, refuses ``\\p{Letter}``), so
the check compiles with ``regress`` (Rust's regress engine) in Unicode mode,
the ``u`` flag, as check-jsonschema and ajv do by default: named groups,
``\\p{…}`` property escapes and ``\\cC`` are valid; ``(?i)``, ``(?P<n>…)`` and
identity escapes of ordinary characters such as ``\\_`` are not.

regress parses an alternation recursively: about 50,000 ``|`` in one
expression overflow an 8 MiB thread stack and kill the process (measured:
segmentation fault), and worker threads may have far less.  An expression
with more than MAX_REGEX_ALTERNATIVES ``|`` characters is therefore refused
before regress sees it; deep nesting regress refuses by itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Final

import regress

#: ``|`` characters allowed in one regular expression (about 150 KiB of stack in regress).
MAX_REGEX_ALTERNATIVES: Final = 1000

# Patterns repeat across the schemas of a registry; verdicts on short ones are
# remembered (long ones are rare and would make the cache's memory unbounded).
_CACHE_SIZE: Final = 4096
_CACHED_LENGTH: Final = 512


class _Verdicts:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pattern: str) -> tuple[bool, str | None]:
        with self._lock:
            if pattern not in self._entries:
                return False, None
            self._entries.move_to_end(pattern)
            return True, self._entries[pattern]

    def put(self, pattern: str, problem: str | None) -> None:
        with self._lock:
            self._entries[pattern] = problem
            while len(self._entries) > _CACHE_SIZE:
                self._entries.popitem(last=False)


_verdicts = _Verdicts()


def ecma_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an ECMA-262 regular expression, or None when it is one."""
    cacheable = len(pattern) <= _CACHED_LENGTH
    if cacheable:
        known, problem = _verdicts.get(pattern)
        if known:
            return problem
    problem = _compile_problem(pattern)
    if cacheable:
        _verdicts.put(pattern, problem)
    return problem


def is_ecma_regex(pattern: object) -> bool:
    """Format check for ``regex``: non-strings are not this format's business."""
    return not isinstance(pattern, str) or ecma_problem(pattern) is None


def _compile_problem(pattern: str) -> str | None:
    alternatives = pattern.count("|")
    if alternatives > MAX_REGEX_ALTERNATIVES:
        return f"{alternatives} '|', over the limit of {MAX_REGEX_ALTERNATIVES} alternatives"
    try:
        regress.Regex(pattern, flags="u")
    except regress.RegressError as exc:
        return str(exc) or type(exc).__name__
    return None


class RegexInvalid(ValueError):
    """Raised by the ``regex`` format check, carrying regress's reason."""

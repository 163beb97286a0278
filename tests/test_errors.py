"""The exception tree drawn in crawler/errors.py is complete and true."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import crawler
from crawler import errors
from crawler.errors import CrawlerError, ItemError, RunError
from crawler.outcomes import Outcome

_NODE = re.compile(r"^(?P<indent>.*?)(?:[├└]── )(?P<name>[A-Za-z_][A-Za-z0-9_]*)\b")


def crawler_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(crawler.__path__, "crawler."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI when imported
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[name] = value
    return found


def drawn_parents() -> dict[str, str]:
    """Each class drawn in the tree, with the class drawn above it one level up."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = [(0, "Exception")]
    for line in errors.__doc__.splitlines():
        match = _NODE.match(line)
        if match is None:
            continue
        depth = len(match.group("indent"))
        while stack and stack[-1][0] >= depth + 1:
            stack.pop()
        parents[match.group("name")] = stack[-1][1]
        stack.append((depth + 1, match.group("name")))
    return parents


def test_every_exception_class_is_drawn_and_reexported() -> None:
    classes = crawler_exceptions()
    doc = errors.__doc__ or ""
    missing = sorted(name for name in classes if name not in doc)
    assert missing == [], f"not drawn in crawler/errors.py: {missing}"
    for name, cls in classes.items():
        if not name.startswith("_"):
            assert getattr(errors, name) is cls, f"crawler.errors.{name} is not {cls}"


def test_the_drawing_shows_each_class_under_its_real_base() -> None:
    classes = crawler_exceptions()
    known = {**classes, "Exception": Exception, "TimeoutError": TimeoutError, "ValueError": ValueError}
    parents = drawn_parents()
    assert parents, "no tree found in the docstring"
    for name, parent in parents.items():
        assert name in known, f"{name} is drawn but not defined"
        cls = known[name]
        assert parent in known, parent
        if cls.__module__.startswith("crawler"):
            assert known[parent] in cls.__bases__, f"{name} is drawn under {parent}: {cls.__bases__}"
        else:
            assert issubclass(cls, known[parent]), f"{name} is not a {parent}"


def test_item_errors_carry_their_outcome_and_run_errors_their_exit_status() -> None:
    for cls in crawler_exceptions().values():
        if issubclass(cls, ItemError):
            assert cls.outcome in (Outcome.INVALID, Outcome.REJECTED, Outcome.FAILED), cls
        if issubclass(cls, RunError) and cls is not RunError:
            assert cls.exit_status in (2, 3, 4), cls
    assert errors.RegistryAuthFailed("x").exit_status == 3
    assert errors.SchemaInvalid("x").outcome is Outcome.INVALID
    assert errors.RegistryUnavailable("x").outcome is Outcome.FAILED
    assert issubclass(errors.RegistryAuthFailed, RunError)
    assert issubclass(errors.ItemError, CrawlerError)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        errors.NoSuchError  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchError" in str(exc)
    else:
        raise AssertionError("expected AttributeError")

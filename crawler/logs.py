"""Structured logging: JSON lines for cron and files, a console view on a TTY.

Every event goes through ``redact``, which replaces each registered secret
(the Akua token, the registry password) wherever it appears, tracebacks
included, so no log level and no retry message can leak one.  Records of the
standard ``logging`` module (urllib3, httpx, anything a library logs) go
through the same processors by way of structlog's ``ProcessorFormatter``, so
they too are JSON lines (or console lines) and redacted.  JSON lines to a
file, pipe or terminal go through ``crawler.log_writer``'s thread; ``finish``
writes out what it still holds at the end of a run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from crawler.log_writer import LineWriter
from crawler.secret import MASKED_FROM

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class Redactor:
    """A structlog processor that masks secrets in every value of an event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short strings would mask ordinary words; real tokens and passwords are longer.
        self._secrets = sorted({s for s in secrets if len(s) >= MASKED_FROM}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        """Mask one more secret from now on (one learnt after start, e.g. from a helper)."""
        if len(secret) >= MASKED_FROM and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, "***")
            return value
        if isinstance(value, list | tuple):
            return type(value)(self._mask(item) for item in value)
        if isinstance(value, dict):
            return {key: self._mask(item) for key, item in value.items()}
        if isinstance(value, BaseException):
            return self._mask(repr(value))
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._mask(value)
        return event_dict


_active: Redactor | None = None


def protect(*secrets: str) -> None:
    """Register secrets learnt after ``configure`` (Docker config, credential helpers)."""
    if _active is not None:
        for secret in secrets:
            _active.add(secret)


def use_console(log_format: str, stream: TextIO) -> bool:
    if log_format == "auto":
        return stream.isatty()
    return log_format == "console"


#: How long the end of a run waits for the log writer to hand over its last lines.
WRITER_CLOSE_S = 5.0

_writer: LineWriter | None = None


def _has_descriptor(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return True


def finish(timeout_s: float = WRITER_CLOSE_S) -> bool:
    """Write out every queued line (the closing event included) and stop the writer.

    False when the log's reader took nothing for ``timeout_s``: the writer thread is
    then stuck inside a write, holding the stream's lock, so nothing may flush that
    stream again (the process must leave with ``os._exit``).
    """
    global _writer
    writer, _writer = _writer, None
    return writer is None or writer.close(timeout_s)


def configure(
    *, log_format: str, level: str, secrets: Iterable[str], stream: TextIO | None = None
) -> None:
    global _active, _writer
    finish()  # lines of an earlier configuration first (tests configure many times)
    stream = stream or sys.stderr
    console = use_console(log_format, stream)
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        if _has_descriptor(stream):  # a file, pipe or terminal: written on its own thread
            stream = _writer = LineWriter(stream)  # type: ignore[assignment]  # write/flush/isatty
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks become text before the redactor sees the event, in both formats: the console
    # renderer would otherwise print them from exc_info after redaction, secrets and all.
    processors.append(structlog.processors.format_exc_info)
    redactor = _active = Redactor(secrets)
    structlog.configure(
        processors=[*processors, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # WriteLogger: each event is one write of the line and its newline (print() makes two,
        # between which another thread's record could land).
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    route_standard_logging(stream, _LEVELS[level], [structlog.stdlib.add_logger_name, *processors[1:]],
                           [redactor, renderer])
    quiet_libraries()


class _Routed(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler this module installs on the root logger (replaced on reconfiguration)."""


def route_standard_logging(
    stream: TextIO, level: int, pre_chain: list[Any], processors: list[Any]
) -> None:
    handler = _Routed(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors],
    ))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _Routed)] + [handler]
    root.setLevel(level)


def quiet_libraries() -> None:
    """oras logs every non-2xx at ERROR and httpx every request at INFO: neither is ours to say."""
    oras = logging.getLogger("oras")
    oras.handlers = [logging.NullHandler()]
    oras.propagate = False
    oras.setLevel(logging.CRITICAL + 1)
    for name in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)

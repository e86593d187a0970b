"""Structured logging to stderr with structlog.

Events use dotted snake_case names (``target.completed``, ``graph.request.retrying``) and the same
keys everywhere (``target``, ``object_id``, ``attempt``, ``http_status``, ``request_id``). On a terminal
the output is human-readable; otherwise, or with ``--log-format json``, it is one JSON object per
line, which is what log shippers in a container expect. Two processors guard secrets: tracebacks
are rendered without local variables (a worker's locals hold resolved credentials), and
:func:`~batchsync._redaction.redact_event` blanks every known secret just before rendering.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import Processor

from batchsync._redaction import redact_event
from batchsync.progress import ProgressStream

__all__ = ["LogFormat", "configure_logging", "get_logger", "progress_stream"]

LogFormat = Literal["auto", "console", "json"]

_progress: ProgressStream | None = None


def configure_logging(
    *, level: int = logging.INFO, log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for the whole process; call once, before the first event."""
    global _progress  # logging is process-wide, and so is the terminal it draws on
    terminal = stream if stream is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not terminal.isatty())
    _progress = None
    output: Any = terminal
    if not use_json and terminal.isatty():
        _progress = output = ProgressStream(terminal)
    structlog.configure(
        processors=[*shared_processors(json=use_json), _renderer(use_json)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )


def shared_processors(*, json: bool) -> list[Processor]:
    """Return the processors every event passes through before rendering, redaction last."""
    exceptions: Processor = structlog.processors.format_exc_info
    if json:
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        exceptions = structlog.processors.ExceptionRenderer(transformer)

    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        exceptions,
        redact_event,
    ]


def progress_stream() -> ProgressStream | None:
    """Return the terminal stream that can show a progress line, or None outside a terminal."""
    return _progress


def get_logger(name: str = "batchsync") -> Any:
    """Return a structlog logger bound to ``name``."""
    return structlog.get_logger(name)


def _renderer(use_json: bool) -> Processor:
    if use_json:
        return structlog.processors.JSONRenderer()

    return structlog.dev.ConsoleRenderer(colors=False)

"""Structured logging: stable event names (``batch.applied``), JSON in production.

Log records never carry secrets or whole payloads; callers pass identifiers, counts and offsets.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured.

    A logger bound to the stream object of configuration time keeps writing to it after it is
    closed or replaced (pytest captures each test's stderr in its own stream, then closes it):
    every later log line raised ``ValueError`` there, inside retry hooks too.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging to stderr; ``fmt`` is ``json``, ``console`` or ``auto``.

    ``auto`` renders for people on a terminal and as JSON lines otherwise (containers, CI).
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # aiokafka and asyncpg log through the stdlib: keep their warnings, drop their chatter.
    logging.basicConfig(
        level=logging.WARNING, stream=_Stderr(), format="%(levelname)s %(name)s: %(message)s"
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (the module)."""
    return structlog.get_logger(name)

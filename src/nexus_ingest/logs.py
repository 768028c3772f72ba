"""Structured logging: JSON when not on a terminal, readable lines when on one.

Log lines carry ids and sizes, never conversation text or contact details.
"""

from __future__ import annotations

import logging
import sys

# structlog loads rich (and with it pygments), when installed, only to pretty-print exceptions
# on a terminal. That is ~50 ms of every process's start-up, a sixth of a worker's, and our
# processors turn exceptions into plain text before a renderer sees them. So structlog is
# imported as if rich were absent; rich itself stays importable (the CLI's live views use it).
_hide_rich = "rich" not in sys.modules and "structlog" not in sys.modules
if _hide_rich:
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` now fails
try:
    import structlog
finally:
    if _hide_rich:
        del sys.modules["rich"]


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Set up structlog and the standard library's logging once, for the whole process."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    # Access logs would print every request line at INFO; the producer logs its own events.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

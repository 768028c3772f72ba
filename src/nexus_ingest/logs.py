"""Structured logging: JSON when not on a terminal, readable lines when on one.

Every line of the process goes through structlog's renderer, the standard library's too
(uvicorn, psycopg and its pool, asyncio, the embedded server's wrapper, warnings), so a JSON
log stream holds nothing but JSON objects, each with an `event`. Log lines carry ids and sizes,
never conversation text or contact details.
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

# Libraries that would print every request or call at INFO; our own events say what matters.
_QUIETER = ("uvicorn.access", "httpx", "httpx2", "httpcore")


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> bool:
    """Set up structlog and the standard library's logging once; returns whether lines are JSON."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    stamp: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # One write per line: `nexus up`'s worker shares this stream, and `print` writes a line's
    # text and its newline apart, so the other process's line could land between them.
    printer = structlog.WriteLogger(sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: printer,
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(printer, stamp, renderer, level.upper())
    return as_json


def _route_standard_logging(
    printer: structlog.WriteLogger,
    stamp: list[structlog.typing.Processor],
    renderer: structlog.typing.Processor,
    level: str,
) -> None:
    """Render the standard library's records like our own events, through the same writer."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _PrinterHandler(printer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # `warnings.warn` would print plain lines on stderr
    for name in _QUIETER:
        logging.getLogger(name).setLevel(logging.WARNING)


class _PrinterHandler(logging.Handler):
    """Writes through structlog's printer, so its lines and ours never interleave mid-line."""

    def __init__(self, printer: structlog.WriteLogger) -> None:
        super().__init__()
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.printer.msg(self.format(record))
        except Exception:  # logging must never take the process down
            self.handleError(record)

"""Logging setup: structlog to stdout; third-party loggers that echo URLs are quietened."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, tzinfo

import structlog
from structlog.typing import EventDict, WrappedLogger

# Log lines carry the campaign's zone (+08:00) like every other time the operator reads;
# UTC until a campaign is loaded (set_zone).
_zone: list[tzinfo] = [UTC]


def set_zone(tz: tzinfo) -> None:
    """Stamp log lines in ``tz`` from now on (the campaign's zone)."""
    _zone[0] = tz


def _timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # Wall-clock time on purpose: a log line says when the process wrote it, also in replays.
    event["timestamp"] = datetime.now(_zone[0]).isoformat(timespec="milliseconds")
    return event


def _console(debug: bool) -> structlog.dev.ConsoleRenderer:
    # Rich tracebacks show every frame's local variables: directory records, addresses,
    # mobiles. Only an operator asking for DEBUG gets them.
    formatter = (
        structlog.dev.RichTracebackFormatter(show_locals=True, color_system=None)
        if debug
        else structlog.dev.plain_traceback
    )
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=formatter)


def configure(level: str = "INFO", json: bool = False) -> None:
    """Log at ``level`` to stdout. Tracebacks show local variables only at DEBUG."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(message)s")
    # httpx logs full request URLs; Aliyun puts phone numbers and key ids in the query.
    for name in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    renderer: list[structlog.typing.Processor] = (
        [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
        if json
        else [_console(debug=numeric <= logging.DEBUG)]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _timestamp,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )


def _safe_defaults() -> None:
    """Before (or without) :func:`configure`: structlog's defaults, minus the locals."""
    if structlog.is_configured():
        return
    processors = [
        _console(debug=False) if isinstance(p, structlog.dev.ConsoleRenderer) else p
        for p in structlog.get_config()["processors"]
    ]
    structlog.configure(processors=processors)


_safe_defaults()


def mask_address(address: str) -> str:
    """Mask an email address or phone number for logs: ``zh***@example.org``, ``+86138****0000``."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:2]}***@{domain}"
    if len(address) >= 7:
        return f"{address[:-8]}****{address[-4:]}" if len(address) > 8 else "****"
    return "****"


# An address or a phone number quoted inside a peer's free text (an SMTP reply, a
# provider's error message): 7 or more digits standing alone are treated as a number.
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+'=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.+-])\+?\d{7,15}(?![\w])")


def mask_text(text: str) -> str:
    """``text`` with every e-mail address and phone-like number in it masked."""
    text = _EMAIL_IN_TEXT.sub(lambda m: mask_address(m.group(0)), text)
    return _NUMBER_IN_TEXT.sub(lambda m: mask_address(m.group(0)), text)

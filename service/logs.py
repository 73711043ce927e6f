"""Logging setup: structlog to stdout; third-party loggers that echo URLs are quietened."""

from __future__ import annotations

import logging

import structlog


def configure(level: str = "INFO", json: bool = False) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(message)s")
    # httpx logs full request URLs; Aliyun puts phone numbers and key ids in the query.
    for name in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )

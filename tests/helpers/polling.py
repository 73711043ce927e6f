"""Bounded polling for conditions that only a subprocess can make true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05  # seconds between checks; only ever used inside wait_until's deadline


def wait_until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Return the first truthy ``check()`` result; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL)

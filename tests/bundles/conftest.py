"""Fixtures of the bundles tests: the dispatcher's test world (tests/test_dispatcher.py)."""

from __future__ import annotations

from tests.test_cli import cli, state_dir  # noqa: F401  (the fixtures, shared)
from tests.test_dispatcher import world  # noqa: F401

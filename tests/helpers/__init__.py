"""Helpers for the end-to-end, crash and daemon tests (scripts run as subprocesses)."""

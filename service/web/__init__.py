"""The console: pages, JSON API, personal links, calendar feeds and metrics endpoints.

Uses the domain, the store and the process wiring; nothing outside ``service/web`` and
the CLI imports it.
"""

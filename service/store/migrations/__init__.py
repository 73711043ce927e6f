"""Alembic migrations (run in-process by :func:`service.store.db.migrate`)."""

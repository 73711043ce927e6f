"""Alembic environment: always runs on a connection handed in by the service."""

from __future__ import annotations

from alembic import context

from service.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline mode is not supported
    raise RuntimeError("run migrations through `service migrate`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # lets ALTERs work on SQLite
)
with context.begin_transaction():
    context.run_migrations()

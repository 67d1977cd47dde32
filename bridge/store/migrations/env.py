"""Alembic environment: bridge always passes its own connection (see bridge.store.db.upgrade)."""

from alembic import context

from bridge.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `bridge db upgrade`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

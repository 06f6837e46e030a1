"""Alembic environment: run from code (chestx.web.db.upgrade) on the connection it passes in.

From the command line: `.venv/bin/python -m chestx.web.db upgrade` (DATABASE_URL or the
instance folder's SQLite file), or `... revision -m "what"` for a new migration.
"""

from alembic import context

from chestx.web.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through chestx.web.db (python -m chestx.web.db upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

"""The study store: SQLAlchemy 2 over SQLite (default) or PostgreSQL (``DATABASE_URL``).

``Database`` owns the engine and its sessions; ``upgrade`` applies the Alembic migrations in
chestx/web/migrations (``alembic upgrade head``) and is called at every start-up, so a new or
old database is brought up to date before the first request. A database already at the newest
revision is recognised with one query, without importing Alembic (0.2 to 0.3 s of the 3 s
start-up goal). Two processes starting at once (gunicorn workers, make run beside a test) take
a lock first: an advisory lock on PostgreSQL, a file lock beside the database file on SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from chestx.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
#: The newest migration's revision in MIGRATIONS: bump it with every new migration
#: (tests/web/test_web_studies.py checks that it is Alembic's head).
HEAD_REVISION = "0001_studies"
DEFAULT_FILE_NAME = "chestx.db"
#: pg_advisory_xact_lock key: "ChestX" in ASCII.
MIGRATION_LOCK_KEY = 0x436865737458


def normalise_url(raw: str) -> URL:
    """``postgres://`` and ``postgresql://`` (as hosting platforms write them) use psycopg 3."""
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL={raw!r} is not a database URL") from None
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"DATABASE_URL uses {url.get_backend_name()!r}: ChestX supports sqlite and postgresql"
        )
    return url


def default_url(instance_path: str | Path) -> str:
    return f"sqlite:///{Path(instance_path) / DEFAULT_FILE_NAME}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


class Database:
    """The engine and a session factory for one database URL."""

    def __init__(self, url: str | URL):
        self.url = normalise_url(url) if isinstance(url, str) else url
        self.backend = self.url.get_backend_name()
        if self.backend == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                raise ConfigError("DATABASE_URL: an in-memory SQLite database can't be shared")
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, connect_args={"timeout": 30}, pool_size=8, max_overflow=8
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        return self.sessions()

    def upgrade(self) -> None:
        """Bring the schema up to date (``alembic upgrade head``); ConfigError if unreachable."""
        try:
            if self.revisions() != [HEAD_REVISION]:
                upgrade(self.engine)
        except SQLAlchemyError as error:
            reason = str(error.orig if getattr(error, "orig", None) else error).splitlines()[0]
            raise ConfigError(f"database {self.safe_url} can't be used: {reason}") from None

    def revisions(self) -> list[str]:
        return recorded_revisions(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` with one process at a time."""
    _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo the migrations down to ``revision`` ("base": an empty database)."""
    _migrate(engine, "downgrade", revision)


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command

    if engine.dialect.name == "sqlite":
        lock = _file_lock(Path(engine.url.database).with_suffix(".migrate-lock"))
    else:
        lock = contextlib.nullcontext()
    with lock, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            lock_sql = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock_sql, {"key": MIGRATION_LOCK_KEY})
        getattr(command, direction)(alembic_config(connection), revision)


def recorded_revisions(engine: Engine) -> list[str]:
    """The revisions Alembic recorded in the database (none before the first migration), read
    with plain SQL: start-up checks them without importing Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return []
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def current_revision(engine: Engine) -> str | None:
    return ", ".join(recorded_revisions(engine)) or None

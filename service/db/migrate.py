"""Run the Alembic migrations from Python: the embedded launcher and compose's entrypoint call this.

Production paths never call ``metadata.create_all``: the schema is what the migrations make, so a
database created today and one upgraded from an old release end up the same. Concurrent callers
(an API and several workers starting together) are serialised by a lock held for the whole
upgrade: an advisory lock on PostgreSQL, the database write lock on SQLite.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import OperationalError

from service.db.engine import make_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade_database", "current_revision", "head_revision"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x41444143  # "ADAC": any constant shared by every process of this service
_SQLITE_LOCK_RETRIES = 10


def alembic_config(connection: Connection | None = None) -> Config:
    """A config pointing at this package's migrations, without an ini file (works from a wheel)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # Batch migrations rebuild a table by copy-and-drop; with foreign keys on, the DROP would
        # cascade-delete child rows. The pragma only takes effect outside a transaction, so first.
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        # Python's sqlite3 opens no transaction before DDL; take the write lock explicitly so a
        # second process waits (busy timeout) and then finds the schema already at head.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _check_foreign_keys(connection: Connection) -> None:
    """SQLite migrated with foreign keys off: refuse to commit a schema change that broke a reference."""
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration left rows with broken foreign keys: {broken[:5]}")


def upgrade_database(url: str | URL, revision: str = "head") -> str | None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest) and return where it is.

    Safe to call at every start: at head it does nothing. On a brand-new SQLite file, processes
    starting together can meet SQLite's "database is locked" outside the busy handler (switching
    the file to WAL takes an exclusive lock that is not retried), so that one error is retried a
    few times; anything else is raised at once.
    """
    for attempt in range(_SQLITE_LOCK_RETRIES + 1):
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                _lock(connection)
                command.upgrade(alembic_config(connection), revision)
                _check_foreign_keys(connection)
                connection.commit()
                return MigrationContext.configure(connection).get_current_revision()
        except OperationalError as error:
            if engine.dialect.name != "sqlite" or "locked" not in str(error) or attempt == _SQLITE_LOCK_RETRIES:
                raise
            time.sleep(0.1 * (attempt + 1))
        finally:
            engine.dispose()
    raise AssertionError("unreachable")


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at (None when empty): a readiness check compares it with head."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()

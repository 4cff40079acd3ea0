"""Engines and sessions for SQLite (embedded) and PostgreSQL (compose).

Many processes write job rows at once (the API, every worker, the reaper), so SQLite connections
are set up for that on every connect: WAL journal (readers never block the writer and the writer
never blocks readers), enforced foreign keys (off by default in SQLite) and a busy timeout (a
writer waits for the lock instead of failing at once). Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["normalize_url", "make_engine", "get_engine", "make_session_factory", "session_scope"]


def normalize_url(url: str | URL) -> URL:
    """``postgres://`` and ``postgresql://`` (what compose files and cloud hosts write) use psycopg 3,
    the driver this project installs; SQLAlchemy would otherwise look for psycopg2."""
    parsed = make_url(str(url).replace("postgres://", "postgresql://", 1)) if isinstance(url, str) else url
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str | URL, busy_timeout_ms: int = 30_000, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    The SQLite file's folder is created, so the embedded mode starts from an empty ``data_dir``.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)  # survive a restarted PostgreSQL
        return create_engine(parsed, **kwargs)

    path = _sqlite_file(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if path is not None:  # an in-memory database has no WAL
                cursor.execute("PRAGMA journal_mode = WAL")
                # NORMAL is durable across application crashes in WAL mode and spares an fsync per commit.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return engine


@lru_cache(maxsize=8)
def get_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    """One engine per URL per process, made on first use.

    A forked worker child must not reuse its parent's connections: call
    ``get_engine(url).dispose(close=False)`` in the child (Celery's ``worker_process_init``).
    """
    return make_engine(url, busy_timeout_ms=busy_timeout_ms)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the API answers with them)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | Engine) -> Iterator[Session]:
    """A session that commits when the block ends, rolls back if it raises, and always closes.

    >>> with session_scope(engine) as session:  # doctest: +SKIP
    ...     session.add(Job(kind=JobKind.TRAINING))
    """
    if isinstance(factory, Engine):
        factory = make_session_factory(factory)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

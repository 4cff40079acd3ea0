"""Alembic's entry point, for ``upgrade_database()`` and for the ``alembic`` command alike.

``upgrade_database()`` hands over an open connection (``config.attributes["connection"]``); the
command line (``alembic -c service/alembic.ini upgrade head``) gets its URL from ``-x url=...``,
``sqlalchemy.url`` in the ini file, or ``ADACS_DATABASE_URL`` through the service's settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.db.base import Base
from service.db.engine import make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.core.config import get_settings

    return str(get_settings().database_url)


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()

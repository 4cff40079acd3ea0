"""Fixtures shared by every suite that needs a real service.

``postgres_database`` makes throw-away PostgreSQL databases with random names (``adacs_test_<hex>``)
and drops them when the test session ends, so parallel or interrupted runs never collide. A
PostgreSQL that cannot be reached is a failure, never a skip: set ``ADACS_TEST_POSTGRES_URL`` to an
admin URL, or start the local one with ``bash .ci/services``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest

POSTGRES_ADMIN_ENV = "ADACS_TEST_POSTGRES_URL"
POSTGRES_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """Call it to get the URL of a fresh, empty PostgreSQL database (dropped at session end)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin = os.environ.get(POSTGRES_ADMIN_ENV, POSTGRES_ADMIN_DEFAULT)
    try:
        connection = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        problem = str(error)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the report is this message alone
        shown = make_url(admin).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL is unreachable at {shown}: {problem}\nStart it (bash .ci/services) or point "
                    f"{POSTGRES_ADMIN_ENV} at a server where this user may create databases.", pytrace=False)
    created: list[str] = []

    def create() -> str:
        name = f"adacs_test_{secrets.token_hex(6)}"
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return make_url(admin).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()

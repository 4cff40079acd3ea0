"""service/db: migrations from empty on SQLite and PostgreSQL, SQLite's connection setup, the tables."""

import threading
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from service.db import (
    ApiKey,
    Base,
    Job,
    JobKind,
    JobStatus,
    current_revision,
    head_revision,
    make_engine,
    new_id,
    normalize_url,
    session_scope,
    upgrade_database,
    utcnow,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'empty.db'}"  # the folder does not exist yet either
    return request.getfixturevalue("postgres_database")()


def test_upgrade_from_empty_matches_the_models(empty_url):
    assert current_revision(empty_url) is None
    assert upgrade_database(empty_url) == head_revision() == "0004"
    assert upgrade_database(empty_url) == "0004"  # at head: a no-op, safe at every start
    engine = make_engine(empty_url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        # Autogenerate finds nothing to do: the hand-written migration creates exactly the models' schema.
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_concurrent_upgrades_wait_for_each_other(empty_url):
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade_database(empty_url)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and current_revision(empty_url) == "0004"


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", busy_timeout_ms=1234)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    engine.dispose()


def test_postgres_urls_use_psycopg3():
    assert normalize_url("postgres://u:p@db/x").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql://u@db/x").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///a.db").drivername == "sqlite"


def test_job_round_trip(engine):
    with session_scope(engine) as session:
        key = ApiKey(key_hash="0" * 64, scopes=["train"])
        session.add(key)
        session.flush()
        job = Job(kind=JobKind.TRAINING, params={"epochs": 3}, owner_key_id=key.id)
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempts, job.cancel_requested, job.progress) == (JobStatus.QUEUED, 0, False, {})
        assert job.created_at.tzinfo == timezone.utc and utcnow() - job.created_at < timedelta(minutes=1)
        job.status, job.heartbeat_at = JobStatus.RUNNING, datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        job.progress = {"epoch": 1, "losses": {"sim": 0.5}}
    with session_scope(engine) as session:
        job = session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)).one()
        assert job.heartbeat_at == datetime(2030, 1, 1, 10, tzinfo=timezone.utc)
        assert job.progress["losses"] == {"sim": 0.5} and job.params == {"epochs": 3}
        session.delete(session.get(ApiKey, job.owner_key_id))
    with session_scope(engine) as session:
        assert session.get(Job, job_id).owner_key_id is None  # ON DELETE SET NULL


def test_database_refuses_what_the_models_forbid(engine):
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as session:
        session.add(Job(kind=JobKind.REGISTRATION, heartbeat_at=datetime(2030, 1, 1)))
    with pytest.raises(IntegrityError), engine.begin() as connection:  # CHECK constraint from the migration
        connection.execute(text("INSERT INTO jobs (id, kind, status, params, progress, created_at) "
                                "VALUES ('x', 'training', 'exploded', '{}', '{}', '2030-01-01')"))
    with pytest.raises(IntegrityError), session_scope(engine) as session:  # foreign keys are enforced
        session.add(Job(kind=JobKind.REGISTRATION, owner_key_id="no-such-key"))


def test_sqlite_takes_writers_from_many_processes(tmp_path):
    """Separate engines (as separate processes have) write job rows at once: the busy timeout queues them."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade_database(url)
    engines = [make_engine(url) for _ in range(4)]
    ids = [new_id() for _ in engines]
    with session_scope(engines[0]) as session:
        session.add_all(Job(id=job_id, kind=JobKind.TRAINING) for job_id in ids)
    errors: list[BaseException] = []

    def beat(engine, job_id) -> None:
        try:
            for step in range(15):
                with session_scope(engine) as session:
                    job = session.get(Job, job_id)
                    job.progress, job.heartbeat_at = {"step": step}, utcnow()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=beat, args=pair) for pair in zip(engines, ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_scope(engines[0]) as session:
        steps = [session.get(Job, job_id).progress["step"] for job_id in ids]
    for engine in engines:
        engine.dispose()
    assert errors == [] and steps == [14] * 4

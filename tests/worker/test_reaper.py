"""worker/reaper.py on both backends: stale running jobs go back to their queue, and only those."""

from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db import Job, JobStatus, session_scope, utcnow
from worker.reaper import reap_stale_jobs


@pytest.fixture
def engine(settings):
    from service.db import get_engine

    return get_engine(settings.database_url, settings.db_busy_timeout_ms)


def running(engine, job_id, silent_s: float, attempts: int = 1) -> None:
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.RUNNING, attempts=attempts, heartbeat_at=utcnow() - timedelta(seconds=silent_s),
            progress={"phase": "alternating", "epoch": 3}))


def test_only_silent_running_jobs_are_requeued_and_sent(settings, engine, create_job, load_job):
    stale, fresh, queued = create_job(settings), create_job(settings), create_job(settings)
    running(engine, stale, silent_s=60)
    running(engine, fresh, silent_s=1)
    sent = []
    assert reap_stale_jobs(engine, lambda kind, job_id: sent.append((kind, job_id)), stale_s=30) == [stale]
    assert sent == [("registration", stale)]
    job = load_job(settings, stale)
    assert job.status == JobStatus.QUEUED and job.attempts == 1 and job.worker is None
    assert job.progress == {"phase": "requeued", "epoch": 3, "requeued_after_attempt": 1}
    assert load_job(settings, fresh).status == JobStatus.RUNNING
    assert load_job(settings, queued).status == JobStatus.QUEUED
    assert reap_stale_jobs(engine, lambda kind, job_id: sent.append(job_id), stale_s=30) == []  # done once


def test_a_failed_send_puts_the_job_back_for_the_next_round(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    running(engine, job_id, silent_s=60, attempts=2)

    def broker_down(kind, job_id):
        raise ConnectionError("broker unreachable")

    assert reap_stale_jobs(engine, broker_down, stale_s=30) == []
    job = load_job(settings, job_id)
    assert job.status == JobStatus.RUNNING and job.attempts == 2 and job.progress["phase"] == "alternating"
    assert reap_stale_jobs(engine, lambda kind, job_id: None, stale_s=30) == [job_id]


def test_a_requeued_job_is_claimed_as_a_new_attempt(settings, engine, create_job, load_job):
    from service.db import JobKind
    from worker.jobs import claim_job

    job_id = create_job(settings)
    running(engine, job_id, silent_s=60)
    reap_stale_jobs(engine, lambda kind, job_id: None, stale_s=30)
    claim = claim_job(engine, job_id, JobKind.REGISTRATION, max_attempts=3)
    assert claim is not None and claim.attempt == 2 and load_job(settings, job_id).status == JobStatus.RUNNING

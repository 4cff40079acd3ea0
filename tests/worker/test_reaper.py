"""worker/reaper.py on both backends: stale running jobs go back to their queue, and only those; jobs
queued too long are sent again, once per ``queued_resend_s``, and a copy runs only a job still queued."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from service.db import Job, JobKind, JobStatus, session_scope, utcnow
from worker.jobs import claim_job
from worker.reaper import reap_stale_jobs, resend_queued_jobs


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
    sent_at = job.progress.pop("sent_at")  # so that resend_queued_jobs waits before sending another copy
    assert job.progress == {"phase": "requeued", "epoch": 3, "requeued_after_attempt": 1}
    assert abs(datetime.fromisoformat(sent_at) - utcnow()) < timedelta(seconds=30)
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


# -- queued jobs whose message was lost -------------------------------------------------------------

def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def test_a_job_queued_too_long_is_sent_again_once_per_period(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    sent = []

    def send(kind, job_id):
        sent.append((kind, job_id))

    assert resend_queued_jobs(engine, send, resend_s=60) == []  # just created: its first message may be queued
    assert resend_queued_jobs(engine, send, resend_s=60, now=later(61)) == [job_id]
    assert sent == [("registration", job_id)]
    job = load_job(settings, job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.progress["resent"] == 1
    assert resend_queued_jobs(engine, send, resend_s=60, now=later(90)) == []  # 29 s after the copy
    assert resend_queued_jobs(engine, send, resend_s=60, now=later(122)) == [job_id]
    assert load_job(settings, job_id).progress["resent"] == 2 and len(sent) == 2


def test_only_queued_jobs_are_sent_again(settings, engine, create_job, load_job):
    queued, running, finished = create_job(settings), create_job(settings), create_job(settings)
    with session_scope(engine) as session:
        session.get(Job, running).status = JobStatus.RUNNING
        session.get(Job, finished).status = JobStatus.SUCCEEDED
    sent = []
    assert resend_queued_jobs(engine, lambda kind, job_id: sent.append(job_id), resend_s=1, now=later(5)) == [queued]
    assert sent == [queued]
    assert load_job(settings, running).progress == {} and load_job(settings, finished).progress == {}


def test_a_failed_resend_is_tried_again_next_round(settings, engine, create_job, load_job):
    job_id = create_job(settings)

    def broker_down(kind, job_id):
        raise ConnectionError("broker unreachable")

    assert resend_queued_jobs(engine, broker_down, resend_s=1, now=later(5)) == []
    assert load_job(settings, job_id).progress == {}
    assert resend_queued_jobs(engine, lambda kind, job_id: None, resend_s=1, now=later(6)) == [job_id]


def test_a_requeued_job_is_not_sent_twice_in_one_round(settings, engine, create_job):
    job_id = create_job(settings)
    with session_scope(engine) as session:  # created long ago, then its worker went silent
        session.get(Job, job_id).created_at = utcnow() - timedelta(hours=1)
    running(engine, job_id, silent_s=60)
    sent = []
    assert reap_stale_jobs(engine, lambda kind, job_id: sent.append(job_id), stale_s=30) == [job_id]
    assert resend_queued_jobs(engine, lambda kind, job_id: sent.append(job_id), resend_s=600) == []
    assert sent == [job_id]


def test_a_copy_from_the_reaper_claims_only_a_queued_job(settings, engine, create_job):
    job_id = create_job(settings)
    with session_scope(engine) as session:
        session.get(Job, job_id).status = JobStatus.RUNNING  # a live attempt holds it
    assert claim_job(engine, job_id, JobKind.REGISTRATION, 3, only_if_queued=True) is None  # would overtake it
    assert load(engine, job_id) == (JobStatus.RUNNING, 0)
    with session_scope(engine) as session:
        session.get(Job, job_id).status = JobStatus.QUEUED
    claim = claim_job(engine, job_id, JobKind.REGISTRATION, 3, only_if_queued=True)
    assert claim is not None and claim.attempt == 1
    assert claim_job(engine, job_id, JobKind.REGISTRATION, 3, only_if_queued=True) is None  # a second copy: no
    assert claim_job(engine, "gone", JobKind.REGISTRATION, 3, only_if_queued=True) is None


def load(engine, job_id: str) -> tuple[JobStatus, int]:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        return job.status, job.attempts


def test_the_reapers_copies_go_through_the_apis_sender_marked_only_if_queued(tmp_path, monkeypatch):
    import worker.reaper
    from service.core.config import Settings
    from service.jobs.tasks import REGISTRATION_TASK, TRAINING_TASK

    calls = []

    class App:
        def send_task(self, name, **options):
            calls.append((name, options))

    monkeypatch.setattr(worker.reaper, "app", App())
    send = worker.reaper._sender(Settings(data_dir=tmp_path, inference_queue="inf-1", training_queue="train-1"))
    send("registration", "r")
    send("training", "t")
    assert calls == [(REGISTRATION_TASK, {"args": ["r"], "kwargs": {"only_if_queued": True}, "queue": "inf-1"}),
                     (TRAINING_TASK, {"args": ["t"], "kwargs": {"only_if_queued": True}, "queue": "train-1"})]

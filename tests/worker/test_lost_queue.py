"""Fault: the broker loses its data (a Redis without persistence restarted) while jobs wait in it.

Registrations are queued the way the API queues them (rows, files, one message each) on real Redis
with no worker running; then the queue's keys are deleted, as a restart without persistence would
drop them. A real worker with Celery beat (the reaper, ``queued_resend_s`` short) must still run
every job, once each. Runs on SQLite and PostgreSQL; the queue and its keys are this test's own
(a random name in the tests' Redis database), so other runs sharing that Redis are untouched.
"""

from __future__ import annotations

import secrets
import time

import pytest

from service.core.config import Settings
from service.db import JobStatus
from service.jobs.tasks import TaskSender

N_JOBS = 3
TIMEOUT_S = 90


def _drop_keys(client, token: str) -> int:
    """Delete every key of this test's queues (the list, kombu's bindings): the broker's data, lost."""
    keys = list(client.scan_iter(match=f"*{token}*"))
    return client.delete(*keys) if keys else 0


def test_jobs_whose_messages_were_lost_are_sent_again_and_run_once(redis_url, db_url, register_model, create_job,
                                                                   load_job, worker_process, tmp_path):
    import redis

    token = secrets.token_hex(6)
    queue = f"inference-lost-{token}"
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=redis_url,
                        inference_queue=queue, training_queue=f"training-lost-{token}")
    client, worker = redis.Redis.from_url(redis_url), None
    try:
        register_model(settings)
        jobs = [create_job(settings) for _ in range(N_JOBS)]
        sender = TaskSender(settings)  # what the API does once a row is committed
        for job_id in jobs:
            sender.send("registration", job_id)
        sender.close()
        assert client.llen(queue) == N_JOBS
        assert _drop_keys(client, token) >= 1 and client.llen(queue) == 0  # the restart: nothing left to deliver

        env = {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": db_url,
               "ADACS_ARTIFACT_DIR": str(settings.artifact_dir), "ADACS_BROKER_URL": redis_url,
               "ADACS_INFERENCE_QUEUE": queue, "ADACS_TRAINING_QUEUE": settings.training_queue,
               "ADACS_HEARTBEAT_INTERVAL_S": "0.5", "ADACS_REAPER_INTERVAL_S": "1", "ADACS_QUEUED_RESEND_S": "2"}
        worker = worker_process(env, [queue], tmp_path / "worker.log", beat=True)
        deadline = time.monotonic() + TIMEOUT_S
        while not all(load_job(settings, job_id).status.finished for job_id in jobs):
            if not worker.alive() or time.monotonic() > deadline:
                states = {job_id: load_job(settings, job_id).status.value for job_id in jobs}
                pytest.fail(f"jobs {states}; worker log:\n{worker.tail()}", pytrace=False)
            time.sleep(0.2)
        time.sleep(3)  # a few more reaper rounds: any further copy must find nothing to do
        for job_id in jobs:
            job = load_job(settings, job_id)
            assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{worker.tail()}"
            assert job.attempts == 1, worker.tail()  # run exactly once, whatever copies were sent
            assert set(job.result["outputs"]) >= {"displacement", "warped", "warped_mask"}
        log = worker.tail(10**7)
        assert "its task was sent again" in log, log[-4000:]
    finally:
        if worker is not None:
            worker.stop()  # before the cleanup: its beat would send to the queue again
        _drop_keys(client, token)
        client.close()

"""A real Celery worker process runs a registration sent by name: on real Redis, and on the embedded
filesystem broker. Each run uses its own queue (and Redis keys), SQLite file and artifact folder; the
worker is tests/conftest.py's ``WorkerProcess``, as in every suite that starts one.

Redis must be reachable (``ADACS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``): a
missing Redis fails these tests, it never skips them. Start it with ``bash .ci/services``.
"""

import secrets
import time

import pytest

from service.core.config import Settings
from service.db import JobStatus
from service.jobs.tasks import REGISTRATION_TASK
from worker.celery_app import create_app

TIMEOUT_S = 60


def worker_env(settings: Settings) -> dict[str, str]:
    """The worker is configured only through ``ADACS_*`` variables, as in compose."""
    return {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": settings.database_url,
            "ADACS_ARTIFACT_DIR": str(settings.artifact_dir), "ADACS_BROKER_URL": settings.broker_url,
            "ADACS_HEARTBEAT_INTERVAL_S": "0.5"}


def wait_until_finished(settings: Settings, job_id: str, load_job, worker):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and worker.alive():
        job = load_job(settings, job_id)
        if job.status.finished:
            return job
        time.sleep(0.2)
    state = f"still {job.status.value} after {TIMEOUT_S} s" if worker.alive() else "exited"
    pytest.fail(f"worker {state}; its log:\n{worker.tail()}", pytrace=False)


def register_through_a_worker(settings, queue, register_model, create_job, load_job, worker_process, tmp_path):
    register_model(settings)
    job_id = create_job(settings)
    worker = worker_process(worker_env(settings), [queue], tmp_path / "worker.log")
    with create_app(settings) as producer:  # what the API does: by name, ids only
        producer.send_task(REGISTRATION_TASK, args=[job_id], queue=queue)
    job = wait_until_finished(settings, job_id, load_job, worker)
    worker.stop()  # warm shutdown, what docker stop sends: its log is complete now
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{worker.tail()}"
    assert job.attempts == 1 and set(job.result["outputs"]) >= {"displacement", "warped", "warped_mask"}
    assert "adacs.registration.run" in worker.tail(10**9)  # the worker knew the task by its name
    return job


def test_a_worker_on_redis_runs_a_registration(redis_url, sqlite_url, register_model, create_job, load_job,
                                               worker_process, tmp_path):
    import redis

    queue = f"inference-test-{secrets.token_hex(6)}"
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, broker_url=redis_url)
    try:
        register_through_a_worker(settings, queue, register_model, create_job, load_job, worker_process, tmp_path)
    finally:
        redis.Redis.from_url(redis_url).delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def test_a_worker_on_the_filesystem_broker_runs_a_registration(sqlite_url, register_model, create_job, load_job,
                                                               worker_process, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url)  # the embedded default
    assert settings.broker_url == "filesystem://"
    queue = f"inference-test-{secrets.token_hex(6)}"
    register_through_a_worker(settings, queue, register_model, create_job, load_job, worker_process, tmp_path)
    assert list((settings.broker_dir / "queue").iterdir()) == []  # consumed, and nothing kept

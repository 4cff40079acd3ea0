"""A real Celery worker process runs a registration sent by name: on real Redis, and on the embedded
filesystem broker. Each run uses its own queue (and Redis keys), SQLite file and artifact folder.

Redis must be reachable (``ADACS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``): a
missing Redis fails these tests, it never skips them. Start it with ``bash .ci/services``.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.core.config import Settings
from service.db import JobStatus
from worker.celery_app import REGISTRATION_TASK, create_app

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def tail(log, chars: int = 4000) -> str:
    """The end of a worker log (UTF-8 whatever the locale: native libraries may reset it)."""
    return log.read_text(encoding="utf-8", errors="replace")[-chars:]




def start_worker(settings: Settings, queue: str, log: Path) -> subprocess.Popen:
    """``celery worker`` on ``queue`` alone, configured only through ``ADACS_*`` variables, as in compose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")} | {
        "ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": settings.database_url,
        "ADACS_ARTIFACT_DIR": str(settings.artifact_dir), "ADACS_BROKER_URL": settings.broker_url,
        "ADACS_HEARTBEAT_INTERVAL_S": "0.5"}
    command = [sys.executable, "-m", "celery", "--app", "worker.celery_app:app", "worker", "--queues", queue,
               "--pool", "solo", "--concurrency", "1", "--hostname", f"{queue}@%h", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log, "wb") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: what docker stop sends
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_until_finished(settings: Settings, job_id: str, load_job, worker: subprocess.Popen, log: Path):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and worker.poll() is None:
        job = load_job(settings, job_id)
        if job.status.finished:
            return job
        time.sleep(0.2)
    state = "exited" if worker.poll() is not None else f"still {job.status.value} after {TIMEOUT_S} s"
    pytest.fail(f"worker {state}; its log:\n{tail(log)}", pytrace=False)


def register_through_a_worker(settings, queue, register_model, create_job, load_job, tmp_path):
    register_model(settings)
    job_id = create_job(settings)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, queue, log)
    try:
        with create_app(settings) as producer:  # what the API does: by name, ids only
            producer.send_task(REGISTRATION_TASK, args=[job_id], queue=queue)
        job = wait_until_finished(settings, job_id, load_job, worker, log)
    finally:
        stop_worker(worker)
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{tail(log)}"
    assert job.attempts == 1 and set(job.result["outputs"]) >= {"displacement", "warped", "warped_mask"}
    assert "adacs.registration.run" in tail(log, 10**9)  # the worker knew the task by its name
    return job


def test_a_worker_on_redis_runs_a_registration(redis_url, sqlite_url, register_model, create_job, load_job,
                                               tmp_path):
    import redis

    queue = f"inference-test-{secrets.token_hex(6)}"
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, broker_url=redis_url)
    try:
        register_through_a_worker(settings, queue, register_model, create_job, load_job, tmp_path)
    finally:
        redis.Redis.from_url(redis_url).delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def test_a_worker_on_the_filesystem_broker_runs_a_registration(sqlite_url, register_model, create_job, load_job,
                                                               tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url)  # the embedded default
    assert settings.broker_url == "filesystem://"
    queue = f"inference-test-{secrets.token_hex(6)}"
    register_through_a_worker(settings, queue, register_model, create_job, load_job, tmp_path)
    assert list((settings.broker_dir / "queue").iterdir()) == []  # consumed, and nothing kept

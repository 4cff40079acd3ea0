"""/readyz knows whether anyone will run the jobs: each queue needs a live worker, over real HTTP with
real Celery worker processes, on the embedded filesystem broker and on Redis.

A worker counts when it answers Celery's broadcast with the queues it consumes, or when it is busy
with a running job whose heartbeat is fresh (a ``--pool solo`` worker cannot answer mid-task).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from service.db import Job, JobKind, JobStatus, make_engine, session_scope, utcnow

WORKER_START_S = 90  # a Celery worker on a loaded 2-core machine takes a few seconds to start consuming


def _worker_env(server: object) -> dict[str, str]:
    """The environment that makes a worker share the server's database, broker and data folder."""
    settings = server.settings
    return {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": settings.database_url,
            "ADACS_BROKER_URL": settings.broker_url, "ADACS_INFERENCE_QUEUE": settings.inference_queue,
            "ADACS_TRAINING_QUEUE": settings.training_queue}


def _readyz(server: object) -> tuple[int, dict]:
    response = server.client.get("/readyz")
    return response.status_code, response.json()


def _wait_for(server: object, predicate: Callable[[int, dict], bool], worker: object, timeout_s: float) -> dict:
    """Poll /readyz until ``predicate(status, body)`` holds; fail with the worker's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = _readyz(server)
        if predicate(status, body):
            return body
        assert worker.alive(), f"the worker exited:\n{worker.tail()}"
        assert time.monotonic() < deadline, f"/readyz still answers {status} {body}:\n{worker.tail()}"
        time.sleep(0.5)


def _workers_check(body: dict) -> dict:
    return body["checks"]["workers"]


@pytest.fixture
def unique_queues() -> dict[str, str]:
    """Queue names no other test's worker consumes (Redis is shared by the whole suite)."""
    token = secrets.token_hex(4)
    return {"inference_queue": f"ready-inference-{token}", "training_queue": f"ready-training-{token}"}


def test_no_worker_is_503_naming_each_queue(serve, unique_queues):
    server = serve(**unique_queues)
    status, body = _readyz(server)
    assert status == 503 and body["ready"] is False
    assert all(body["checks"][name]["ok"] for name in ("database", "broker", "artifact_store")), body
    detail = _workers_check(body)["detail"]
    assert not _workers_check(body)["ok"]
    assert f"no live worker consumes queue '{unique_queues['inference_queue']}' and " \
           f"'{unique_queues['training_queue']}'" in detail, detail


def test_each_queue_needs_its_own_worker_on_the_filesystem_broker(serve, unique_queues, worker_process, tmp_path,
                                                                  api_db_url):
    server = serve(**unique_queues)
    inference, training = unique_queues["inference_queue"], unique_queues["training_queue"]
    first = worker_process(_worker_env(server), [inference], tmp_path / "inference.log")
    only_training = f"no live worker consumes queue '{training}' ("
    body = _wait_for(server, lambda status, body: only_training in _workers_check(body)["detail"], first,
                     WORKER_START_S)
    assert body["ready"] is False and not _workers_check(body)["ok"]

    # A worker busy with a training (solo pool: it cannot answer) keeps the training queue live,
    # for as long as the job's heartbeat is fresh.
    engine = make_engine(api_db_url)
    try:
        with session_scope(engine) as session:
            job = Job(kind=JobKind.TRAINING, status=JobStatus.RUNNING, heartbeat_at=utcnow())
            session.add(job)
            session.flush()
            job_id = job.id
        status, body = _readyz(server)
        assert status == 200, body
        assert f"'{training}': 1 running job(s)" in _workers_check(body)["detail"]
        with session_scope(engine) as session:
            session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=server.settings.heartbeat_stale_s + 1)
        assert _readyz(server)[0] == 503
        with session_scope(engine) as session:
            session.delete(session.get(Job, job_id))
    finally:
        engine.dispose()

    second = worker_process(_worker_env(server), [training], tmp_path / "training.log")
    body = _wait_for(server, lambda status, body: status == 200, second, WORKER_START_S)
    detail = _workers_check(body)["detail"]
    assert detail.startswith(f"'{inference}': {inference}-") and f"; '{training}': {training}-" in detail, detail


def test_a_redis_worker_makes_it_ready_and_its_death_does_not(serve, unique_queues, worker_process, tmp_path,
                                                              redis_url):
    server = serve(broker_url=redis_url, **unique_queues)
    queues = list(unique_queues.values())
    worker = worker_process(_worker_env(server), queues, tmp_path / "worker.log")
    body = _wait_for(server, lambda status, body: status == 200, worker, WORKER_START_S)
    assert body["checks"]["broker"]["ok"] and "answered" in body["checks"]["broker"]["detail"]
    worker.kill()  # SIGKILL: no goodbye; the next broadcast simply gets no answer
    status, body = _readyz(server)
    assert status == 503 and "no live worker consumes queue" in _workers_check(body)["detail"], body

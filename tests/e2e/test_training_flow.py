"""End to end: train over the API with a real Celery worker process on real Redis, on SQLite and PostgreSQL.

Upload a dataset, queue a short AdaCS training, follow it over server-sent events, find the model in
the registry with its card, promote it and register a pair with it; cancel a second training mid-run;
SIGKILL a worker in the middle of a third and watch a new worker (with Celery beat running the reaper)
resume it from its checkpoint and finish it. Each run has its own queues, database and data folder.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from service.client import AdacsClient
from service.core.config import Settings
from service.db import upgrade_database
from service.main import create_app

TIMEOUT_S = 300  # generous: a loaded CI machine (2 cores) trains the 240 updates below in ~2 min
TINY = {"warmup_epochs": 1, "epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "crop": None}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, redis_url, live_server, dataset_zip, tmp_path_factory) -> Iterator:
    """The API on a database and queues of its own, a dataset uploaded; workers are started by each test."""
    import redis

    data = tmp_path_factory.mktemp(f"train-{request.param}")
    url = (f"sqlite:///{data / 'adacs.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_database")())
    upgrade_database(url)
    token = secrets.token_hex(6)
    queues = {"ADACS_INFERENCE_QUEUE": f"inference-{token}", "ADACS_TRAINING_QUEUE": f"training-{token}"}
    settings = Settings(data_dir=data / "data", database_url=url, broker_url=redis_url,
                        inference_queue=queues["ADACS_INFERENCE_QUEUE"], training_queue=queues["ADACS_TRAINING_QUEUE"])
    # One torch thread per worker: on shared, loaded cores a second one spins against the other processes
    # (measured 7x slower with two on a loaded 2-core machine: the 240 updates below outran TIMEOUT_S).
    env = queues | {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": url,
                    "ADACS_BROKER_URL": redis_url, "ADACS_ARTIFACT_DIR": str(settings.artifact_dir),
                    "ADACS_HEARTBEAT_INTERVAL_S": "0.5", "ADACS_PROGRESS_MIN_INTERVAL_S": "0.2",
                    "ADACS_HEARTBEAT_STALE_S": "4", "ADACS_REAPER_INTERVAL_S": "1", "ADACS_WORKER_TORCH_THREADS": "1"}
    try:
        with live_server(create_app(settings), settings, timeout=60) as server:
            response = server.client.post("/v1/datasets", files={"file": ("study.zip", dataset_zip)})
            assert response.status_code == 201, response.text
            server.dataset_id, server.env, server.queues = response.json()["id"], env, list(queues.values())
            server.api = AdacsClient(server.url)
            yield server
            server.api.close()
    finally:
        keys = [k for q in queues.values() for k in (q, f"_kombu.binding.{q}", f"_kombu.binding_permanent.{q}")]
        redis.Redis.from_url(redis_url).delete(*keys)


def _job(stack, model_name: str, **hyperparameters) -> dict:
    return stack.api.train(stack.dataset_id, model_name, method=hyperparameters.pop("method", "adacs"),
                           hyperparameters=TINY | hyperparameters)


def _until(stack, worker, job_id: str, done, what: str) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        job = stack.api.get_training_job(job_id)
        if done(job):
            return job
        if worker is not None and not worker.alive():
            pytest.fail(f"the worker exited; its log:\n{worker.tail()}", pytrace=False)
        time.sleep(0.1)
    pytest.fail(f"{what}: still {job['status']} {job['progress']} after {TIMEOUT_S} s; worker log:\n"
                f"{worker.tail() if worker else ''}", pytrace=False)


def test_train_watch_promote_and_register(stack, worker_process, image_pair, tmp_path) -> None:
    worker = worker_process(stack.env, stack.queues, tmp_path / "worker.log")
    job = _job(stack, "trained")
    events = list(stack.api.training_events(job["id"]))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}, kinds
    final = events[-1][1]
    assert final["status"] == "succeeded", f"{final['error']}\n{worker.tail()}"
    # How many running snapshots the stream catches depends on the machine's speed (it polls every
    # 0.5 s); every one must be a known phase, and the last progress keeps the training's values.
    phases = {body["progress"].get("phase") for kind, body in events if body["status"] == "running"}
    assert phases <= {"starting", "loading_data", "warmup-displacement", "warmup-scoring", "alternating",
                      "registering_model"}, phases
    last = final["progress"]
    assert last["global_step"] == last["total_steps"] == 9 and last["epoch"] == last["epochs"] == 3
    assert all(k in last for k in ("m_t", "losses", "eta_s", "val_dice")) and "scs" in last["losses"]

    assert final["model_version"] == "trained:1" and final["result"]["validation"]["val_dice"] >= 0
    assert final["progress"]["phase"] == "succeeded" and final["progress"]["global_step"] == 9  # last values kept
    assert final["result"]["data"]["n_train_pairs"] + final["result"]["data"]["n_val_pairs"] == 8
    model = stack.api.get_model("trained")
    card = model["versions"][0]["card"]
    assert card["method"] == "adacs" and card["data"]["dataset_id"] == stack.dataset_id
    assert model["versions"][0]["source_job_id"] == job["id"]
    stack.api.promote("trained", 1, "production")

    registration = stack.api.register(image_pair["fixed"], image_pair["moving"],
                                      moving_mask=image_pair["moving_mask"], model="trained")
    registration = stack.api.wait_registration(registration["id"], timeout=TIMEOUT_S)
    assert registration["status"] == "succeeded", registration["error"]
    assert registration["model_version"] == "trained:1"


def test_cancel_a_running_training(stack, worker_process, tmp_path) -> None:
    worker = worker_process(stack.env, stack.queues, tmp_path / "worker.log")
    job = _job(stack, "never", method="none", warmup_epochs=0, epochs=10_000, steps_per_epoch=5)
    _until(stack, worker, job["id"], lambda j: j["progress"].get("global_step", 0) >= 3, "start")
    assert stack.api.cancel_training_job(job["id"])["cancel_requested"]
    # No clock: not stopped, the 50,000 updates would end `succeeded` or outlast TIMEOUT_S; both fail here.
    final = _until(stack, worker, job["id"], lambda j: j["status"] != "running", "cancel")
    assert final["status"] == "cancelled", f"{final['error']}\n{worker.tail()}"
    assert final["model_version"] is None
    assert stack.client.get("/v1/models/never").status_code == 404
    assert worker.alive()  # the worker took the next job's place, it did not die


def test_a_sigkilled_worker_loses_no_training(stack, worker_process, tmp_path) -> None:
    first = worker_process(stack.env, stack.queues, tmp_path / "first.log")
    job = _job(stack, "survivor", method="none", warmup_epochs=0, epochs=40, steps_per_epoch=6)
    running = _until(stack, first, job["id"], lambda j: j["progress"].get("epoch", 0) >= 3, "reach epoch 3")
    first.kill()
    assert stack.api.get_training_job(job["id"])["status"] == "running"  # nobody told the database

    second = worker_process(stack.env, stack.queues, tmp_path / "second.log", beat=True)
    final = _until(stack, second, job["id"], lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
                   "resume")
    assert final["status"] == "succeeded", f"{final['error']}\n{second.tail()}"
    result = final["result"]
    assert final["attempts"] == 2 and result["attempt"] == 2
    # It went on from a checkpoint at or after the epoch seen running, not from scratch.
    assert running["progress"]["epoch"] - 1 <= result["resumed_from_epoch"] < 40, result["resumed_from_epoch"]
    assert result["epochs_run"] == 40 and final["model_version"] == "survivor:1"
    history = json.loads((stack.settings.artifact_dir / "jobs" / job["id"] / "train" / "history.json")
                         .read_text(encoding="utf-8"))
    assert [e["epoch"] for e in history["epochs"]] == list(range(40))  # every epoch once: nothing lost or redone
    assert "re-queued" in second.tail(100_000)

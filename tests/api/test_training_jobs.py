"""Training jobs over real HTTP, without a worker: validation, queueing, listing, cancelling, events."""

from __future__ import annotations

import json

import pytest

from service.catalog import ARCHITECTURE_NAMES, METHOD_NAMES

TINY = {"epochs": 1, "warmup_epochs": 0, "steps_per_epoch": 2, "batch_size": 2}


@pytest.fixture(scope="module")
def server(serve):
    return serve()


@pytest.fixture(scope="module")
def dataset_id(server, dataset_zip: bytes) -> str:
    response = server.client.post("/v1/datasets", files={"file": ("study.zip", dataset_zip)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _create(server, dataset: str, **overrides):
    body = {"dataset_id": dataset, "model_name": "trained", "hyperparameters": TINY} | overrides
    return server.client.post("/v1/training-jobs", json=body)


def test_create_read_list(server, dataset_id: str) -> None:
    response = _create(server, dataset_id, method="none")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == job["url"] and job["status"] == "queued"
    assert job["architecture"] == "voxelmorph" and job["method"] == "none" and job["model_version"] is None
    assert job["hyperparameters"]["steps_per_epoch"] == 2 and job["hyperparameters"]["lr"] == 1e-4
    assert job["events_url"] == job["url"] + "/events"
    assert server.client.get(job["url"]).json()["id"] == job["id"]
    assert job["id"] in [j["id"] for j in server.client.get("/v1/training-jobs").json()["data"]]


@pytest.mark.parametrize(("overrides", "status", "code"), [
    ({"architecture": "resnet"}, 422, "invalid_architecture"),
    ({"method": "magic"}, 422, "invalid_method"),
    ({"model_name": "no spaces allowed"}, 422, "invalid_model_name"),
    ({"hyperparameters": {"lr": -1}}, 422, None),
    ({"hyperparameters": {"learning_rate": 0.1}}, 422, None),
    ({"hyperparameters": {"batch_size": 6, "micro_batch_size": 4}}, 422, "invalid_hyperparameters"),
    ({"dataset_id": "00000000-0000-0000-0000-000000000000"}, 404, "not_found"),
])
def test_bad_requests_are_refused(server, dataset_id: str, overrides: dict, status: int, code: str | None) -> None:
    before = server.client.get("/v1/training-jobs").json()["count"]
    response = _create(server, dataset_id, **overrides)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    assert server.client.get("/v1/training-jobs").json()["count"] == before


def test_names_offered_are_listed_in_errors(server, dataset_id: str) -> None:
    detail = _create(server, dataset_id, method="magic").json()["detail"]
    assert all(name in detail for name in METHOD_NAMES)
    detail = _create(server, dataset_id, architecture="resnet").json()["detail"]
    assert all(name in detail for name in ARCHITECTURE_NAMES)


def test_cancel_a_queued_job_and_its_event_stream_ends(server, dataset_id: str) -> None:
    job = _create(server, dataset_id).json()
    response = server.client.post(job["url"] + "/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested"] is True
    assert server.client.post(job["url"] + "/cancel").json()["code"] == "job_finished"
    with server.client.stream("GET", job["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    event, data = text.strip().split("\n", 1)
    assert event == "event: end" and json.loads(data.removeprefix("data: "))["status"] == "cancelled"


def test_a_dataset_in_use_cannot_be_deleted(server, dataset_zip: bytes) -> None:
    dataset = server.client.post("/v1/datasets", files={"file": ("s.zip", dataset_zip)}).json()
    job = _create(server, dataset["id"]).json()
    response = server.client.delete(dataset["url"])
    assert response.status_code == 409 and job["id"] in response.json()["detail"]
    server.client.post(job["url"] + "/cancel")
    assert server.client.delete(dataset["url"]).status_code == 204


def test_unknown_job_is_404(server) -> None:
    for path in ("", "/events"):
        response = server.client.get(f"/v1/training-jobs/00000000-0000-0000-0000-000000000000{path}")
        assert response.status_code == 404 and response.json()["code"] == "not_found"

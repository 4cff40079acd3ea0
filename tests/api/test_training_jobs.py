"""Training jobs over real HTTP, without a worker: validation, queueing, listing, cancelling, events."""

from __future__ import annotations

import json

import pytest

from models.defaults import TRAIN_DEFAULTS
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
    assert job["architecture"] == TRAIN_DEFAULTS.arch == "pyramid" and job["method"] == "none"
    assert job["model_version"] is None
    assert job["hyperparameters"]["steps_per_epoch"] == 2 and job["hyperparameters"]["lr"] == TRAIN_DEFAULTS.lr
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
    ({"hyperparameters": {"supervision": "masks"}}, 422, None),
    ({"hyperparameters": {"supervision": "labels", "label_weight": -1}}, 422, None),
    ({"hyperparameters": {"supervision": "labels", "label_weight": 0}}, 422, None),
    ({"hyperparameters": {"supervision": "labels", "labels": [0, 2]}}, 422, None),
    ({"hyperparameters": {"supervision": "labels", "labels": [2, 2]}}, 422, None),
    ({"hyperparameters": {"supervision": "labels", "labels": []}}, 422, None),
    ({"hyperparameters": {"labels": [2]}}, 422, None),
    ({"dataset_id": "00000000-0000-0000-0000-000000000000"}, 404, "not_found"),
    ({"devices": 0}, 422, "invalid_request"),
    ({"devices": 3}, 422, "invalid_devices"),  # TINY's batch_size 2 cannot be shared by 3 processes
])
def test_bad_requests_are_refused(server, dataset_id: str, overrides: dict, status: int, code: str | None) -> None:
    before = server.client.get("/v1/training-jobs").json()["count"]
    response = _create(server, dataset_id, **overrides)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    assert server.client.get("/v1/training-jobs").json()["count"] == before


def test_devices_are_one_machine_s_gpus(server, dataset_id: str) -> None:
    response = _create(server, dataset_id, devices=9)
    assert response.status_code == 422 and "devices: Input should be less than or equal to 8" in \
        response.json()["detail"]
    job = _create(server, dataset_id, devices=2).json()
    assert job["devices"] == 2 and server.client.get(job["url"]).json()["devices"] == 2
    server.client.post(job["url"] + "/cancel")


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


def test_defaults_are_the_trainers(server, dataset_id: str) -> None:
    """A job that sets nothing trains with models/defaults.py's values, spelled out in its row."""
    job = server.client.post("/v1/training-jobs", json={"dataset_id": dataset_id, "model_name": "defaults"}).json()
    hp = job["hyperparameters"]
    assert (hp["epochs"], hp["warmup_epochs"], hp["steps_per_epoch"], hp["lr"], hp["scoring_lr"]) == \
        (TRAIN_DEFAULTS.epochs, TRAIN_DEFAULTS.warmup_epochs, TRAIN_DEFAULTS.steps_per_epoch, TRAIN_DEFAULTS.lr,
         TRAIN_DEFAULTS.scoring_lr)
    assert (hp["supervision"], hp["label_weight"], hp["labels"]) == ("none", TRAIN_DEFAULTS.label_weight, None)
    server.client.post(job["url"] + "/cancel")


@pytest.mark.parametrize(("hyperparameters", "field", "words"), [
    ({"supervision": "labels", "label_weight": -1}, "label_weight", "greater than 0"),
    ({"supervision": "labels", "labels": [0, 2]}, "labels", "integers >= 1"),
    ({"supervision": "masks"}, "supervision", "unknown supervision 'masks'"),
    ({"labels": [2]}, "hyperparameters", "only with supervision 'labels'"),
])
def test_bad_label_settings_name_the_field(server, dataset_id: str, hyperparameters: dict, field: str,
                                           words: str) -> None:
    body = _create(server, dataset_id, hyperparameters=TINY | hyperparameters).json()
    assert body["code"] == "invalid_request"
    assert any(error["loc"][-1] == field and words in error["msg"] for error in body["errors"]), body


def test_label_supervision_is_queued_on_a_dataset_with_masks(server, dataset_id: str) -> None:
    hp = TINY | {"supervision": "labels", "labels": [2], "label_weight": 0.5}
    response = _create(server, dataset_id, hyperparameters=hp)
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["hyperparameters"]["supervision"], job["hyperparameters"]["labels"],
            job["hyperparameters"]["label_weight"]) == ("labels", [2], 0.5)
    server.client.post(job["url"] + "/cancel")


def test_label_supervision_on_a_dataset_without_masks_is_422(server, manifest_dataset, zip_folder,
                                                              tmp_path) -> None:
    folder = manifest_dataset(tmp_path / "study", n_pairs=4, size=32)
    rows = (folder / "manifest.csv").read_text(encoding="utf-8").splitlines()
    (folder / "manifest.csv").write_text("\n".join(",".join(row.split(",")[:2]) for row in rows) + "\n",
                                         encoding="utf-8")
    upload = {"file": ("plain.zip", zip_folder(folder, prefix="study/"))}
    dataset = server.client.post("/v1/datasets", files=upload).json()
    assert dataset["n_labelled"] == 0, dataset
    before = server.client.get("/v1/training-jobs").json()["count"]
    response = _create(server, dataset["id"], hyperparameters=TINY | {"supervision": "labels"})
    assert response.status_code == 422 and response.json()["code"] == "dataset_without_masks"
    detail = response.json()["detail"]
    assert "supervision 'labels'" in detail and "both masks" in detail and "on 0 of its 4 pairs" in detail, detail
    assert server.client.get("/v1/training-jobs").json()["count"] == before
    plain = _create(server, dataset["id"])
    assert plain.status_code == 202  # images alone still train
    server.client.post(plain.json()["url"] + "/cancel")

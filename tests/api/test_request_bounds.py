"""Absurd numbers and oversized input over real HTTP: a 422 naming the field, never a 500, never an echo.

Each module run is on SQLite and on PostgreSQL, whose INTEGER/BIGINT columns and NUL-free text are
where unbounded numbers and odd ids used to become server errors.
"""

from __future__ import annotations

import pytest

LISTS = ("/v1/registrations", "/v1/datasets", "/v1/training-jobs", "/v1/models")
JOB = {"dataset_id": "00000000-0000-0000-0000-000000000000", "model_name": "m"}


def body_with(hyperparameter: str) -> bytes:
    """A training request whose ``lr`` is written as ``hyperparameter`` (JSON allows 1e999; Python reads NaN)."""
    return (b'{"dataset_id": "00000000-0000-0000-0000-000000000000", "model_name": "m", '
            b'"hyperparameters": {"lr": ' + hyperparameter.encode() + b"}}")


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("offset", ["9223372036854775808", "-1", "1e3"])
def test_list_offsets_past_what_the_database_holds_are_422(api, path, offset):
    response = api.client.get(path, params={"offset": offset})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request" and body["errors"][0]["loc"] == ["query", "offset"]
    assert offset not in response.text  # the value is not echoed


def test_version_numbers_past_int32_are_422(api):
    for path in ("/v1/models/m/versions/2147483648", "/v1/models/m/versions/2147483648/artifact"):
        response = api.client.get(path)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request", path
    assert api.client.get("/v1/models/m/versions/2147483647").status_code == 404  # in range: just unknown


@pytest.mark.parametrize("value", ["1e999", "-1e999", "NaN", "Infinity"])
def test_non_finite_numbers_in_a_training_body_are_422(api, value):
    response = api.client.post("/v1/training-jobs", content=body_with(value),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert ["body", "hyperparameters", "lr"] in [e["loc"] for e in body["errors"]]


def test_non_finite_architecture_options_are_422(api):
    response = api.client.post("/v1/training-jobs", content=(
        b'{"dataset_id": "00000000-0000-0000-0000-000000000000", "model_name": "m", '
        b'"architecture_options": {"embed_dim": NaN}}'), headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request", response.text


def test_a_422_never_echoes_a_large_input(api):
    name = "x" * 700_000
    response = api.client.post("/v1/training-jobs", json=JOB | {"model_name": name})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert len(response.content) < 4096 and "xxxxxxxxxx" not in response.text
    many = {"dataset_id": JOB["dataset_id"], "model_name": "m", "hyperparameters": {f"k{i}": i for i in range(5000)}}
    response = api.client.post("/v1/training-jobs", json=many)
    assert response.status_code == 422 and len(response.content) < 8192  # 20 field errors at most, each short


@pytest.mark.parametrize("job_id", ["%00", "not-a-uuid", "x" * 60, "00000000-0000-0000-0000-00000000000%00"])
def test_odd_ids_are_simply_not_found(api, job_id):
    for path in ("/v1/registrations/", "/v1/training-jobs/", "/v1/datasets/"):
        response = api.client.get(path + job_id)
        assert response.status_code == 404 and response.json()["code"] == "not_found", (path, job_id)


def test_control_characters_in_a_dataset_name_are_422(api):
    response = api.client.post("/v1/datasets", data={"name": "a\x00b"}, files={"file": ("d.zip", b"PK\x05\x06")})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_an_unknown_lr_schedule_is_422_naming_the_choices(api):
    response = api.client.post("/v1/training-jobs", json=JOB | {"hyperparameters": {"lr_schedule": "step"}})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "hyperparameters",
                                                                                  "lr_schedule"]
    assert "'constant' or 'cosine'" in response.json()["errors"][0]["msg"]

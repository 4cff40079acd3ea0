"""service/api/routes/registrations.py over real HTTP, on SQLite and PostgreSQL, with no worker.

Each server has its own data folder and the embedded filesystem broker in it, so a sent task is a
file in ``<data_dir>/broker/queue`` that these tests count and read. Bad uploads must leave no job
row, no files and no message.
"""

import base64
import json
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy import select

from service.cli_keys import create_api_key
from service.db import Job, JobStatus, ModelVersion
from service.storage import LocalArtifactStore

MiB = 1024 * 1024
MODEL = "tinyreg"


def write_image(path, array, spacing=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing or (1.0,) * array.ndim)
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 2-D pair with masks, a 3-D image, a truncated NIfTI and a PDF, as bytes."""
    folder, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(0)
    pair = {role: write_image(folder / f"{role}.nii.gz", rng.random((32, 32)).astype(np.float32))
            for role in ("fixed", "moving")}
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:22] = 1
    pair |= {role: write_image(folder / f"{role}.nii.gz", mask) for role in ("moving_mask", "fixed_mask")}
    volume = write_image(folder / "volume.nii.gz", rng.random((4, 32, 32)).astype(np.float32))
    raw = write_image(folder / "raw.nii", rng.random((32, 32)).astype(np.float32))
    return pair | {"volume": volume, "truncated": raw[:400], "pdf": b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\n" * 10}


@pytest.fixture(scope="module")
def server(serve_tiny_default):
    """A server whose default model is the tiny one (registered and promoted over HTTP)."""
    return serve_tiny_default(MODEL, max_upload_bytes=MiB)


def files_of(images, **names):
    """Multipart files: role -> (filename, bytes); ``names`` maps role -> image key (None drops it)."""
    chosen = {"fixed": "fixed", "moving": "moving"} | names
    names = {"pdf": "{}.pdf", "truncated": "{}.nii"}
    return {role: (names.get(key, "{}.nii.gz").format(role), images[key])
            for role, key in chosen.items() if key is not None}


def messages(live):
    return sorted((live.settings.broker_dir / "queue").glob("*.msg"))


def job_dirs(live):
    jobs = live.settings.artifact_dir / "jobs"
    return sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []


def count(live):
    return live.client.get("/v1/registrations").json()["count"]


@pytest.fixture
def nothing_made(server):
    """No row, no job folder and no message after the test (compared with before)."""
    before = (count(server), job_dirs(server), messages(server))
    yield
    assert (count(server), job_dirs(server), messages(server)) == before


def post(live, files, data=None, params=None, **headers):
    return live.client.post("/v1/registrations", files=files, data=data or {}, params=params or {}, headers=headers)


# -- refusals: a 4xx naming the field, and nothing half made -------------------------------------

def test_a_corrupt_moving_image_is_400_naming_moving(server, images, nothing_made):
    response = post(server, files_of(images, moving="truncated"))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "unreadable_image" and body["detail"].startswith("moving: ")
    assert str(server.settings.artifact_dir) not in body["detail"]  # the server's paths stay private


def test_a_file_that_is_not_an_image_is_415_naming_moving(server, images, nothing_made):
    response = post(server, files_of(images, moving="pdf"))
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith("moving: ")


def test_a_2d_fixed_with_a_3d_moving_is_422(server, images, nothing_made):
    response = post(server, files_of(images, moving="volume"))
    assert response.status_code == 422 and response.json()["code"] == "dimension_mismatch"
    assert response.json()["detail"].startswith("moving: the fixed image is 2-D but the moving image is 3-D")


def test_a_3d_mask_on_a_2d_image_is_422_naming_the_mask(server, images, nothing_made):
    response = post(server, files_of(images, moving_mask="volume"))
    assert response.status_code == 422 and response.json()["detail"].startswith("moving_mask: the mask is 3-D")


def test_an_oversize_upload_is_413(server, images, nothing_made):
    big = {"fixed": ("fixed.nii", b"\0" * (MiB + 1)), "moving": ("moving.nii.gz", images["moving"])}
    response = post(server, big)
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


def test_an_image_over_max_voxels_is_413_naming_fixed(serve, server, images):
    small = serve(max_voxels=100, default_model=MODEL)
    before = count(small)
    response = post(small, files_of(images))
    assert response.status_code == 413 and response.json()["code"] == "image_too_large"
    assert response.json()["detail"].startswith("fixed: has 1,024 voxels")
    assert count(small) == before and job_dirs(small) == [] and messages(small) == []


def test_an_unknown_model_is_404_before_anything_is_stored(server, images, nothing_made):
    response = post(server, files_of(images), data={"model": "nosuchmodel"})
    assert response.status_code == 404 and "nosuchmodel" in response.json()["detail"]


def test_a_missing_moving_file_is_422(server, images, nothing_made):
    response = post(server, files_of(images, moving=None))
    assert response.status_code == 422


@pytest.mark.parametrize(("field", "value"), [
    ("refine_steps", "-1"), ("refine_steps", "2001"), ("refine_steps", "2.5"), ("refine_steps", "many"),
    ("refine_time_limit_s", "0"), ("refine_time_limit_s", "-3"), ("refine_time_limit_s", "301"),
    ("refine_time_limit_s", "nan"), ("refine_time_limit_s", "inf"),
])
def test_a_bad_refine_field_is_422_naming_it(server, images, nothing_made, field, value):
    response = post(server, files_of(images), data={field: value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request" and f"body.{field}: " in body["detail"]
    assert [error["loc"] for error in body["errors"]] == [["body", field]]


# -- a valid upload ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def queued(server, images):
    """One accepted registration with both masks (no worker: it stays queued)."""
    response = post(server, files_of(images, moving_mask="moving_mask", fixed_mask="fixed_mask"),
                    data={"moving_frame": "0"})
    assert response.status_code == 202, response.text
    return response


def test_a_valid_upload_is_202_with_a_queued_row_inputs_on_disk_and_one_message(server, queued, images, db_session):
    body = queued.json()
    job_id = body["id"]
    assert queued.headers["Location"] == f"/v1/registrations/{job_id}"
    assert body["status"] == "queued" and body["model"] == MODEL and body["outputs"] == {}
    assert body["inputs"] == ["fixed", "moving", "moving_mask", "fixed_mask"]
    with db_session() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.QUEUED and job.kind.value == "registration"
        assert job.params == {"model": MODEL, "fixed_series": None, "moving_series": None, "fixed_frame": None,
                              "moving_frame": 0,
                              "inputs": {role: f"inputs/{role}.nii.gz" for role in
                                         ("fixed", "moving", "moving_mask", "fixed_mask")}}
    inputs = LocalArtifactStore(server.settings.artifact_dir).job_dir(job_id) / "inputs"
    for role in ("fixed", "moving", "moving_mask", "fixed_mask"):
        assert (inputs / f"{role}.nii.gz").read_bytes() == images[role]
    sent = [json.loads(p.read_text(encoding="utf-8")) for p in messages(server)]
    ours = [m for m in sent if m["headers"]["id"] and json.loads(base64.b64decode(m["body"]))[0] == [job_id]]
    assert len(ours) == 1
    assert ours[0]["headers"]["task"] == "adacs.registration.run"
    assert ours[0]["properties"]["delivery_info"]["routing_key"] == "inference"


def test_refine_fields_are_stored_in_the_job_params_only_when_given(server, images, db_session):
    both = post(server, files_of(images), data={"refine_steps": "2000", "refine_time_limit_s": "2.5"})
    steps_only = post(server, files_of(images), data={"refine_steps": "0"})
    assert both.status_code == steps_only.status_code == 202, (both.text, steps_only.text)
    with db_session() as session:
        params = session.get(Job, both.json()["id"]).params
        assert (params["refine_steps"], params["refine_time_limit_s"]) == (2000, 2.5)
        params = session.get(Job, steps_only.json()["id"]).params
        assert params["refine_steps"] == 0 and "refine_time_limit_s" not in params  # the model card decides


def test_label_names_are_stored_in_the_job_params(server, images, db_session):
    named = post(server, files_of(images), data={"labels": '{"1": "RV", "2": "myocardium"}'})
    assert named.status_code == 202, named.text
    with db_session() as session:
        assert session.get(Job, named.json()["id"]).params["label_names"] == {"1": "RV", "2": "myocardium"}


@pytest.mark.parametrize("labels", ["RV,MYO", '{"x": "RV"}', '{"1": "' + "n" * 65 + '"}', "{" * 20_001])
def test_bad_label_names_are_422_before_a_job_exists(server, images, nothing_made, labels):
    response = post(server, files_of(images), data={"labels": labels})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] in ("invalid_labels", "invalid_request") and "labels" in body["detail"]
    assert "n" * 65 not in body["detail"]  # the refusal does not echo what was sent


def test_the_extension_of_each_upload_is_kept(server, images, db_session):
    files = {"fixed": ("F.NII.GZ", images["fixed"]), "moving": ("scan", images["moving"])}
    response = post(server, files)
    assert response.status_code == 202, response.text
    with db_session() as session:
        assert session.get(Job, response.json()["id"]).params["inputs"] == {"fixed": "inputs/fixed.nii.gz",
                                                                           "moving": "inputs/moving"}


def test_wait_without_a_worker_still_answers_202_after_the_wait(server, images):
    response = post(server, files_of(images), params={"wait": "0.3"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert response.elapsed.total_seconds() >= 0.3


def test_get_and_list_show_the_job_newest_first(server, queued, images):
    job_id = queued.json()["id"]
    one = server.client.get(f"/v1/registrations/{job_id}")
    assert one.status_code == 200 and one.json()["id"] == job_id and one.json()["url"] == f"/v1/registrations/{job_id}"
    newer = post(server, files_of(images)).json()["id"]
    listing = server.client.get("/v1/registrations").json()
    ids = [job["id"] for job in listing["data"]]
    assert listing["count"] == len(ids) and ids[0] == newer and job_id in ids
    assert ids.index(newer) < ids.index(job_id)
    assert len(server.client.get("/v1/registrations", params={"limit": 1}).json()["data"]) == 1


def test_unknown_ids_are_404(server):
    for path in ("/v1/registrations/nope", "/v1/registrations/00000000-0000-0000-0000-000000000000",
                 "/v1/registrations/00000000-0000-0000-0000-000000000000/displacement"):
        response = server.client.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert server.client.delete("/v1/registrations/nope").status_code == 404


def test_downloads_of_a_queued_job_are_409(server, queued):
    response = server.client.get(f"/v1/registrations/{queued.json()['id']}/displacement")
    assert response.status_code == 409 and response.json()["code"] == "job_not_finished"
    assert "still queued" in response.json()["detail"]


# -- a finished job (written as the worker writes it) ---------------------------------------------

def finish(live, db_session, job_id, status=JobStatus.SUCCEEDED, with_mask=False):
    store = LocalArtifactStore(live.settings.artifact_dir)
    files = {"displacement": ("displacement.nii.gz", b"disp"), "warped": ("warped.nii.gz", b"warped"),
             "report": ("report.json", b'{"dice": 0.9}'), "preview": ("preview.png", b"\x89PNG")}
    if with_mask:
        files["warped_mask"] = ("warped_mask.nii.gz", b"mask")
    outputs = {role: {"file": name, "sha256": store.put_bytes(data), "key": "k", "size_bytes": len(data)}
               for role, (name, data) in files.items()}
    with db_session() as session:
        job = session.get(Job, job_id)
        job.status = status
        job.result = {"outputs": outputs, "model": {"ref": f"{MODEL}:1"}, "report": {"dice": 0.9},
                      "timings_s": {"total": 0.5}} if status == JobStatus.SUCCEEDED else None
        job.error = None if status == JobStatus.SUCCEEDED else "internal_error: boom"
    return files


def test_a_succeeded_job_links_and_serves_its_outputs(server, images, db_session):
    job_id = post(server, files_of(images)).json()["id"]
    files = finish(server, db_session, job_id)
    body = server.client.get(f"/v1/registrations/{job_id}").json()
    assert body["status"] == "succeeded" and body["model_version"] == f"{MODEL}:1"
    assert body["timings_s"] == {"total": 0.5} and body["report"] == {"dice": 0.9}
    assert set(body["outputs"]) == {"displacement", "warped", "report", "preview"}
    assert body["outputs"]["warped"]["url"] == f"/v1/registrations/{job_id}/warped-image"
    for segment, role, media in (("displacement", "displacement", "application/gzip"),
                                 ("warped-image", "warped", "application/gzip"),
                                 ("report", "report", "application/json"), ("preview.png", "preview", "image/png")):
        response = server.client.get(f"/v1/registrations/{job_id}/{segment}")
        assert response.status_code == 200 and response.content == files[role][1]
        assert response.headers["content-type"] == media
        assert response.headers["content-disposition"] == f'attachment; filename="{files[role][0]}"'
    response = server.client.get(f"/v1/registrations/{job_id}/warped-mask")
    assert response.status_code == 404 and "no moving_mask was uploaded" in response.json()["detail"]


def test_a_failed_job_has_no_downloads(server, images, db_session):
    job_id = post(server, files_of(images)).json()["id"]
    finish(server, db_session, job_id, status=JobStatus.FAILED)
    body = server.client.get(f"/v1/registrations/{job_id}").json()
    assert body["status"] == "failed" and body["error"] == "internal_error: boom" and body["outputs"] == {}
    response = server.client.get(f"/v1/registrations/{job_id}/displacement")
    assert response.status_code == 404 and "failed (internal_error: boom)" in response.json()["detail"]


def test_delete_removes_the_row_and_the_folder_and_refuses_a_running_job(server, images, db_session):
    job_id = post(server, files_of(images)).json()["id"]
    folder = server.settings.artifact_dir / "jobs" / job_id
    assert folder.is_dir()
    with db_session() as session:
        session.get(Job, job_id).status = JobStatus.RUNNING
    response = server.client.delete(f"/v1/registrations/{job_id}")
    assert response.status_code == 409 and response.json()["code"] == "job_running"
    assert server.client.get(f"/v1/registrations/{job_id}/warped-mask").status_code == 409
    with db_session() as session:
        session.get(Job, job_id).status = JobStatus.SUCCEEDED
    assert server.client.delete(f"/v1/registrations/{job_id}").status_code == 204
    assert not folder.exists() and server.client.get(f"/v1/registrations/{job_id}").status_code == 404


def test_delete_removes_the_output_objects_no_other_job_or_model_shares(server, images, db_session):
    store = LocalArtifactStore(server.settings.artifact_dir)
    shared = store.put_bytes(b"a displacement both jobs computed")
    with db_session() as session:  # a file of the registered model, byte for byte
        version_file = sorted(store.read_manifest(session.scalar(select(ModelVersion.sha256))).values())[0][0]
    jobs, own = [post(server, files_of(images)).json()["id"] for _ in range(2)], {}
    for job_id in jobs:
        own[job_id] = store.put_bytes(f"warped image of {job_id}".encode())
        entries = {"displacement": shared, "warped": own[job_id], "report": version_file}
        with db_session() as session:
            job = session.get(Job, job_id)
            job.status = JobStatus.SUCCEEDED
            job.result = {"outputs": {role: {"file": f"{role}.bin", "sha256": sha, "key": store.key_of(sha),
                                             "size_bytes": store.path_of(sha).stat().st_size}
                                      for role, sha in entries.items()}}
    first, second = jobs
    assert server.client.delete(f"/v1/registrations/{first}").status_code == 204
    assert not (server.settings.artifact_dir / "jobs" / first).exists() and not store.exists(own[first])
    assert store.exists(shared) and store.exists(own[second]) and store.exists(version_file)
    response = server.client.get(f"/v1/registrations/{second}/displacement")
    assert response.status_code == 200 and response.content == b"a displacement both jobs computed"
    assert server.client.delete(f"/v1/registrations/{second}").status_code == 204
    assert not store.exists(shared) and not store.exists(own[second])
    assert store.exists(version_file)  # the model version still uses it


# -- API keys ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(serve, server):
    return serve(api_keys_enabled=True, default_model=MODEL)


@pytest.fixture(scope="module")
def keys(db_session):
    with db_session() as session:
        return {scope: create_api_key(session, f"reg-{scope}", [scope]) for scope in ("register", "train")}


def test_keys_on_registering_needs_the_register_scope(keyed, keys, images, db_session):
    response = post(keyed, files_of(images))
    assert response.status_code == 401 and response.json()["code"] == "missing_api_key"
    response = post(keyed, files_of(images), **{"X-API-Key": keys["train"]})
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    assert job_dirs(keyed) == []
    response = post(keyed, files_of(images), **{"X-API-Key": keys["register"]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with db_session() as session:
        assert session.get(Job, job_id).owner_key_id is not None
    assert keyed.client.get(f"/v1/registrations/{job_id}").status_code == 401
    # Another key sees nothing of it (tests/api/test_security.py has the whole owner matrix).
    assert keyed.client.get(f"/v1/registrations/{job_id}", headers={"X-API-Key": keys["train"]}).status_code == 404
    response = keyed.client.delete(f"/v1/registrations/{job_id}", headers={"X-API-Key": keys["train"]})
    assert response.status_code == 403  # no register scope: refused before the owner is even looked at
    response = keyed.client.delete(f"/v1/registrations/{job_id}", headers={"X-API-Key": keys["register"]})
    assert response.status_code == 204


def test_an_unreachable_broker_is_503_and_the_job_is_taken_back(serve, server, images):
    down = serve(default_model=MODEL, broker_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    before = count(down)
    response = post(down, files_of(images))
    assert response.status_code == 503 and response.json()["code"] == "broker_unavailable", response.text
    assert count(down) == before and job_dirs(down) == []


def finish_without_preview(live, db_session, job_id):
    """A succeeded job whose preview has not been drawn yet (as the worker leaves every registration)."""
    finish(live, db_session, job_id)
    with db_session() as session:
        job = session.get(Job, job_id)
        job.result = {**job.result, "outputs": {k: v for k, v in job.result["outputs"].items() if k != "preview"}}


def preview_messages(live):
    return [path for path in messages(live) if b"adacs.registration.preview" in path.read_bytes()]


def test_a_preview_nobody_draws_is_a_404_not_ready_after_the_wait(server, images, db_session, monkeypatch):
    monkeypatch.setattr("service.api.job_routes.ON_DEMAND_WAIT_S", 0.3)
    job_id = post(server, files_of(images)).json()["id"]
    finish_without_preview(server, db_session, job_id)
    sent_before = len(preview_messages(server))
    response = server.client.get(f"/v1/registrations/{job_id}/preview.png")
    assert response.status_code == 404 and response.json()["code"] == "not_ready"
    assert response.headers["retry-after"] == "5" and "preview.png is being drawn" in response.json()["detail"]
    assert len(preview_messages(server)) == sent_before + 1  # the worker was asked, once


def test_a_preview_wait_ends_when_the_job_expires_meanwhile(server, images, db_session, monkeypatch):
    monkeypatch.setattr("service.api.job_routes.ON_DEMAND_WAIT_S", 30.0)
    job_id = post(server, files_of(images)).json()["id"]
    finish_without_preview(server, db_session, job_id)

    def expire_soon():
        time.sleep(0.3)
        with db_session() as session:
            session.get(Job, job_id).expired_at = datetime.now(UTC)

    threading.Thread(target=expire_soon, daemon=True).start()
    started = time.monotonic()
    response = server.client.get(f"/v1/registrations/{job_id}/preview.png")
    assert time.monotonic() - started < 10  # not the 30 s wait
    assert response.status_code == 404 and response.json()["code"] == "no_output"


def test_a_preview_wait_ends_with_a_404_when_the_job_is_deleted_meanwhile(server, images, db_session, monkeypatch):
    monkeypatch.setattr("service.api.job_routes.ON_DEMAND_WAIT_S", 30.0)
    job_id = post(server, files_of(images)).json()["id"]
    finish_without_preview(server, db_session, job_id)
    deleted = []
    threading.Timer(0.3, lambda: deleted.append(server.client.delete(f"/v1/registrations/{job_id}"))).start()
    started = time.monotonic()
    response = server.client.get(f"/v1/registrations/{job_id}/preview.png")
    assert time.monotonic() - started < 10 and deleted[0].status_code == 204
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.text


def test_a_wait_ends_with_a_404_when_the_queued_job_is_deleted_meanwhile(server, images):
    deleted = []

    def delete_the_queued_job():
        listed = server.client.get("/v1/registrations", params={"limit": 1}).json()["data"][0]
        deleted.append(server.client.delete(f"/v1/registrations/{listed['id']}"))

    threading.Timer(0.5, delete_the_queued_job).start()
    started = time.monotonic()
    response = post(server, files_of(images), params={"wait": 30})  # no worker: it stays queued
    assert time.monotonic() - started < 10 and deleted[0].status_code == 204
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.text

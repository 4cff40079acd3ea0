"""POST /v1/cine-registrations over real HTTP, on SQLite and PostgreSQL: the flow and every refusal.

The starter model (shipped in the package) is uploaded and promoted over HTTP as a user would; a
phantom cine with a known volume curve is uploaded with its end-diastolic mask; the job is run by the
worker's own task body in this process (``run_cine``, as tests/api/test_registration_seg.py does) and
every output is downloaded and checked against independent reads and the phantom's truth. Bad input is
refused with a 4xx naming the problem before any job exists.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ has no packages
from test_cine import FRAMES, SIZE, SLICES, STARTER, TRACKING, write_3d, write_4d  # noqa: E402

from models.data.phantom_cine import make_phantom_cine  # noqa: E402

MODEL = "starter-cine"
LABELS = '{"1": "LV", "2": "myocardium"}'


@pytest.fixture(scope="module")
def server(serve, zip_folder):
    live = serve(default_model=MODEL, max_cine_frames=8)
    upload = live.client.post("/v1/models", data={"name": MODEL}, files={"file": ("m.zip", zip_folder(STARTER))})
    assert upload.status_code in (200, 201), upload.text
    promoted = live.client.post(f"/v1/models/{MODEL}/versions/1/promote", json={"stage": "production"})
    assert promoted.status_code == 200, promoted.text
    return live


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_cine(frames=FRAMES, slices=SLICES, size=SIZE, seed=1, noise=0.02)


@pytest.fixture(scope="module")
def uploads(phantom, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("cine-upload")
    long = make_phantom_cine(frames=9, slices=1, size=32, seed=2)
    return {"cine": write_4d(phantom.images, phantom.spacing_mm, folder / "cine.nii.gz").read_bytes(),
            "mask": write_3d(phantom.masks[0], phantom.spacing_mm, folder / "ed.nii.gz").read_bytes(),
            "volume": write_3d(phantom.images[0], phantom.spacing_mm, folder / "frame0.nii.gz").read_bytes(),
            "small_mask": write_3d(phantom.masks[0][:, :-4], phantom.spacing_mm, folder / "small.nii.gz").read_bytes(),
            "long": write_4d(long.images, long.spacing_mm, folder / "long.nii.gz").read_bytes()}


def post(server, cine: bytes, mask: bytes, **data):
    files = {"cine": ("cine.nii.gz", cine), "reference_mask": ("mask.nii.gz", mask)}
    return server.client.post("/v1/cine-registrations", files=files, data={k: str(v) for k, v in data.items()})


def jobs_count(server) -> int:
    return server.client.get("/v1/cine-registrations").json()["count"]


def test_a_cine_is_tracked_and_every_output_downloads(server, uploads, phantom):
    from worker.tasks.cine import run_cine

    response = post(server, uploads["cine"], uploads["mask"], labels=LABELS, **TRACKING)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/cine-registrations/{job_id}"
    assert server.client.get(f"/v1/cine-registrations/{job_id}/report").status_code == 409  # still queued
    run_cine(job_id, settings=server.settings)
    job = server.client.get(f"/v1/cine-registrations/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["frame"] == job["progress"]["frames"] == FRAMES
    assert set(job["outputs"]) == {"displacements", "warped_masks", "volumes", "volume_curve", "report"}
    lv = job["report"]["lv"]
    assert lv["es_frame"] == FRAMES // 2 and abs(lv["ef_pct"] - phantom.ejection_fraction()) < 2.0

    masks = get(server, job_id, "warped-masks", "application/gzip")
    volume = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(masks)).dataobj)  # (x, y, z, t)
    assert volume.shape == (SIZE, SIZE, SLICES, FRAMES)
    np.testing.assert_array_equal(volume[..., 0].transpose(2, 1, 0), phantom.masks[0])
    counted = np.count_nonzero(volume == 1, axis=(0, 1, 2)) * np.prod(phantom.spacing_mm) / 1000
    np.testing.assert_allclose(job["report"]["labels"]["1"]["volume_ml"], counted, atol=1e-3)
    fields = nib.Nifti1Image.from_bytes(gzip.decompress(get(server, job_id, "displacements", "application/gzip")))
    assert fields.shape == (SIZE, SIZE, SLICES, FRAMES, 3) and fields.header.get_intent()[0] == "vector"
    rows = list(csv.reader(io.StringIO(get(server, job_id, "volumes.csv", "text/csv").decode())))
    assert len(rows) == FRAMES + 1 and rows[0][1] == "LV (1) [volume_ml]"
    picture = PILImage.open(io.BytesIO(get(server, job_id, "volume-curve.png", "image/png")))
    assert picture.size[0] >= 800
    assert json.loads(get(server, job_id, "report", "application/json")) == job["report"]


def get(server, job_id: str, segment: str, media_type: str) -> bytes:
    response = server.client.get(f"/v1/cine-registrations/{job_id}/{segment}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    return response.content


@pytest.mark.parametrize(("files", "data", "status", "code", "words"), [
    (("volume", "mask"), {}, 422, "not_a_cine", "cine: is a single 3-D image"),
    (("cine", "small_mask"), {}, 422, "mask_geometry", "reference_mask"),
    (("long", "mask"), {}, 413, "too_many_frames", "9 frames, more than the limit of 8"),
    (("cine", "mask"), {"reference_frame": FRAMES}, 422, "frame_out_of_range", "reference_frame=6 is out of range"),
    (("cine", "mask"), {"reference_frame": -1}, 422, "invalid_request", "reference_frame"),
    (("cine", "mask"), {"refine_similarity": "ssd"}, 422, "invalid_request", "refine_similarity"),
    (("cine", "mask"), {"lv_label": 0}, 422, "invalid_request", "lv_label"),
    (("cine", "mask"), {"labels": "[1, 2]"}, 422, "invalid_labels", "labels"),
    (("cine", "mask"), {"reference_mask_frame": 1}, 422, "unknown_form_field", "reference_mask_frame"),
    (("mask", "mask"), {}, 422, "not_a_cine", "cine"),
], ids=["3d-not-4d", "mask-off-grid", "too-many-frames", "reference-out-of-range", "negative-reference",
        "bad-similarity", "lv-label-0", "bad-labels", "unknown-field", "mask-as-cine"])
def test_bad_input_is_refused_before_any_job_exists(server, uploads, files, data, status, code, words):
    before = jobs_count(server)
    response = post(server, uploads[files[0]], uploads[files[1]], **data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and words in json.dumps(body), body
    assert "inputs/" not in response.text  # the server's folders stay private: errors name the form fields
    assert jobs_count(server) == before



def test_a_dicom_cine_series_zip_is_tracked(server, tmp_path, zip_folder):
    """A DICOM cine (3 slice positions × 5 phases, instances and file names shuffled) as a zip."""
    from test_dicom_cine import write_cine

    from models.io.image import LABEL, Image
    from models.io.readers.read import read_frames
    from worker.tasks.cine import run_cine

    write_cine(tmp_path / "series")
    frames = read_frames(tmp_path / "series")
    mask = np.zeros(frames[0].array.shape, np.uint8)
    mask[:, 1:4, 2:5] = 1
    mask_path = tmp_path / "mask.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(Image(mask, frames[0].geometry, LABEL).to_sitk(), str(mask_path))
    files = {"cine": ("cine.zip", zip_folder(tmp_path / "series")),
             "reference_mask": ("mask.nii.gz", mask_path.read_bytes())}
    response = server.client.post("/v1/cine-registrations", files=files, data={"refine_steps": "0"})
    assert response.status_code == 202, response.text
    run_cine(response.json()["id"], settings=server.settings)
    job = server.client.get(f"/v1/cine-registrations/{response.json()['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["report"]["frames"] == 5 and job["report"]["grid"]["size"] == list(frames[0].size)

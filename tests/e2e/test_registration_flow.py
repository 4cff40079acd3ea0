"""End to end: the API (uvicorn in a thread) and a real Celery worker process on real Redis, on
SQLite and on PostgreSQL. A model is uploaded and promoted over HTTP, image pairs are uploaded, the
worker registers them, and the downloads equal what ``adacs register`` writes locally with the same
model and files. Both run ``models.register.register_files``; the first test is the one place that
holds the service and the CLI to the same files, byte for byte.

Each run has its own queue, database, data folder and artifact store. Redis must be reachable
(``ADACS_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``); a missing Redis fails, never skips.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from service.cli import main as adacs

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 90
MODEL = "e2e"
DICOM_UID = "1.2.826.0.1.3680043.2.1125.1.77"
# Download segment -> the file `adacs register` writes; and the report's scores (its timings differ).
NIFTI_OUTPUTS = {"displacement": "displacement.nii.gz", "inverse-displacement": "inverse_displacement.nii.gz",
                 "jacobian": "jacobian.nii.gz", "warped-image": "warped.nii.gz", "warped-mask": "warped_mask.nii.gz"}
SCORES = ("dice", "dice_before", "folding_pct", "grid", "jacobian", "inverse", "labels")


@pytest.fixture(scope="module")
def dicom_pair(tmp_path_factory, dicom_zip) -> dict[str, Path]:
    """A 3-slice volume: the fixed as NIfTI, the moving (shifted) as a DICOM series zip."""
    folder, rng = tmp_path_factory.mktemp("dicom"), np.random.default_rng(1)
    volume = (rng.random((3, 32, 32)) * 1000).astype(np.int16)
    fixed = sitk.GetImageFromArray(volume.astype(np.float32))
    fixed.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(fixed, str(folder / "fixed.nii.gz"))
    moving = dicom_zip(np.roll(volume, 2, axis=2), (1.0, 1.0, 4.0), folder / "moving.zip", (DICOM_UID,))
    return {"fixed": folder / "fixed.nii.gz", "moving": moving}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, registration_stack, image_pair, tmp_path_factory) -> Iterator:
    """The API and one worker on a queue of their own (``registration_stack``, tests/conftest.py), the
    worker warm: it has finished one registration (its first loads torch and the model)."""
    data = tmp_path_factory.mktemp(f"e2e-{request.param}")
    url = (f"sqlite:///{data / 'adacs.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_database")())
    with registration_stack(data, url, MODEL, {"ADACS_HEARTBEAT_INTERVAL_S": "0.5"}) as server:
        # Waited for here, so that a test passing ``wait`` finds a warm worker whichever test runs first.
        pair = {role: (f"{role}.nii.gz", image_pair[role].read_bytes()) for role in ("fixed", "moving")}
        response = server.client.post("/v1/registrations", files=pair)
        assert response.status_code == 202, response.text
        warm_up = wait_for(server, response.json()["id"])
        assert warm_up["status"] == "succeeded", f"{warm_up['error']}\n{server.worker.tail()}"
        yield server


def wait_for(server, job_id: str) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and server.worker.alive():
        job = server.client.get(f"/v1/registrations/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    state = f"still {job['status']} after {TIMEOUT_S} s" if server.worker.alive() else "exited"
    pytest.fail(f"worker {state}; its log:\n{server.worker.tail()}", pytrace=False)


def download(server, job_id: str, segment: str, target: Path) -> np.ndarray:
    response = server.client.get(f"/v1/registrations/{job_id}/{segment}")
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(target)))


def local_register(model_dir: Path, out: Path, *flags: str, **files: Path) -> Path:
    argv = ["register", "--model", str(model_dir), "--out", str(out), "--device", "cpu", *flags]
    for role, path in files.items():
        argv += [f"--{role.replace('_', '-')}", str(path)]
    assert adacs(argv) == 0
    return out


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def check_inverse_and_jacobian(displacement: Path, inverse: Path, jacobian: Path) -> None:
    """The downloaded inverse and Jacobian against SimpleITK's own computations on the downloaded field:
    forward then inverse returns every voxel centre to itself, and the determinants are SimpleITK's.
    The grid is rotated and SimpleITK's Jacobian filter ignores the direction, so it is given the same
    map in the grid's own axes (vectors Dᵀu on an axis-aligned grid), which has the same determinant."""
    field = sitk.ReadImage(str(displacement), sitk.sitkVectorFloat64)
    ndim = field.GetDimension()
    direction = np.asarray(field.GetDirection()).reshape(ndim, ndim)
    assert not np.allclose(direction, np.eye(ndim))  # the oblique case is the one worth checking
    forward = sitk.DisplacementFieldTransform(sitk.Image(field))
    inverse_field = sitk.ReadImage(str(inverse), sitk.sitkVectorFloat64)
    backward = sitk.DisplacementFieldTransform(sitk.Image(inverse_field))
    moved, checked = 0.0, 0
    for index in np.ndindex(*field.GetSize()):
        start = field.TransformIndexToPhysicalPoint(tuple(int(i) for i in index))
        there = forward.TransformPoint(start)
        on_moving = inverse_field.TransformPhysicalPointToContinuousIndex(there)
        if not all(0 <= c <= n - 1 for c, n in zip(on_moving, inverse_field.GetSize())):
            continue  # the inverse lives on the moving grid: a point mapped off it has none
        moved, checked = max(moved, float(np.linalg.norm(np.subtract(there, start)))), checked + 1
        assert np.linalg.norm(np.subtract(backward.TransformPoint(there), start)) < 0.05, index
    assert moved > 0.1 and checked > 0.5 * np.prod(field.GetSize())  # a real deformation, mostly in view
    in_grid_axes = sitk.GetImageFromArray(sitk.GetArrayFromImage(field) @ direction, isVector=True)
    in_grid_axes.SetSpacing(field.GetSpacing())
    theirs = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(in_grid_axes))
    inner = (slice(1, -1),) * ndim  # both use central differences inside; they differ at the border
    np.testing.assert_allclose(read(jacobian)[inner], theirs[inner], atol=1e-4)
    assert np.abs(theirs - 1).max() > 1e-3  # not the identity's determinant everywhere


def test_a_nifti_pair_with_masks_is_registered_as_adacs_register_does(stack, image_pair, model_dir, tmp_path):
    files = {role: (path.name, path.read_bytes()) for role, path in image_pair.items()}
    response = stack.client.post("/v1/registrations", files=files)
    assert response.status_code == 202, response.text
    job = wait_for(stack, response.json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.worker.tail()}"
    assert set(job["outputs"]) == {"displacement", "inverse_displacement", "jacobian", "warped", "warped_mask",
                                   "report"}  # and preview.png, drawn when first downloaded (below)
    assert job["model_version"] == f"{MODEL}:1" and "dice" in job["report"] and job["timings_s"]["total"] > 0

    local = local_register(model_dir, tmp_path / "local", **image_pair)
    for segment, name in NIFTI_OUTPUTS.items():
        response = stack.client.get(f"/v1/registrations/{job['id']}/{segment}")
        assert response.status_code == 200 and response.content == (local / name).read_bytes(), name
    cli_report = json.loads((local / "report.json").read_text(encoding="utf-8"))
    assert {key: job["report"][key] for key in SCORES} == {key: cli_report[key] for key in SCORES}
    # Equal files are not two identity warps agreeing: the model moved the mask.
    assert not np.array_equal(read(local / "warped_mask.nii.gz"), read(image_pair["moving_mask"]))
    check_inverse_and_jacobian(*(local / NIFTI_OUTPUTS[segment] for segment in ("displacement",
                                                                                  "inverse-displacement", "jacobian")))
    preview = stack.client.get(f"/v1/registrations/{job['id']}/preview.png")  # a worker draws it, the API waits
    assert preview.status_code == 200, f"{preview.text}\n{stack.worker.tail()}"
    assert preview.headers["content-type"] == "image/png" and preview.content.startswith(b"\x89PNG")
    listed = stack.client.get(f"/v1/registrations/{job['id']}").json()["outputs"]["preview"]
    assert listed["sha256"] == hashlib.sha256(preview.content).hexdigest() == preview.headers["etag"].strip('"')


def test_a_dicom_series_zip_as_moving_finishes_within_wait(stack, dicom_pair, model_dir, tmp_path):
    files = {role: (path.name, path.read_bytes()) for role, path in dicom_pair.items()}
    response = stack.client.post("/v1/registrations", files=files, params={"wait": 60})
    assert response.status_code == 200, response.text  # the worker is warm (see stack): the job ends in the wait
    job = response.json()
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.worker.tail()}"
    assert job["inputs"] == ["fixed", "moving"] and "warped_mask" not in job["outputs"]
    missing = stack.client.get(f"/v1/registrations/{job['id']}/warped-mask")
    assert missing.status_code == 404 and "no moving_mask" in missing.json()["detail"]

    local = local_register(model_dir, tmp_path / "local", **dicom_pair)
    warped = download(stack, job["id"], "warped-image", tmp_path / "warped.nii.gz")
    assert warped.shape == (3, 32, 32)
    np.testing.assert_allclose(warped, read(local / "warped.nii.gz"), atol=1e-4)
    displacement = download(stack, job["id"], "displacement", tmp_path / "displacement.nii.gz")
    np.testing.assert_allclose(displacement, read(local / "displacement.nii.gz"), atol=1e-5)
    assert stack.client.delete(f"/v1/registrations/{job['id']}").status_code == 204


def test_a_refined_stack_is_refined_as_adacs_register_refines_it(stack, dicom_pair, model_dir, tmp_path):
    files = {role: (path.name, path.read_bytes()) for role, path in dicom_pair.items()}
    response = stack.client.post("/v1/registrations", files=files, params={"wait": 60},
                                 data={"refine_steps": "5", "refine_time_limit_s": "60"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.worker.tail()}"
    record = job["report"]["refine"]
    assert (record["steps_done"], record["samples"], record["time_limit_s"]) == (5, 3, 60.0)  # 3 slices, 1 batch

    local = local_register(model_dir, tmp_path / "local", "--refine-steps", "5", **dicom_pair)
    displacement = download(stack, job["id"], "displacement", tmp_path / "displacement.nii.gz")
    np.testing.assert_allclose(displacement, read(local / "displacement.nii.gz"), atol=1e-4)


def test_a_cine_is_tracked_by_the_worker_as_adacs_register_cine_does(stack, model_dir, tmp_path):
    """A 2-D cine (one slice, 4 frames) through the real worker: per-frame progress recorded, and the 4-D
    outputs equal what ``adacs register-cine`` writes locally with the same model and files."""
    import nibabel as nib

    from models.data.phantom_cine import make_phantom_cine

    cine = make_phantom_cine(frames=4, slices=1, size=32, seed=5)
    nib.save(nib.Nifti1Image(np.transpose(cine.images, (3, 2, 1, 0)), np.eye(4)), str(tmp_path / "cine.nii.gz"))
    nib.save(nib.Nifti1Image(np.transpose(cine.masks[1], (2, 1, 0)), np.eye(4)), str(tmp_path / "mask.nii.gz"))
    files = {"cine": ("cine.nii.gz", (tmp_path / "cine.nii.gz").read_bytes()),
             "reference_mask": ("mask.nii.gz", (tmp_path / "mask.nii.gz").read_bytes())}
    response = stack.client.post("/v1/cine-registrations", files=files,
                                 data={"reference_frame": "1", "labels": '{"1": "LV"}'})
    assert response.status_code == 202, response.text
    url = f"/v1/cine-registrations/{response.json()['id']}"
    deadline = time.monotonic() + TIMEOUT_S
    while (job := stack.client.get(url).json())["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.worker.tail()}"
    assert (job["progress"]["frame"], job["progress"]["frames"], job["reference_frame"]) == (4, 4, 1)
    assert job["report"]["lv"]["name"] == "LV" and len(job["report"]["labels"]["1"]["area_mm2"]) == 4

    local = tmp_path / "local"
    assert adacs(["register-cine", "--model", str(model_dir), "--cine", str(tmp_path / "cine.nii.gz"),
                  "--reference-mask", str(tmp_path / "mask.nii.gz"), "--reference-frame", "1", "--out", str(local),
                  "--labels", '{"1": "LV"}', "--device", "cpu"]) == 0
    for segment, name in (("displacements", "displacements.nii.gz"), ("warped-masks", "warped_masks.nii.gz"),
                          ("volumes.csv", "volumes.csv")):
        response = stack.client.get(f"{url}/{segment}")
        assert response.status_code == 200 and response.content == (local / name).read_bytes(), name
    masks = read(local / "warped_masks.nii.gz")  # (t, 1, y, x)
    assert np.array_equal(masks[1, 0], cine.masks[1, 0]) and not np.array_equal(masks[0, 0], cine.masks[1, 0])

"""GET /v1/registrations/{id}/warped-mask-seg over real HTTP, on SQLite and PostgreSQL.

The upload and the download go through the API as a user's would; the job in between is run by the
worker's own task body in this process (``run_registration``, as tests/worker do), so no broker or
Celery worker is needed. The fixed series is the pydicom-written CT series of tests/test_dicom_seg.py,
whose pixels name their instance, so the SEG's frames are checked against the downloaded NIfTI mask
slice by source instance.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from models.io.image import LABEL, Image
from models.io.readers import read_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ has no packages
from test_dicom_seg import slice_of_instance, write_ct_series  # noqa: E402

MODEL = "segreg"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(serve_tiny_default):
    return serve_tiny_default(MODEL, max_upload_bytes=MiB)


def run_job(live, job_id: str) -> dict:
    """The worker's task body on this job, then the job as the API shows it."""
    from worker.tasks.registration import run_registration

    run_registration(job_id, settings=live.settings)
    job = live.client.get(f"/v1/registrations/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    return job


def nifti_bytes(image: Image, folder: Path, name: str) -> bytes:
    sitk.WriteImage(image.to_sitk(), str(folder / name))
    return (folder / name).read_bytes()


@pytest.fixture(scope="module")
def dicom_upload(tmp_path_factory) -> dict:
    """A 4-slice CT series as a zip (fixed), a moving image and a two-label mask as NIfTI on its grid."""
    folder = tmp_path_factory.mktemp("seg-upload")
    uids = write_ct_series(folder / "ct", shape=(4, 32, 32))
    fixed = read_image(folder / "ct")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for file in sorted((folder / "ct").iterdir()):
            zf.write(file, f"CT/{file.name}")
    mask = np.zeros(fixed.array.shape, np.uint8)
    mask[1, 8:20, 10:22] = 1
    mask[2, 6:14, 4:12] = 2
    moving = np.random.default_rng(3).random(fixed.array.shape).astype(np.float32)
    files = {"fixed": ("fixed.zip", buffer.getvalue()),
             "moving": ("moving.nii.gz", nifti_bytes(Image(moving, fixed.geometry), folder, "moving.nii.gz")),
             "moving_mask": ("moving_mask.nii.gz", nifti_bytes(Image(mask, fixed.geometry, LABEL), folder,
                                                               "moving_mask.nii.gz"))}
    return {"files": files, "uids": uids, "where": slice_of_instance(fixed, uids)}


def test_a_dicom_fixed_series_with_a_mask_gives_a_seg_on_its_instances(server, dicom_upload, tmp_path):
    response = server.client.post("/v1/registrations", files=dicom_upload["files"],
                                  data={"labels": '{"1": "right ventricle", "2": "myocardium"}'})
    assert response.status_code == 202, response.text
    job = run_job(server, response.json()["id"])
    assert job["outputs"]["warped_mask_seg"]["url"] == f"/v1/registrations/{job['id']}/warped-mask-seg"
    assert job["report"]["dicom_seg"] == {"written": True}

    response = server.client.get(f"/v1/registrations/{job['id']}/warped-mask-seg")
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    assert response.headers["content-disposition"] == 'attachment; filename="warped_mask_seg.dcm"'
    (tmp_path / "seg.dcm").write_bytes(response.content)
    mask = server.client.get(f"/v1/registrations/{job['id']}/warped-mask")
    (tmp_path / "warped_mask.nii.gz").write_bytes(mask.content)
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped_mask.nii.gz")))

    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert pydicom.dcmread(tmp_path / "seg.dcm").Modality == "SEG"
    numbers = seg.segment_numbers
    values = [int(seg.get_segment_description(n).SegmentDescription.split()[2]) for n in numbers]
    names = {v: seg.get_segment_description(n).segment_label for n, v in zip(numbers, values)}
    assert values == sorted(np.unique(warped[warped > 0]).tolist())
    assert names == {v: {1: "right ventricle", 2: "myocardium"}[v] for v in values}
    # Slice by source instance, the SEG is the NIfTI mask the same job wrote.
    uids, where = dicom_upload["uids"], dicom_upload["where"]
    by_instance = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                                    assert_missing_frames_are_empty=True)
    expected = np.stack([np.searchsorted([0, *values], warped[where[uid]]) for uid in uids])
    np.testing.assert_array_equal(by_instance, expected)


def test_a_nifti_job_has_no_seg_and_says_why(server, tmp_path):
    rng, mask = np.random.default_rng(4), np.zeros((32, 32), np.uint8)
    mask[8:20, 10:22] = 1
    files = {}
    for role, array in (("fixed", rng.random((32, 32), np.float32)), ("moving", rng.random((32, 32), np.float32)),
                        ("moving_mask", mask)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{role}.nii.gz"))
        files[role] = (f"{role}.nii.gz", (tmp_path / f"{role}.nii.gz").read_bytes())
    response = server.client.post("/v1/registrations", files=files)
    assert response.status_code == 202, response.text
    job = run_job(server, response.json()["id"])
    assert "warped_mask" in job["outputs"] and "warped_mask_seg" not in job["outputs"]
    assert "dicom_seg" not in job["report"]
    missing = server.client.get(f"/v1/registrations/{job['id']}/warped-mask-seg")
    assert missing.status_code == 404 and missing.json()["code"] == "no_output"
    assert "made only for a DICOM fixed image" in missing.json()["detail"]

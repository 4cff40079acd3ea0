"""worker/tasks/registration.py: the task body as a plain function, on SQLite and PostgreSQL, no broker."""

import json

import pytest
import SimpleITK as sitk

from service.db import JobStatus
from service.storage import LocalArtifactStore
from worker.jobs import JobMonitor
from worker.model_cache import MODEL_CACHE
from worker.tasks.registration import run_registration

FILES = {"displacement": "displacement.nii.gz", "inverse_displacement": "inverse_displacement.nii.gz",
         "jacobian": "jacobian.nii.gz", "warped": "warped.nii.gz", "warped_mask": "warped_mask.nii.gz",
         "report": "report.json"}  # preview.png is drawn when first asked for (test_worker_jobs)


def read_array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(autouse=True)
def empty_model_cache():
    MODEL_CACHE.clear()
    yield
    MODEL_CACHE.clear()


def test_a_job_succeeds_with_every_output_in_the_store_and_its_folder(settings, register_model, create_job,
                                                                      load_job, monkeypatch):
    """The worker's own part around ``register_files``; that the files are the CLI's, byte for byte, is
    tests/e2e/test_registration_flow.py's first test."""
    sha = register_model(settings)
    job_id = create_job(settings)
    phases, progress = [], JobMonitor.progress

    def record(monitor: JobMonitor, **fields) -> None:
        phases.append(fields)
        progress(monitor, **fields)

    monkeypatch.setattr(JobMonitor, "progress", record)
    run_registration(job_id, settings=settings)

    job = load_job(settings, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 1 and job.error is None and job.progress == {"phase": "succeeded", "step": 4, "steps": 4}
    assert job.started_at <= job.heartbeat_at <= job.finished_at
    assert phases == [{"phase": phase, "step": step, "steps": 4} for step, phase in
                      enumerate(("loading_model", "reading_inputs", "registering", "writing_outputs"), 1)]
    result = job.result
    assert result["model"] == {"ref": "tiny:1", "name": "tiny", "version": 1, "sha256": sha}
    assert set(result["timings_s"]) == {"load_model", "read_inputs", "register", "write_outputs", "total"}
    assert result["device"] == "cpu" and result["attempt"] == 1

    # Every output is an object of the store, and its copy in job_dir/outputs/ has the same bytes.
    store = LocalArtifactStore(settings.artifact_dir)
    outputs_dir = store.job_dir(job_id) / "outputs"
    assert {role: o["file"] for role, o in result["outputs"].items()} == FILES
    assert sorted(p.name for p in outputs_dir.iterdir()) == sorted(FILES.values())
    for output in result["outputs"].values():
        assert output["key"] == store.key_of(output["sha256"])
        assert store.path_of(output["sha256"]).read_bytes() == (outputs_dir / output["file"]).read_bytes()
    report = json.loads((outputs_dir / "report.json").read_text(encoding="utf-8"))
    assert report == result["report"] and (report["model"], report["model_sha256"]) == ("tiny:1", sha)
    assert set(report["dice"]) == {"1", "2"} and 0.0 <= report["folding_pct"] <= 100.0


def test_a_corrupt_input_fails_naming_the_file_and_writes_no_outputs(settings, register_model, create_job,
                                                                     load_job, image_pair, tmp_path):
    register_model(settings)
    corrupt = tmp_path / "moving.nii.gz"
    corrupt.write_bytes(image_pair["moving"].read_bytes()[:200])  # a cut transfer
    job_id = create_job(settings, files=dict(image_pair, moving=corrupt))
    run_registration(job_id, settings=settings)

    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert job.error.startswith("unreadable_image: inputs/moving.nii.gz: ")
    error = job.result["error"]
    assert error["code"] == "unreadable_image" and error["http_status"] == 400
    assert error["message"].startswith("inputs/moving.nii.gz: ") and "traceback" not in error
    assert str(settings.artifact_dir) not in job.error  # no server paths in what users read
    assert "outputs" not in job.result
    job_dir = LocalArtifactStore(settings.artifact_dir).job_dir(job_id)
    assert sorted(p.name for p in job_dir.iterdir()) == ["inputs"]  # no outputs, no staging left behind


def beyond_float32(path, out):
    """The image as float64 with one voxel finite there but Inf once cast to float32, on the same grid."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat64)
    array = sitk.GetArrayFromImage(image)
    array.flat[0] = 1e39
    copy = sitk.GetImageFromArray(array)
    copy.CopyInformation(image)
    sitk.WriteImage(copy, str(out))
    return out


def off_grid(path, out):
    """The mask with its spacing tripled: same voxels, another grid than its image's."""
    image = sitk.ReadImage(str(path))
    image.SetSpacing(tuple(3.0 * s for s in image.GetSpacing()))
    sitk.WriteImage(image, str(out))
    return out


@pytest.mark.parametrize(("role", "make", "code"), [
    ("fixed", beyond_float32, "values_out_of_range: inputs/fixed.nii.gz: has 1 voxels beyond ±3.403e+38"),
    ("moving_mask", off_grid, "mask_geometry: inputs/moving_mask.nii.gz: the mask grid"),
])
def test_inputs_the_api_would_refuse_still_fail_typed_in_the_worker(settings, register_model, create_job, load_job,
                                                                    image_pair, tmp_path, role, make, code):
    """Defence in depth: a job row written past the API (or files changed since) fails with the API's error."""
    register_model(settings)
    files = dict(image_pair, **{role: make(image_pair[role], tmp_path / f"{role}.nii.gz")})
    job_id = create_job(settings, files=files)
    run_registration(job_id, settings=settings)

    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.error.startswith(code), job.error
    assert job.result["error"]["http_status"] == 422 and "infinite" not in job.error  # once "infinite voxels"
    assert "outputs" not in job.result


def test_a_missing_job_is_no_error(settings):
    run_registration("00000000-0000-4000-8000-000000000000", settings=settings)


def test_a_finished_job_is_left_alone(settings, register_model, create_job, load_job):
    register_model(settings)
    job_id = create_job(settings)
    run_registration(job_id, settings=settings)
    first = load_job(settings, job_id)
    run_registration(job_id, settings=settings)  # a redelivered message
    again = load_job(settings, job_id)
    assert again.status == JobStatus.SUCCEEDED and again.attempts == 1
    assert (again.finished_at, again.result) == (first.finished_at, first.result)


def test_the_model_is_loaded_once_for_two_jobs(settings, register_model, create_job, load_job):
    register_model(settings)
    jobs = [create_job(settings), create_job(settings, model="tiny:1")]
    for job_id in jobs:
        run_registration(job_id, settings=settings)
    assert [load_job(settings, j).status for j in jobs] == [JobStatus.SUCCEEDED] * 2
    info = MODEL_CACHE.info()
    assert (info.loads, info.hits, info.size) == (1, 1, 1)


def test_refine_params_reach_register_images_and_the_report_carries_the_record(settings, register_model, create_job,
                                                                               load_job):
    register_model(settings)
    job_id = create_job(settings, refine_steps=4, refine_time_limit_s=60.0)
    default_id = create_job(settings)  # no refine params: the card (which has no inference key) says 0 steps
    for one in (job_id, default_id):
        run_registration(one, settings=settings)
    job, default = load_job(settings, job_id), load_job(settings, default_id)
    assert job.status == default.status == JobStatus.SUCCEEDED, (job.error, default.error)
    record = job.result["report"]["refine"]
    assert (record["steps_requested"], record["steps_done"], record["time_limit_s"]) == (4, 4, 60.0)
    assert record["stopped_by"] == "steps" and record["image_term_after"] <= record["image_term_before"]
    assert default.result["report"]["refine"]["steps_done"] == 0
    store = LocalArtifactStore(settings.artifact_dir)
    refined, plain = (read_array(store.job_dir(one) / "outputs" / "displacement.nii.gz")
                      for one in (job_id, default_id))
    assert refined.tobytes() != plain.tobytes()


@pytest.mark.parametrize("params", [{"refine_steps": -1}, {"refine_steps": "4"}, {"refine_steps": True},
                                    {"refine_time_limit_s": 0}, {"refine_time_limit_s": "30"}])
def test_bad_refine_params_fail_the_job_as_invalid_params(settings, register_model, create_job, load_job, params):
    register_model(settings)
    job_id = create_job(settings, **params)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.error.startswith("invalid_params: params: refine_steps is an "
                                                                   "integer >= 0"), job.error

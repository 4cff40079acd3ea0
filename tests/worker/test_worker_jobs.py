"""worker/jobs.py and the task's outcomes other than success: cancel, give up, retry, refuse, on both backends."""

import time

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from service.db import Job, JobKind, JobStatus, session_scope
from service.storage import LocalArtifactStore
from worker.jobs import JobMonitor, JobStopped, claim_job, finish_job
from worker.preview import write_preview
from worker.tasks import registration
from worker.tasks.registration import run_registration


def set_job(engine, job_id, **values):
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@pytest.fixture
def engine(settings):
    from service.db import get_engine

    return get_engine(settings.database_url, settings.db_busy_timeout_ms)


def test_a_cancelled_job_ends_cancelled_without_running(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    set_job(engine, job_id, cancel_requested=True)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.result) == (JobStatus.CANCELLED, 0, None)


def test_a_cancel_while_running_stops_the_job(settings, engine, register_model, create_job, load_job, monkeypatch):
    import models.register

    register_model(settings)
    job_id = create_job(settings)
    read_inputs = models.register.read_registration_inputs

    def read_then_cancel(*args, **kwargs):
        set_job(engine, job_id, cancel_requested=True)  # what the API's DELETE does
        return read_inputs(*args, **kwargs)

    monkeypatch.setattr(models.register, "read_registration_inputs", read_then_cancel)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.result) == (JobStatus.CANCELLED, 1, None)
    assert not (LocalArtifactStore(settings.artifact_dir).job_dir(job_id) / "outputs").exists()


def test_a_job_that_used_up_its_attempts_fails(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    set_job(engine, job_id, status=JobStatus.RUNNING, attempts=settings.max_attempts)  # each delivery crashed
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.attempts == settings.max_attempts
    assert job.error.startswith(f"too_many_attempts: gave up after {settings.max_attempts} attempts")


def test_a_transient_database_error_is_raised_for_celery_and_the_retry_claims_the_job(
        settings, register_model, create_job, load_job, monkeypatch):
    register_model(settings)
    job_id = create_job(settings)
    import models.register

    def database_gone(*args, **kwargs):
        raise OperationalError("UPDATE jobs ...", {}, Exception("server closed the connection unexpectedly"))

    real = models.register.register_images
    monkeypatch.setattr(models.register, "register_images", database_gone)
    with pytest.raises(OperationalError):
        run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)  # for the retry (or the reaper) to take up
    monkeypatch.setattr(models.register, "register_images", real)
    run_registration(job_id, settings=settings)  # Celery's retry
    job = load_job(settings, job_id)
    assert (job.status, job.attempts, job.result["attempt"]) == (JobStatus.SUCCEEDED, 2, 2)


@pytest.mark.parametrize(("params", "code", "message"), [
    ({"model": "nope"}, "model_not_found", "no model named 'nope'; registered models: tiny"),
    ({"model": "tiny:7"}, "model_not_found", "model 'tiny' has no version 7"),
    ({"model": "tiny:x"}, "invalid_model_reference", "invalid model reference 'tiny:x'"),
    ({"inputs": {"fixed": "inputs/fixed.nii.gz", "moving": "../../x.nii.gz"}}, "invalid_params",
     "input path '../../x.nii.gz' leaves the job's folder"),
    ({"inputs": {"fixed": "inputs/fixed.nii.gz"}}, "invalid_params", "params['inputs'] must name at least"),
])
def test_bad_params_fail_with_a_code_and_a_message(settings, register_model, create_job, load_job, params, code,
                                                   message):
    register_model(settings)
    job_id = create_job(settings, **params)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.result["error"]["code"] == code
    assert job.error.startswith(f"{code}: {message}"), job.error


def test_a_mask_on_another_grid_is_refused_naming_the_file(settings, register_model, create_job, load_job,
                                                           image_pair, tmp_path):
    import SimpleITK as sitk

    register_model(settings)
    mask = sitk.ReadImage(str(image_pair["moving_mask"]))
    mask.SetSpacing((2.0, 2.0))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    job_id = create_job(settings, files=dict(image_pair, moving_mask=tmp_path / "mask.nii.gz"))
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.result["error"]["code"] == "mask_geometry" and job.result["error"]["http_status"] == 422
    assert "inputs/moving_mask.nii.gz" in job.error


def test_an_unexpected_error_fails_the_job_with_a_traceback_and_is_not_raised(
        settings, register_model, create_job, load_job, monkeypatch):
    register_model(settings)
    job_id = create_job(settings)
    monkeypatch.setattr(registration, "store_outputs", lambda *a, **k: 1 / 0)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and job.error == "internal_error: ZeroDivisionError: division by zero"
    assert "write_outputs" in job.result["error"]["traceback"]
    job_dir = LocalArtifactStore(settings.artifact_dir).job_dir(job_id)
    assert sorted(p.name for p in job_dir.iterdir()) == ["inputs"]


def test_the_preview_is_drawn_on_demand_from_the_files_and_its_failure_leaves_the_job_succeeded(
        settings, register_model, create_job, load_job, image_pair, monkeypatch, caplog):
    """Not drawn with the job (it costs more than a 2D registration); ``draw_preview`` makes it from the
    job's files, with the arrays the registration had in memory."""
    from models.artifact import load_artifact
    from models.register import register_files
    from worker.preview_data import gather

    sha = register_model(settings)
    job_id = create_job(settings)
    run_registration(job_id, settings=settings)
    job = load_job(settings, job_id)
    outputs = LocalArtifactStore(settings.artifact_dir).job_dir(job_id) / "outputs"
    assert job.status == JobStatus.SUCCEEDED and "preview" not in job.result["outputs"]
    assert not (outputs / "preview.png").exists()

    drawn = {}

    def recording(path, done):
        drawn["data"] = gather(done)
        return write_preview(path, done)

    monkeypatch.setattr(registration, "write_preview", recording)
    assert registration.draw_preview(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.result["outputs"]["preview"]["file"] == "preview.png" and job.status == JobStatus.SUCCEEDED
    assert (outputs / "preview.png").read_bytes().startswith(b"\x89PNG") and not list(outputs.glob(".*"))
    assert not registration.draw_preview(job_id, settings=settings), "drawn once"

    model = load_artifact(LocalArtifactStore(settings.artifact_dir).checkout_dir(sha), device="cpu")
    in_memory = gather(register_files(lambda: model, image_pair, outputs.parent / "again", model_fields={}))
    from_files = drawn["data"]
    for name in ("fixed", "warped", "jacobian", "moving_mask", "warped_mask", "fixed_mask"):
        np.testing.assert_allclose(getattr(from_files, name), getattr(in_memory, name), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(from_files.disp, in_memory.disp, atol=1e-4)  # via the mm file in float32
    assert (from_files.names, from_files.dice) == (in_memory.names, in_memory.dice)

    monkeypatch.setattr(registration, "write_preview", lambda *a, **k: 1 / 0)
    job_id = create_job(settings)
    run_registration(job_id, settings=settings)
    with caplog.at_level("ERROR"):
        monkeypatch.setattr(registration, "get_settings", lambda: settings)
        registration.preview.run(job_id)  # the Celery task's body: logs, never raises
    job = load_job(settings, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.error is None and "preview" not in job.result["outputs"]
    assert "could not be drawn" in caplog.text
    assert not registration.draw_preview(create_job(settings), settings=settings), "a queued job has none"


def test_a_claim_is_won_once_and_an_overtaken_attempt_writes_nothing(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    first = claim_job(engine, job_id, JobKind.REGISTRATION, max_attempts=3)
    second = claim_job(engine, job_id, JobKind.REGISTRATION, max_attempts=3)  # e.g. the reaper re-enqueued it
    assert (first.attempt, second.attempt) == (1, 2)
    with pytest.raises(JobStopped, match="overtaken"), JobMonitor(engine, first, 60, 0) as monitor:
        monitor.progress(phase="registering")
    assert not finish_job(engine, first, JobStatus.SUCCEEDED, result={"stale": True})
    assert finish_job(engine, second, JobStatus.SUCCEEDED, result={"fresh": True})
    assert load_job(settings, job_id).result == {"fresh": True}
    assert claim_job(engine, job_id, JobKind.TRAINING, max_attempts=3) is None


def test_the_heartbeat_thread_refreshes_the_row_with_pending_progress(settings, engine, create_job, load_job):
    job_id = create_job(settings)
    claim = claim_job(engine, job_id, JobKind.REGISTRATION, max_attempts=3)
    claimed_at = load_job(settings, job_id).heartbeat_at
    with JobMonitor(engine, claim, heartbeat_interval_s=0.05, progress_min_interval_s=3600) as monitor:
        monitor.progress(phase="registering", step=3, steps=4)  # written now (the first write is due)
        monitor.progress(phase="writing_outputs", step=4, steps=4)  # throttled: left to the thread
        for _ in range(100):
            job = load_job(settings, job_id)
            if job.progress.get("phase") == "writing_outputs":
                break
            time.sleep(0.05)
    assert job.progress == {"phase": "writing_outputs", "step": 4, "steps": 4}
    assert job.heartbeat_at > claimed_at

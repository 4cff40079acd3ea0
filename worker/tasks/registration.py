"""Task ``adacs.registration.run(job_id)``: register one image pair and record the outcome on its job.

The contract with the API
-------------------------
Before sending the task, the API stores the uploads in the job's folder,
``store.job_dir(job_id)/inputs/``, as ``fixed.<ext>``, ``moving.<ext>`` and optionally
``moving_mask.<ext>`` and ``fixed_mask.<ext>`` (the extension the upload had: ``.nii.gz``,
``.mha``, ``.zip``...), then commits a ``registration`` job row (``queued``) whose ``params``
(``service.jobs.registration.RegistrationParams``, which both sides parse and write) are::

    {"model": "cardiac" | "cardiac:3" | "cardiac@staging",   # default: ADACS_DEFAULT_MODEL
     "inputs": {"fixed": "inputs/fixed.nii.gz", "moving": "inputs/moving.nii.gz",
                "moving_mask": "inputs/moving_mask.nii.gz",   # optional
                "fixed_mask": "inputs/fixed_mask.nii.gz"},    # optional
     "fixed_series": "1.2.840...", "moving_series": None,    # optional: a DICOM series (UID or prefix)
     "fixed_frame": None, "moving_frame": 0,                 # optional: the frame of a 4D image
     "refine_steps": 100, "refine_time_limit_s": 30.0}       # optional: test-time refinement

Input paths are relative to the job's folder and must stay inside it. ``refine_steps`` (an integer
>= 0; the API allows at most 2000) and ``refine_time_limit_s`` (seconds > 0; the API allows at most
300) are absent, or None, when the user gave none: then the model card's ``inference`` defaults
apply (``models.refine.refine_config``; 0 steps without them), as in ``adacs register``. Only after
the commit does the API send ``REGISTRATION_TASK`` with ``args=[job_id]`` to the ``inference`` queue.

What the worker writes
----------------------
While running: ``status="running"``, ``attempts`` (one per delivery), ``started_at``, ``worker``,
``heartbeat_at`` and ``progress={"phase": ..., "step": k, "steps": 4}`` with phases
``loading_model``, ``reading_inputs``, ``registering``, ``writing_outputs``.

On success, ``status="succeeded"``, ``finished_at`` and ``result``
(``service.jobs.registration.RegistrationResult``)::

    {"model": {"ref": "cardiac:3", "name": "cardiac", "version": 3, "sha256": "..."},
     "outputs": {ROLE: {"file": NAME, "sha256": "...", "key": "objects/ab/...", "size_bytes": N}},
     "report": {...},            # report.json: dice, dice_before (with a fixed mask), folding_pct, refine, ...
     "timings_s": {"load_model", "read_inputs", "register", "write_outputs", "total"},
     "device": "cuda" | "cpu", "attempt": 1}

with ROLE -> NAME: ``displacement`` -> ``displacement.nii.gz``, ``warped`` -> ``warped.nii.gz``,
``warped_mask`` -> ``warped_mask.nii.gz`` (with a moving mask), ``warped_mask_seg`` ->
``warped_mask_seg.dcm`` (with a moving mask and a DICOM fixed image), ``report`` -> ``report.json``,
``preview`` -> ``preview.png`` (added to ``outputs`` just after the job succeeded: the picture is drawn
off the client's path, see :func:`attach_preview`). The files are objects of the artifact store (serve them with
``store.open(sha256)``); a copy sits in ``job_dir/outputs/``, which appears whole or not at all.
They are the files ``adacs register`` writes, by the same pipeline (``models.register.register_files``,
whose phases are the progress above).

On failure, ``status="failed"``, ``error="<code>: <message>"`` and
``result={"error": {"code", "message", "http_status", "details"[, "traceback"]}}``, and no outputs.
Bad input (``models.io.errors.ImageError`` with its own code, ``invalid_input``,
``model_not_found``, ``invalid_model_reference``, ``invalid_params``) names the file as
``inputs/moving.nii.gz`` and is never retried; anything unexpected is ``internal_error`` with a
short traceback, also not retried. Only a database that went away is retried (Celery, with
backoff; see ``worker.failures``). A job with ``cancel_requested`` ends ``cancelled``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from models.io.readers.inputs import read_registration_inputs
from service.core.config import Settings, get_settings
from service.db import Job, JobKind, JobStatus, get_engine, session_scope
from service.jobs.registration import OutputFile, RegistrationParams, RegistrationResult
from service.jobs.schema import InvalidJobParams, ModelVersionRef
from service.jobs.tasks import PREVIEW_TASK, REGISTRATION_TASK
from service.registry import resolve
from service.storage import ArtifactStore, LocalArtifactStore
from worker.celery_app import app
from worker.failures import TRANSIENT_ERRORS
from worker.jobs import Claim, JobMonitor, add_output, run_job
from worker.model_cache import MODEL_CACHE, default_device
from worker.preview import write_preview
from worker.tasks.job_task import job_task

if TYPE_CHECKING:  # models.register imports torch; the task imports it when it runs
    from models.register import RegisteredFiles

__all__ = ["run_registration", "run", "write_outputs", "attach_preview", "draw_preview", "preview", "PREVIEW"]

log = logging.getLogger(__name__)
PREVIEW, PREVIEW_ROLE = "preview.png", "preview"
# The phases of models.register.register_files, in order, and the key of each one's time in
# ``result["timings_s"]`` (a contract with clients: see the module docstring).
TIMED_PHASES = {"loading_model": "load_model", "reading_inputs": "read_inputs", "registering": "register",
                "writing_outputs": "write_outputs"}


def input_paths(job_dir: Path, inputs: Mapping[str, str]) -> dict[str, Path]:
    """The inputs' files by role (``params.inputs``); a path that leaves the job's folder breaks the contract."""
    paths = {}
    for role, relative in inputs.items():
        path = (job_dir / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(job_dir.resolve()):
            raise InvalidJobParams(f"input path {relative!r} leaves the job's folder")
        paths[role] = path
    return paths


def store_outputs(store: ArtifactStore, paths: dict[str, Path]) -> dict[str, OutputFile]:
    outputs = {}
    for role, path in paths.items():
        sha = store.put_file(path)
        outputs[role] = OutputFile(file=path.name, sha256=sha, key=store.key_of(sha), size_bytes=path.stat().st_size)
    return outputs


def publish(staging: Path, outputs_dir: Path) -> None:
    """Replace ``outputs_dir`` by the complete ``staging`` folder (a rename: no half-written folder)."""
    shutil.rmtree(outputs_dir, ignore_errors=True)
    staging.rename(outputs_dir)


def write_outputs(store: ArtifactStore, job_dir: Path, staging: Path, done: RegisteredFiles,
                  before_publish: Callable[[], None] = lambda: None) -> dict[str, OutputFile]:
    """The CLI's files (``register_files`` wrote them into ``staging``) into the store and then, by
    renaming ``staging``, ``job_dir/outputs/``. The preview comes after the job succeeded
    (:func:`attach_preview`).

    ``before_publish`` may raise to keep ``outputs/`` as it is (the job was cancelled or overtaken).
    """
    outputs = store_outputs(store, done.paths)
    before_publish()
    publish(staging, job_dir / "outputs")
    return outputs


def attach_preview(claim: Claim, engine: Engine, store: ArtifactStore, done: RegisteredFiles) -> None:
    """Draw ``preview.png`` of a succeeded job and add it to its outputs (store, ``outputs/``, result).

    Drawn after the job is marked succeeded, because a client waiting for the displacement should not
    wait for a picture (about 0.1 s for a 2D pair, 1 s for ten slices); until it is attached its
    download is a 404 that says so. Written beside the outputs under a hidden name, then renamed.
    """
    outputs_dir = store.job_dir(claim.job_id) / "outputs"
    drawing = write_preview(outputs_dir / f".{PREVIEW}.tmp", done)
    path = drawing.replace(outputs_dir / PREVIEW)
    entry = store_outputs(store, {"preview": path})["preview"]
    if not add_output(engine, claim, "preview", entry.to_row()):
        path.unlink(missing_ok=True)  # deleted or expired meanwhile: leave nothing behind


def draw_preview(job_id: str, *, settings: Settings | None = None) -> bool:
    """Draw ``preview.png`` of succeeded registration ``job_id`` from its files and attach it.

    Drawn when a client first asks for it (the API sends :data:`PREVIEW_TASK`), not with every job:
    the picture costs more worker time than a 2D registration itself (about 0.15 s against 0.1 s),
    and most jobs of a study are never looked at. False when there is nothing to draw: the job is
    gone, not succeeded, expired, or already has its preview (a second request raced the first).
    """
    settings = settings or get_settings()
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    store = LocalArtifactStore(settings.artifact_dir)
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != JobKind.REGISTRATION or job.status != JobStatus.SUCCEEDED \
                or job.expired_at is not None or PREVIEW_ROLE in (job.result or {}).get("outputs", {}):
            return False
        claim = Claim(job_id, job.attempts, dict(job.params or {}))
        report = dict((job.result or {}).get("report") or {})
    from models.outputs import read_registration_outputs
    from models.register import RegisteredFiles

    params = RegistrationParams.parse(claim.params)
    job_dir = store.job_dir(job_id)
    images = read_registration_inputs(input_paths(job_dir, params.inputs), series=params.series,
                                      frames=params.frames, max_voxels=settings.max_voxels)
    done = RegisteredFiles(read_registration_outputs(job_dir / "outputs", report), images, {}, report)
    attach_preview(claim, engine, store, done)
    return True


@app.task(name=PREVIEW_TASK, autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60,
          retry_jitter=True, max_retries=5)
def preview(job_id: str) -> None:
    """Celery's wrapper of :func:`draw_preview`; a picture that cannot be drawn is logged, never raised."""
    try:
        draw_preview(job_id)
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        log.exception("registration %s: its preview could not be drawn", job_id)


def resolve_model(engine: Engine, ref: str) -> ModelVersionRef:
    with session_scope(engine) as session:
        version = resolve(session, ref)
        return ModelVersionRef(ref=version.ref, name=version.model.name, version=version.version,
                               sha256=version.sha256)


class Phases:
    """An ``on_phase`` hook: each phase (a key of ``timed``, in order) becomes the job's progress and is
    timed under its ``timed`` name; :meth:`frames` adds how many frames of a cine are done."""

    def __init__(self, monitor: JobMonitor, timed: Mapping[str, str] = TIMED_PHASES) -> None:
        self.monitor, self.timed, self.start, self.marks = monitor, dict(timed), time.perf_counter(), {}
        self.phase, self.counts = next(iter(self.timed)), {}

    def _step(self) -> None:
        steps = list(self.timed)
        self.monitor.progress(phase=self.phase, step=steps.index(self.phase) + 1, steps=len(steps), **self.counts)

    def __call__(self, phase: str) -> None:
        self.phase = phase
        self._step()
        self.marks[phase] = time.perf_counter()

    def frames(self, done: int, total: int) -> None:
        """Frames done of ``total``; kept in the progress of the later phases too."""
        self.counts = {"frame": done, "frames": total}
        self._step()

    def timings_s(self) -> dict[str, float]:
        """Each phase's seconds (the last one's until now) and the total since the job's work began."""
        now = time.perf_counter()
        ends = [*list(self.marks.values())[1:], now]
        spans = {self.timed[phase]: round(end - begin, 4) for (phase, begin), end in zip(self.marks.items(), ends)}
        return spans | {"total": round(now - self.start, 4)}


def _register(claim: Claim, settings: Settings, engine: Engine, store: ArtifactStore,
              monitor: JobMonitor) -> dict[str, Any]:
    """The job's work: the CLI's pipeline into a staging folder, then the worker's own (store, publish);
    returns the job's ``result``."""
    from models.register import register_files
    from worker import batching  # imports torch

    phases = Phases(monitor)
    params = RegistrationParams.parse(claim.params)
    job_dir = store.job_dir(claim.job_id)
    inputs = input_paths(job_dir, params.inputs)
    model = resolve_model(engine, params.model or settings.default_model)
    device = default_device()
    staging = Path(tempfile.mkdtemp(dir=job_dir, prefix=".outputs-"))
    try:
        done = register_files(lambda: MODEL_CACHE.get(store, model.sha256, device), inputs, staging,
                              model_fields={"model": model.ref, "model_sha256": model.sha256},
                              series=params.series, frames=params.frames, max_voxels=settings.max_voxels,
                              refine_steps=params.refine_steps, refine_time_limit_s=params.refine_time_limit_s,
                              label_names=params.label_names, on_phase=phases,
                              forward=batching.forward_batcher())
        outputs = write_outputs(store, job_dir, staging, done, before_publish=monitor.confirm)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = RegistrationResult(model=model, outputs=outputs, report=done.report, timings_s=phases.timings_s(),
                                device=device, attempt=claim.attempt)
    return result.to_row()


def run_registration(job_id: str, *, settings: Settings | None = None, only_if_queued: bool = False) -> None:
    """Run registration job ``job_id`` to its end; a no-op when it is gone or finished.

    Raises only :data:`~worker.failures.TRANSIENT_ERRORS` (for Celery to retry); every other
    outcome is written to the job row (``worker.jobs.run_job``).
    """
    settings = settings or get_settings()

    def work(claim: Claim, engine: Engine, store: ArtifactStore, monitor: JobMonitor) -> dict[str, Any]:
        from worker import batching  # imports torch

        with batching.forward_batcher().registering():  # the forward may be shared with concurrent registrations
            return _register(claim, settings, engine, store, monitor)

    run_job(job_id, JobKind.REGISTRATION, settings, work, only_if_queued=only_if_queued)


run = job_task(REGISTRATION_TASK, run_registration)

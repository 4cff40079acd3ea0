"""Task ``adacs.cine.run(job_id)``: track a cine series from its reference frame's mask.

The contract with the API
-------------------------
As for a pair (``worker.tasks.registration``): the API stores the uploads in
``store.job_dir(job_id)/inputs/`` as ``cine.<ext>`` and ``reference_mask.<ext>``, reads and checks
every voxel, commits a ``cine`` job row (``queued``) whose ``params``
(``service.jobs.cine.CineParams``) are::

    {"model": "cardiac@production", "inputs": {"cine": "inputs/cine.nii.gz",
                                               "reference_mask": "inputs/reference_mask.nii.gz"},
     "reference_frame": 0, "cine_series": "1.2.840...",           # optional
     "refine_steps": 100, "refine_time_limit_s": 60.0, "refine_similarity": "ncc",   # optional
     "label_names": {"1": "RV", "2": "myocardium", "3": "LV"}, "lv_label": 3}         # optional

and then sends ``CINE_TASK`` with ``args=[job_id]`` to the inference queue.

What the worker writes
----------------------
While running, ``progress={"phase": ..., "step": k, "steps": 4}`` with the phases of
``models.cine_files.register_cine_files``, and while registering also ``frame`` and ``frames`` (how
many frames are done, of how many). On success, ``result`` as a registration's
(``service.jobs.registration.RegistrationResult``) with the outputs of
``models.cine_files.CINE_OUTPUTS`` by role: ``displacements``, ``warped_masks``, ``volumes``,
``volume_curve``, ``report``. Failures as for a pair (``worker.failures``): bad input never retried.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from service.core.config import Settings, get_settings
from service.db import JobKind
from service.jobs.cine import CineParams
from service.jobs.registration import RegistrationResult
from service.jobs.tasks import CINE_TASK
from service.storage import ArtifactStore
from worker.jobs import Claim, JobMonitor, run_job
from worker.model_cache import MODEL_CACHE, default_device
from worker.tasks.job_task import job_task
from worker.tasks.registration import Phases, input_paths, publish, resolve_model, store_outputs

__all__ = ["run_cine", "run"]



def _track(claim: Claim, settings: Settings, engine: Engine, store: ArtifactStore,
           monitor: JobMonitor) -> dict[str, Any]:
    """The job's work: ``register_cine_files`` into a staging folder, then into the store and ``outputs/``."""
    from models.cine_files import register_cine_files

    progress = Phases(monitor)  # register_cine_files has a pair's phases, timed under the same keys
    params = CineParams.parse(claim.params)
    job_dir = store.job_dir(claim.job_id)
    inputs = input_paths(job_dir, params.inputs)
    model = resolve_model(engine, params.model or settings.default_model)
    device = default_device()
    staging = Path(tempfile.mkdtemp(dir=job_dir, prefix=".outputs-"))
    try:
        done = register_cine_files(
            lambda: MODEL_CACHE.get(store, model.sha256, device), inputs["cine"], inputs["reference_mask"], staging,
            model_fields={"model": model.ref, "model_sha256": model.sha256}, reference=params.reference_frame,
            series=params.cine_series, max_voxels=settings.max_voxels, max_frames=settings.max_cine_frames,
            refine_steps=params.refine_steps, refine_time_limit_s=params.refine_time_limit_s,
            refine_similarity=params.refine_similarity, label_names=params.label_names, lv_label=params.lv_label,
            on_phase=progress, on_frames=progress.frames)
        outputs = store_outputs(store, done.paths)
        monitor.confirm()
        publish(staging, job_dir / "outputs")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RegistrationResult(model=model, outputs=outputs, report=done.report, timings_s=progress.timings_s(),
                              device=device, attempt=claim.attempt).to_row()


def run_cine(job_id: str, *, settings: Settings | None = None, only_if_queued: bool = False) -> None:
    """Run cine job ``job_id`` to its end; a no-op when it is gone or finished (``worker.jobs.run_job``)."""
    settings = settings or get_settings()
    run_job(job_id, JobKind.CINE, settings,
            lambda claim, engine, store, monitor: _track(claim, settings, engine, store, monitor),
            only_if_queued=only_if_queued)


run = job_task(CINE_TASK, run_cine)

"""Task ``adacs.registration.run(job_id)``: register one image pair and record the outcome on its job.

The contract with the API
-------------------------
Before sending the task, the API stores the uploads in the job's folder,
``store.job_dir(job_id)/inputs/``, as ``fixed.<ext>``, ``moving.<ext>`` and optionally
``moving_mask.<ext>`` and ``fixed_mask.<ext>`` (the extension the upload had: ``.nii.gz``,
``.mha``, ``.zip``...), then commits a ``registration`` job row (``queued``) whose ``params`` are::

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

On success, ``status="succeeded"``, ``finished_at`` and ``result``::

    {"model": {"ref": "cardiac:3", "name": "cardiac", "version": 3, "sha256": "..."},
     "outputs": {ROLE: {"file": NAME, "sha256": "...", "key": "objects/ab/...", "size_bytes": N}},
     "report": {...},            # report.json: dice, dice_before (with a fixed mask), folding_pct, refine, ...
     "timings_s": {"load_model", "read_inputs", "register", "write_outputs", "total"},
     "device": "cuda" | "cpu", "attempt": 1}

with ROLE -> NAME: ``displacement`` -> ``displacement.nii.gz``, ``warped`` -> ``warped.nii.gz``,
``warped_mask`` -> ``warped_mask.nii.gz`` (with a moving mask), ``report`` -> ``report.json``,
``preview`` -> ``preview.png``. The files are objects of the artifact store (serve them with
``store.open(sha256)``); a copy sits in ``job_dir/outputs/``, which appears whole or not at all.
They are the files ``adacs register`` writes, by the same code (``models.outputs``).

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
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from models.io.image import Image
from models.outputs import REPORT, write_registration_outputs
from service.core.config import Settings, get_settings
from service.db import JobKind, session_scope
from service.registry import resolve
from service.storage import ArtifactStore
from worker.celery_app import REGISTRATION_TASK, app
from worker.failures import TRANSIENT_ERRORS, InvalidJobParams
from worker.jobs import Claim, JobMonitor, run_job
from worker.model_cache import MODEL_CACHE, default_device
from worker.preview import write_preview

if TYPE_CHECKING:  # models.register imports torch; the task imports it when it runs
    from models.register import RegistrationResult

__all__ = ["run_registration", "run", "RegistrationParams", "PREVIEW"]

log = logging.getLogger(__name__)
PREVIEW = "preview.png"
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
STEPS = ("loading_model", "reading_inputs", "registering", "writing_outputs")


@dataclass(frozen=True)
class RegistrationParams:
    """``job.params`` checked (see the module docstring)."""

    model: str
    inputs: dict[str, str]
    series: dict[str, str | None] = field(default_factory=dict)
    frames: dict[str, int | None] = field(default_factory=dict)
    refine_steps: int | None = None
    refine_time_limit_s: float | None = None

    @classmethod
    def parse(cls, params: dict[str, Any], default_model: str) -> RegistrationParams:
        inputs = params.get("inputs")
        if not isinstance(inputs, dict) or not {"fixed", "moving"} <= set(inputs):
            raise InvalidJobParams(f"params['inputs'] must name at least 'fixed' and 'moving', got {inputs!r}")
        unknown = set(inputs) - set(ROLES)
        if unknown or not all(isinstance(v, str) for v in inputs.values()):
            raise InvalidJobParams(f"params['inputs'] maps {list(ROLES)} to relative paths, got {inputs!r}")
        model = params.get("model") or default_model
        if not isinstance(model, str):
            raise InvalidJobParams(f"params['model'] is a model reference string, got {model!r}")
        series = {r: params.get(f"{r}_series") for r in ("fixed", "moving")}
        frames = {r: params.get(f"{r}_frame") for r in ("fixed", "moving")}
        if not all(v is None or isinstance(v, str) for v in series.values()) or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in frames.values()):
            raise InvalidJobParams(f"params: a *_series is a string and a *_frame an integer, got {series}, {frames}")
        return cls(model, dict(inputs), series, frames, *_refine_params(params))


def _refine_params(params: dict[str, Any]) -> tuple[int | None, float | None]:
    """``refine_steps`` and ``refine_time_limit_s`` checked; None leaves the choice to the model card."""
    steps, seconds = params.get("refine_steps"), params.get("refine_time_limit_s")
    steps_ok = steps is None or (type(steps) is int and steps >= 0)  # type(), not isinstance: no bools
    seconds_ok = seconds is None or (type(seconds) in (int, float) and 0 < seconds < math.inf)
    if not (steps_ok and seconds_ok):
        raise InvalidJobParams(f"params: refine_steps is an integer >= 0 and refine_time_limit_s a number of "
                               f"seconds > 0, got {steps!r} and {seconds!r}")
    return steps, seconds


def _input_path(job_dir: Path, relative: str) -> Path:
    path = (job_dir / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(job_dir.resolve()):
        raise InvalidJobParams(f"input path {relative!r} leaves the job's folder")
    return path


def read_inputs(job_dir: Path, params: RegistrationParams, max_voxels: int) -> dict[str, Image | None]:
    """The four images by role (masks None when absent), read and checked again.

    The API ran the same function (``models.io.readers.read_registration_inputs``) before the job
    existed; running it here too is defence in depth (files changed on disk, a job row written by
    something else), and what fails here ends the job ``failed`` with the same typed error.
    """
    from models.io.readers import read_registration_inputs

    paths = {role: _input_path(job_dir, relative) for role, relative in params.inputs.items()}
    return read_registration_inputs(paths, series=params.series, frames=params.frames, max_voxels=max_voxels)


def _store_outputs(store: ArtifactStore, paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    outputs = {}
    for role, path in paths.items():
        sha = store.put_file(path)
        outputs[role] = {"file": path.name, "sha256": sha, "key": store.key_of(sha),
                         "size_bytes": path.stat().st_size}
    return outputs


def _publish(staging: Path, outputs_dir: Path) -> None:
    """Replace ``outputs_dir`` by the complete ``staging`` folder (a rename: no half-written folder)."""
    shutil.rmtree(outputs_dir, ignore_errors=True)
    staging.rename(outputs_dir)


def write_outputs(store: ArtifactStore, job_dir: Path, result: RegistrationResult, images: dict[str, Image | None],
                  report: dict[str, Any], before_publish: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """The CLI's files plus ``preview.png``, into the store and then ``job_dir/outputs/``.

    ``before_publish`` may raise to keep ``outputs/`` as it is (the job was cancelled or overtaken).
    """
    from models.artifact import write_json_atomic

    staging = Path(tempfile.mkdtemp(dir=job_dir, prefix=".outputs-"))
    try:
        paths = write_registration_outputs(staging, result)
        write_json_atomic(staging / REPORT, report)
        paths["report"] = staging / REPORT
        paths["preview"] = write_preview(staging / PREVIEW, images["fixed"], result.warped, result.warped_mask,
                                         images["fixed_mask"])
        outputs = _store_outputs(store, paths)
        before_publish()
        _publish(staging, job_dir / "outputs")
        return outputs
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _resolve_model(engine: Engine, ref: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        version = resolve(session, ref)
        return {"ref": version.ref, "name": version.model.name, "version": version.version,
                "sha256": version.sha256}


def _register(claim: Claim, settings: Settings, engine: Engine, store: ArtifactStore,
              monitor: JobMonitor) -> dict[str, Any]:
    """The job's work; returns its ``result``."""
    from models.refine import refine_config
    from models.register import register_images

    start, timings = time.perf_counter(), {}

    def step(phase: str) -> None:
        monitor.progress(phase=phase, step=STEPS.index(phase) + 1, steps=len(STEPS))
        timings[phase] = time.perf_counter()

    params = RegistrationParams.parse(claim.params, settings.default_model)
    job_dir = store.job_dir(claim.job_id)
    step("loading_model")
    model_info = _resolve_model(engine, params.model)
    device = default_device()
    model = MODEL_CACHE.get(store, model_info["sha256"], device)
    step("reading_inputs")
    images = read_inputs(job_dir, params, settings.max_voxels)
    step("registering")
    refine_with = refine_config(model.card, params.refine_steps, params.refine_time_limit_s)
    result = register_images(model, images["fixed"], images["moving"], images["moving_mask"], images["fixed_mask"],
                             refine_with=refine_with)
    step("writing_outputs")
    report = result.report | {"model": model_info["ref"], "model_sha256": model_info["sha256"],
                              "model_load_s": round(timings["reading_inputs"] - timings["loading_model"], 4),
                              "wall_s": round(time.perf_counter() - start, 4),
                              "displacement_units": "mm, ITK LPS physical space, fixed point p -> p + u(p)"}
    outputs = write_outputs(store, job_dir, result, images, report, before_publish=monitor.confirm)
    marks = [timings[p] for p in STEPS] + [time.perf_counter()]
    spans = {name: round(b - a, 4) for name, a, b in
             zip(("load_model", "read_inputs", "register", "write_outputs"), marks, marks[1:])}
    return {"model": model_info, "outputs": outputs, "report": report, "device": device, "attempt": claim.attempt,
            "timings_s": spans | {"total": round(time.perf_counter() - start, 4)}}


def run_registration(job_id: str, *, settings: Settings | None = None, only_if_queued: bool = False) -> None:
    """Run registration job ``job_id`` to its end; a no-op when it is gone or finished.

    Raises only :data:`~worker.failures.TRANSIENT_ERRORS` (for Celery to retry); every other
    outcome is written to the job row (``worker.jobs.run_job``).
    """
    settings = settings or get_settings()
    run_job(job_id, JobKind.REGISTRATION, settings,
            lambda claim, engine, store, monitor: _register(claim, settings, engine, store, monitor),
            only_if_queued=only_if_queued)


@app.task(name=REGISTRATION_TASK, autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60,
          retry_jitter=True, max_retries=5)
def run(job_id: str, only_if_queued: bool = False) -> None:
    """Celery's wrapper of :func:`run_registration` (retried with backoff on transient errors only).

    ``only_if_queued`` marks a copy the reaper sent: it claims only a job still queued
    (``worker.jobs.claim_job``). The API sends ``args=[job_id]`` alone.
    """
    run_registration(job_id, only_if_queued=only_if_queued)

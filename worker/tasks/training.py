"""Task ``adacs.training.run(job_id)``: train a displacement estimator on an uploaded dataset.

The contract with the API
-------------------------
The API commits a ``training`` job row (``queued``) whose ``params``
(``service.jobs.training.TrainingParams``, which both sides parse and write) are::

    {"dataset_id": "<uuid>",                 # a ready row of ``datasets``, unpacked in the store
     "model_name": "cardiac",                # the registry name the estimator is registered under
     "architecture": "voxelmorph", "architecture_options": {},   # e.g. {"embed_dim": 48}
     "method": "adacs",
     "hyperparameters": {"epochs": 20, "warmup_epochs": 20, "steps_per_epoch": 25, "batch_size": 8,
                         "micro_batch_size": None, "lr": 1e-3, "scoring_lr": 1e-4, "lam": 0.01,
                         "alpha": 0.02, "beta": 1.5, "kappa": 50.0, "bidir": True, "seed": 0,
                         "supervision": "none", "label_weight": 0.3, "labels": None,
                         "crop": 128},            # any key left out takes models.defaults' value
     "val_fraction": 0.2,                    # share of subjects held out for validation Dice
     "devices": 1}                           # processes, one per GPU (1 to MAX_DEVICES; default 1)

and then sends ``TRAINING_TASK`` with ``args=[job_id]`` to the ``training`` queue.

What the worker does
--------------------
Reads the dataset with the loader of its layout, splits it by subject (the last
``round(val_fraction * n_subjects)`` subjects in sorted order are validation; at least one when
there are two or more), and runs ``models.trainer.train`` into ``store.job_dir(job_id)/train/``,
which checkpoints every epoch and resumes from ``checkpoints/last.pt``: a redelivered job (a
killed worker, the reaper) continues where its last epoch ended instead of starting over.

With ``devices`` N > 1 the task trains in N processes under torch.distributed
(``models.training.distributed``): itself as rank 0 (progress, cancellation and every file, as with
one) and N - 1 subprocesses, one per GPU this worker sees (``cuda:0`` .. ``cuda:N-1``), or N CPU
processes on a CPU worker. A job asking more GPUs than its worker sees, or a ``batch_size`` that N
does not divide, fails with a message. Each process takes ``batch_size / N`` pairs of every update,
so the job trains what one process would; a checkpoint resumes under any ``devices``.

While running, ``progress`` holds ``phase``, ``epoch``/``epochs`` (1-based), ``step``/
``steps_per_epoch``, ``global_step``/``total_steps``, ``losses`` (the last update's), ``m_t``,
``val_dice`` and ``val_folding_pct`` (the last validation), ``elapsed_s``, ``eta_s`` and ``warnings``
(a list of sentences, e.g. that validation Dice had not left the identity's by the end of the
warm-up; the model card repeats them). Every
training step reports, and a cancelled or overtaken job stops at that step (the trainer keeps the
last completed checkpoint).

On success the displacement estimator alone (``train/model/``: no scoring or auxiliary network)
becomes the next version of ``model_name`` with ``source_job_id`` = the job, and ``result``
(``service.jobs.training.TrainingResult``) is::

    {"model": {"ref": "cardiac:2", "name", "version", "sha256"}, "validation": {"val_dice", ...},
     "data": {"n_train_pairs", "n_val_pairs", "n_subjects", ...}, "device": "cuda" | "cpu", "devices": 1,
     "attempt": 1, "resumed_from_epoch": 0, "epochs_run": 60, "wall_s": 123.4}

A redelivery after the version was registered finds it by ``source_job_id`` and does not register
a second one. Failures are recorded as for registrations (``worker.failures``): bad data or
parameters fail the job with a message, a lost database is retried by Celery.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from models.defaults import TRAIN_DEFAULTS, default_micro_batch_size
from service.access import principal_for_owner
from service.core.config import Settings, get_settings
from service.db import Dataset, DatasetStatus, Job, JobKind, ModelVersion, session_scope
from service.jobs.schema import InvalidJobParams, ModelVersionRef
from service.jobs.tasks import TRAINING_TASK
from service.jobs.training import TrainingParams, TrainingResult
from service.registry import register_version
from service.storage import ArtifactStore
from worker.jobs import Claim, JobMonitor, run_job
from worker.model_cache import default_device
from worker.tasks.job_task import job_task

__all__ = ["run_training", "run", "split_by_subject"]

log = logging.getLogger(__name__)
TRAIN_DIR = "train"


class DatasetUnavailable(ValueError):
    """The job's dataset is gone or not ready: the job fails (a user's problem, not retried)."""


def split_by_subject(pairs: list, val_fraction: float) -> tuple[list, list]:
    """(train, val): whole subjects go to validation, so no subject is on both sides."""
    subjects = sorted({p.subject_id for p in pairs})
    n_val = round(val_fraction * len(subjects))
    if val_fraction > 0 and len(subjects) >= 2:
        n_val = min(max(1, n_val), len(subjects) - 1)
    else:
        n_val = 0
    held_out = set(subjects[len(subjects) - n_val:]) if n_val else set()
    return [p for p in pairs if p.subject_id not in held_out], [p for p in pairs if p.subject_id in held_out]


def train_config(params: TrainingParams, device: str):
    """``TrainConfig`` from the job's hyperparameters (unknown keys are a contract error)."""
    from dataclasses import fields

    from models.networks.estimator import EstimatorConfig
    from models.trainer import TrainConfig

    hp = {k: v for k, v in params.hyperparameters.items() if k != "crop"}
    known = {f.name for f in fields(TrainConfig)} - {"method", "estimator", "intensity", "device"}
    unknown = sorted(set(hp) - known)
    if unknown:
        raise InvalidJobParams(f"unknown hyperparameters {unknown}; known: {sorted(known)}")
    if hp.get("micro_batch_size") is None:
        hp["micro_batch_size"] = default_micro_batch_size(int(hp.get("batch_size", TRAIN_DEFAULTS.batch_size)))
    from models.networks.registry import resolve_options

    estimator = EstimatorConfig(arch=params.architecture, options=params.architecture_options)
    try:
        resolve_options(estimator)  # unknown option names fail now, naming the known ones
        cfg = TrainConfig(method=params.method, estimator=estimator, device=device, **hp)
        cfg.validate()
    except (ValueError, TypeError) as error:
        raise InvalidJobParams(str(error)) from error
    from models.training.distributed import check_devices

    try:
        check_devices(params.devices, cfg.batch_size, device)
    except ValueError as error:
        raise InvalidJobParams(str(error)) from error
    return cfg


def _load_pairs(engine: Engine, store: ArtifactStore, params: TrainingParams) -> tuple[list, dict[str, Any]]:
    from models.data.layout import dataset_spec
    from models.data.spec import load_pairs

    with session_scope(engine) as session:
        dataset = session.get(Dataset, params.dataset_id)
        if dataset is None or dataset.status != DatasetStatus.READY:
            raise DatasetUnavailable(f"dataset {params.dataset_id} is {'gone' if dataset is None else 'not ready'}")
        info, name = dict(dataset.info or {}), dataset.name
    folder = store.dataset_dir(params.dataset_id, create=False)
    spec = dataset_spec(info["layout"], folder / info["path"], size=params.hyperparameters.get("crop"))
    pairs = load_pairs(spec, root=folder)  # an uploaded manifest reads nothing outside its dataset's folder
    shapes = sorted({p.shape for p in pairs})
    if len(shapes) > 1:
        raise ValueError(f"the dataset's pairs have {len(shapes)} different shapes ({shapes[:3]}...); set "
                         "hyperparameters.crop so that they are cut to one size")
    description = {"dataset_id": params.dataset_id, "dataset_name": name, "layout": info["layout"],
                   "n_subjects": len({p.subject_id for p in pairs}), "shape": list(shapes[0])}
    return pairs, description


class _Progress:
    """Turns the trainer's events into the job's ``progress`` (validation results stay until replaced)."""

    def __init__(self, monitor: JobMonitor) -> None:
        self.monitor, self.val, self.last = monitor, {}, {}

    def __call__(self, event) -> None:
        if event.kind == "epoch":
            self.val = {k: round(v, 4) for k, v in event.val.items()}
        done = event.global_step / max(1, event.total_steps)
        rate = event.elapsed_s / max(1, event.global_step)
        eta = rate * (event.total_steps - event.global_step)
        self.last = dict(
            phase=event.phase, epoch=event.epoch + 1, epochs=event.total_epochs, step=event.step,
            steps_per_epoch=event.steps_per_epoch, global_step=event.global_step, total_steps=event.total_steps,
            fraction=round(done, 4), losses={k: round(v, 6) for k, v in event.losses.items() if math.isfinite(v)},
            m_t=round(event.m_t, 6), **self.val, elapsed_s=round(event.elapsed_s, 2),
            eta_s=round(eta, 1) if event.global_step else None, warnings=list(event.warnings))
        self.monitor.progress(**self.last)


def _registered(engine: Engine, store: ArtifactStore, params: TrainingParams, job_id: str,
                artifact: Path) -> ModelVersionRef:
    """The job's model version: the one it already registered (a redelivery), or a new one."""
    with session_scope(engine) as session:
        version = session.scalars(select(ModelVersion).where(ModelVersion.source_job_id == job_id)).first()
        if version is None:  # as the job's owner: a new model is theirs; another key's or a shared one is refused
            owner = principal_for_owner(session, session.scalar(select(Job.owner_key_id).where(Job.id == job_id)))
            version = register_version(session, store, params.model_name, artifact, source_job_id=job_id,
                                       owner=owner)
        return ModelVersionRef(ref=version.ref, name=version.model.name, version=version.version,
                               sha256=version.sha256)


def _checkpoint_epoch(out_dir: Path) -> int:
    """Epochs the last checkpoint holds (0 without one): where this attempt starts."""
    summary = out_dir / "checkpoints" / "last.json"
    if not summary.is_file():
        return 0
    return int(json.loads(summary.read_text(encoding="utf-8")).get("epoch", 0))


def _train(claim: Claim, engine: Engine, store: ArtifactStore, monitor: JobMonitor) -> dict[str, Any]:
    from models.training.distributed import train_on_devices

    start = time.perf_counter()
    params = TrainingParams.parse(claim.params)
    device = default_device()
    cfg = train_config(params, device)
    monitor.progress(phase="loading_data")
    pairs, description = _load_pairs(engine, store, params)
    train_pairs, val_pairs = split_by_subject(pairs, params.val_fraction)
    description |= {"n_train_pairs": len(train_pairs), "n_val_pairs": len(val_pairs),
                    "val_fraction": params.val_fraction}
    out_dir = store.job_dir(claim.job_id) / TRAIN_DIR
    resumed_from = _checkpoint_epoch(out_dir)
    if resumed_from:
        log.info("training job %s: attempt %d resumes after epoch %d", claim.job_id, claim.attempt, resumed_from)
    progress = _Progress(monitor)
    result = train_on_devices(params.devices, cfg, train_pairs, out_dir, val_pairs=val_pairs or None,
                              callback=progress, data_description=description)
    monitor.progress(**{**progress.last, "phase": "registering_model", "eta_s": 0})
    monitor.confirm()  # still ours: a cancelled or overtaken job registers nothing
    model = _registered(engine, store, params, claim.job_id, result.out_dir / "model")
    last = result.history[-1] if result.history else {}
    return TrainingResult(model=model, validation={k: last[k] for k in ("val_dice", "val_folding_pct") if k in last},
                          data=description, device=device, devices=params.devices, attempt=claim.attempt,
                          resumed_from_epoch=resumed_from, epochs_run=len(result.history),
                          wall_s=round(time.perf_counter() - start, 2)).to_row()


def run_training(job_id: str, *, settings: Settings | None = None, only_if_queued: bool = False) -> None:
    """Run training job ``job_id`` to its end (or resume it); a no-op when it is gone or finished."""
    run_job(job_id, JobKind.TRAINING, settings or get_settings(), _train, only_if_queued=only_if_queued)


run = job_task(TRAINING_TASK, run_training)

"""Request and response bodies of the API, by role: ``XCreate`` in, ``XPublic`` out, ``XsPublic`` lists.

Kept apart from the SQL tables (``service.db.models``): the worker writes those tables too and must
not depend on the web layer, and a table's columns are not a promise to clients.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.defaults import (
    LR_SCHEDULES,
    MAX_MICRO_BATCH,
    SUPERVISIONS,
    TRAIN_DEFAULTS,
    check_labels,
    check_supervision,
)
from service.jobs.training import MAX_DEVICES

__all__ = ["ErrorPublic", "FieldErrorPublic", "LivenessPublic", "CheckPublic", "ReadinessPublic", "ModelVersionSummary",
           "ModelVersionPublic", "ModelPublic", "ModelDetailPublic", "ModelsPublic", "PromotionCreate",
           "StageAssignmentPublic", "OutputPublic", "RegistrationPublic", "RegistrationsPublic",
           "CineRegistrationPublic", "CineRegistrationsPublic", "DatasetPublic", "DatasetsPublic",
           "TrainingHyperparameters", "TrainingJobCreate", "TrainingJobPublic", "TrainingJobsPublic"]


class FieldErrorPublic(BaseModel):
    """One invalid part of a request: where it is and what is wrong (never the value sent)."""

    loc: list[str | int] = Field(description="where: e.g. ['body', 'hyperparameters', 'lr'] or ['query', 'limit']")
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="pydantic's error type, e.g. 'less_than_equal'")


class ErrorPublic(BaseModel):
    """Every error answer of the API, 4xx and 5xx: a message naming the problem and a stable code."""

    detail: str = Field(description="what is wrong and what to do")
    code: str = Field(description="stable snake_case name of the error, e.g. 'invalid_artifact'")
    errors: list[FieldErrorPublic] | None = Field(None, description="for 'invalid_request': each invalid field")


class LivenessPublic(BaseModel):
    status: str = "alive"


class CheckPublic(BaseModel):
    ok: bool
    detail: str = Field(description="what was checked, or why it failed")
    duration_ms: float


class ReadinessPublic(BaseModel):
    ready: bool
    checks: dict[str, CheckPublic] = Field(description="per dependency: 'database', 'broker', 'artifact_store', "
                                                       "'workers' (a live worker on every queue)")


class ModelVersionSummary(BaseModel):
    model: str
    version: int
    ref: str = Field(description="'name:version', the reference that resolves to exactly this version")
    sha256: str = Field(description="content address of the artifact directory (its manifest)")
    stages: list[str] = Field(description="stage labels pointing at this version, e.g. ['production']")
    source_job_id: str | None = None
    created_at: datetime


class ModelVersionPublic(ModelVersionSummary):
    card: dict[str, Any] = Field(description="the model card: method, hyperparameters, data, validation metrics")


class ModelPublic(BaseModel):
    name: str
    created_at: datetime
    stages: dict[str, int] = Field(description="stage label -> version it points at")
    latest_version: int | None
    versions: list[ModelVersionSummary]


class ModelDetailPublic(ModelPublic):
    versions: list[ModelVersionPublic]  # with their cards


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int = Field(description="number of models in the registry (all pages)")


class PromotionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field("production", max_length=32,
                       description="label to point at the version (moved if another version held it)",
                       examples=["production", "staging"])


class StageAssignmentPublic(BaseModel):
    model: str
    stage: str
    version: int
    updated_at: datetime


# -- registrations -------------------------------------------------------------------------------

class OutputPublic(BaseModel):
    """One output file of a finished registration."""

    file: str = Field(description="its file name, e.g. 'displacement.nii.gz'")
    url: str = Field(description="where to download it")
    sha256: str
    size_bytes: int


class RegistrationPublic(BaseModel):
    """A registration job as clients see it; ``outputs`` and ``report`` appear once it succeeded."""

    id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    model: str = Field(description="the model reference asked for, e.g. 'cardiac' or 'cardiac:3'")
    model_version: str | None = Field(None, description="'name:version' that ran (once it ran)")
    inputs: list[str] = Field(description="roles uploaded: fixed, moving, moving_mask, fixed_mask")
    progress: dict[str, Any] = Field(default_factory=dict, description="phase, step and steps while running")
    error: str | None = Field(None, description="'<code>: <message>' when it failed")
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings_s: dict[str, float] | None = Field(None, description="load_model, read_inputs, register, "
                                                                 "write_outputs, total")
    report: dict[str, Any] | None = Field(None, description="metrics: dice (with a fixed mask), folding_pct, ...")
    expired_at: datetime | None = Field(None, description="when retention removed its inputs and outputs "
                                                          "(ADACS_JOB_RETENTION_DAYS after it finished)")
    url: str = Field(description="this job's URL")
    outputs: dict[str, OutputPublic] = Field(
        default_factory=dict, description="by role: displacement, warped, warped_mask, warped_mask_seg, "
                                             "report, preview, ...")


class RegistrationsPublic(BaseModel):
    data: list[RegistrationPublic]
    count: int = Field(description="number of registrations (all pages)")


class CineRegistrationPublic(BaseModel):
    """A cine registration as clients see it: every frame registered to the reference frame, its mask
    carried to each; ``outputs`` and ``report`` (volumes per label per frame, ED/ES frames, EF) once it
    succeeded."""

    id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    model: str = Field(description="the model reference asked for")
    model_version: str | None = Field(None, description="'name:version' that ran (once it ran)")
    reference_frame: int = Field(description="the frame the mask was drawn on")
    progress: dict[str, Any] = Field(default_factory=dict, description="phase, step, steps and, while "
                                                                       "registering, frame of frames")
    error: str | None = Field(None, description="'<code>: <message>' when it failed")
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings_s: dict[str, float] | None = None
    report: dict[str, Any] | None = Field(None, description="frames, labels (volume per frame), lv (ED, ES, EF)")
    expired_at: datetime | None = None
    url: str = Field(description="this job's URL")
    outputs: dict[str, OutputPublic] = Field(
        default_factory=dict, description="by role: displacements, warped_masks, volumes, volume_curve, report")


class CineRegistrationsPublic(BaseModel):
    data: list[CineRegistrationPublic]
    count: int = Field(description="number of cine registrations (all pages)")


# -- datasets ------------------------------------------------------------------------------------

class DatasetPublic(BaseModel):
    """An uploaded training set, checked on arrival: ``status`` is ``ready`` once its pairs were read."""

    id: str
    name: str
    layout: str = Field(description="acdc, camus or manifest (detected or as asked)")
    status: str
    error: str | None = None
    n_pairs: int | None = Field(None, description="registration pairs the layout gives")
    n_subjects: int | None = Field(None, description="distinct subjects (validation is split by subject)")
    n_labelled: int | None = Field(None, description="pairs with both masks (usable for validation Dice)")
    ndim: int | None = Field(None, description="2 or 3")
    shapes: list[list[int]] = Field(default_factory=list, description="distinct pair shapes (at most 5 shown)")
    sha256: str = Field(description="of the uploaded zip")
    size_bytes: int
    created_at: datetime
    url: str


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# -- training jobs -------------------------------------------------------------------------------

_D = TRAIN_DEFAULTS  # the trainer's and the CLI's defaults too (models/defaults.py, torch-free)


class TrainingHyperparameters(BaseModel):
    """Algorithm 1's settings, with the defaults of ``models/defaults.py`` (shared with ``adacs train``).

    Budgets count optimiser updates: ``steps_per_epoch`` updates of ``batch_size`` pairs per epoch,
    ``warmup_epochs`` per warm-up phase, then ``epochs`` more. The defaults (lr 1e-3, 20 + 20 warm-up
    epochs and 20 more of 25 updates: 1000 displacement updates) are the recipe measured to train a
    competent model on a dataset the size of ACDC on CPU.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(_D.epochs, ge=0, le=100_000, description="epochs after the warm-up(s)")
    warmup_epochs: int = Field(_D.warmup_epochs, ge=0, le=100_000, description="epochs of each warm-up phase")
    steps_per_epoch: int = Field(_D.steps_per_epoch, ge=1, le=100_000, description="optimiser updates per epoch")
    batch_size: int = Field(_D.batch_size, ge=1, le=1024, description="pairs per optimiser update")
    micro_batch_size: int | None = Field(None, ge=1, le=1024, description="pairs per forward pass (default "
                                                                           f"min({MAX_MICRO_BATCH}, batch_size))")
    lr: float = Field(_D.lr, gt=0, le=1, description="Adam learning rate of the displacement estimator")
    lr_schedule: Literal[LR_SCHEDULES] = Field(  # type: ignore[valid-type]
        _D.lr_schedule, description="the estimator's learning rate over its updates: constant, or cosine decay to 0")
    scoring_lr: float | None = Field(_D.scoring_lr, gt=0, le=1, description="of the AdaCS scoring network "
                                                                            "(null: the same as lr)")
    lam: float = Field(_D.lam, ge=0, le=1e6, description="smoothness weight λ")
    alpha: float = Field(_D.alpha, ge=0, le=1e6, description="scoring regulariser weight α")
    beta: float = Field(_D.beta, ge=0, le=1e6, description="TV momentum scale β")
    kappa: float = Field(_D.kappa, gt=0, le=1e6, description="momentum activation scale κ")
    bidir: bool = Field(_D.bidir, description="train both directions")
    seed: int = Field(_D.seed, ge=0, le=2**32 - 1)
    beta_nll: float = Field(_D.beta_nll, ge=0, le=1, description="β of the β-NLL baseline")
    adareg_sigma: float = Field(_D.adareg_sigma, gt=0, le=1e6, description="σ_r of the AdaReg baseline")
    adaframe_a: float = Field(_D.adaframe_a, gt=0, le=1e6, description="slope a of the AdaFrame weight")
    adaframe_b: float = Field(_D.adaframe_b, ge=-1e6, le=1e6, description="offset b of the AdaFrame weight")
    auxiliary_lr: float | None = Field(_D.auxiliary_lr, gt=0, le=1,
                                       description="of the NLL variance network (null: the same as lr)")
    supervision: str = Field(_D.supervision, max_length=16,
                             description=f"one of {', '.join(SUPERVISIONS)}: 'labels' adds a soft Dice of the "
                                         "training masks to the objective (the dataset needs both masks on every "
                                         "pair; the model still registers images alone)")
    label_weight: float = Field(_D.label_weight, gt=0, le=1e6, description="weight of the label term")
    labels: list[int] | None = Field(list(_D.labels) if _D.labels is not None else None, min_length=1,
                                     max_length=64, description="labels the label term scores (null: every "
                                                                "foreground label of the training masks)")
    crop: int | None = Field(128, ge=8, le=1024, description="side of the training crops (acdc, manifest) or "
                                                             "grid (camus); null keeps the data's grid")

    @field_validator("supervision")
    @classmethod
    def _known_supervision(cls, supervision: str) -> str:
        check_supervision(supervision)
        return supervision

    @field_validator("labels")
    @classmethod
    def _foreground_labels(cls, labels: list[int] | None) -> list[int] | None:
        check_labels(labels)
        return labels

    @model_validator(mode="after")
    def _labels_need_label_supervision(self) -> TrainingHyperparameters:
        """Labels without label supervision would be silently ignored: refuse them, naming the fix."""
        if self.labels is not None and self.supervision != "labels":
            raise ValueError(f"labels are used only with supervision 'labels', not {self.supervision!r}")
        return self


OptionValue = int | float | bool | str | list[int] | list[float]
MAX_OPTIONS = 32


class TrainingJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    dataset_id: str = Field(max_length=64, description="a ready dataset of this key (its id)")
    model_name: str = Field(max_length=128, description="registry name the trained estimator is registered under "
                                                        "(a new version of this key's model, or a new model)")
    architecture: str = Field(_D.arch, max_length=64, description="displacement estimator")
    architecture_options: dict[str, OptionValue] = Field(
        default_factory=dict, max_length=MAX_OPTIONS,
        description="sizes of the architecture, e.g. {'embed_dim': 48} for transmorph (see models/networks/*.py); "
                    "unknown keys fail the job")
    method: str = Field(_D.method, max_length=64, description="none (vanilla, the default), adacs, or a baseline")
    hyperparameters: TrainingHyperparameters = Field(default_factory=TrainingHyperparameters)
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of subjects held out for validation Dice")
    devices: int = Field(1, ge=1, le=MAX_DEVICES,
                         description=f"processes to train with, one per GPU of the worker's machine (1 to "
                                     f"{MAX_DEVICES}; hyperparameters.batch_size must be a multiple): each takes "
                                     "batch_size / devices pairs of every update, so the model is the one a "
                                     "single process trains. Past one machine: adacs train under torchrun")

    @field_validator("architecture_options")
    @classmethod
    def _small_and_finite(cls, options: dict[str, OptionValue]) -> dict[str, OptionValue]:
        """Options end up in the job row's JSON: short keys, short lists, finite numbers only."""
        for key, value in options.items():
            if not 0 < len(key) <= 64 or not key.isidentifier():
                raise ValueError("option names are Python identifiers of at most 64 characters")
            items = value if isinstance(value, list) else [value]
            if len(items) > 16 or (isinstance(value, str) and len(value) > 64):
                raise ValueError(f"option {key!r}: at most 16 numbers, or a string of at most 64 characters")
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                raise ValueError(f"option {key!r}: numbers must be finite")
        return options


class TrainingJobPublic(BaseModel):
    """A training job; ``progress`` holds phase, epoch, step, losses, m_t, val_dice and eta_s while it runs."""

    model_config = {"protected_namespaces": ()}

    id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    dataset_id: str
    model_name: str
    architecture: str
    architecture_options: dict[str, Any] = Field(default_factory=dict)
    method: str
    hyperparameters: dict[str, Any]
    val_fraction: float
    devices: int = Field(1, description="processes (GPUs) it trains with")
    progress: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_version: str | None = Field(None, description="'name:version' registered on success")
    result: dict[str, Any] | None = Field(None, description="validation metrics, timings, device (once finished)")
    expired_at: datetime | None = Field(None, description="when retention removed its checkpoints (its model stays)")
    url: str
    events_url: str = Field(description="server-sent events of this job's progress")


class TrainingJobsPublic(BaseModel):
    data: list[TrainingJobPublic]
    count: int

"""Request and response bodies of the API, by role: ``XCreate`` in, ``XPublic`` out, ``XsPublic`` lists.

Kept apart from the SQL tables (``service.db.models``): the worker writes those tables too and must
not depend on the web layer, and a table's columns are not a promise to clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ErrorPublic", "LivenessPublic", "CheckPublic", "ReadinessPublic", "ModelVersionSummary",
           "ModelVersionPublic", "ModelPublic", "ModelDetailPublic", "ModelsPublic", "PromotionCreate",
           "StageAssignmentPublic", "OutputPublic", "RegistrationPublic", "RegistrationsPublic"]


class ErrorPublic(BaseModel):
    """Every error the API answers itself: a message naming the problem and a stable code."""

    detail: str = Field(description="what is wrong and what to do")
    code: str = Field(description="stable snake_case name of the error, e.g. 'invalid_artifact'")


class LivenessPublic(BaseModel):
    status: str = "alive"


class CheckPublic(BaseModel):
    ok: bool
    detail: str = Field(description="what was checked, or why it failed")
    duration_ms: float


class ReadinessPublic(BaseModel):
    ready: bool
    checks: dict[str, CheckPublic] = Field(description="per dependency: 'database', 'broker', 'artifact_store'")


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
    stage: str = Field("production", description="label to point at the version (moved if another version held it)",
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
    url: str = Field(description="this job's URL")
    outputs: dict[str, OutputPublic] = Field(
        default_factory=dict, description="by role: displacement, warped, warped_mask, report, preview")


class RegistrationsPublic(BaseModel):
    data: list[RegistrationPublic]
    count: int = Field(description="number of registrations (all pages)")

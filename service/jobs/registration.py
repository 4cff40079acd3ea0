"""A registration job's ``params`` (the API writes, the worker reads) and ``result`` (the other way round).

The contract in prose, with examples, is ``worker.tasks.registration``'s docstring; these models are
its keys and types. Input roles come from ``models.io.readers.inputs`` (torch-free), the readers'
own list, so a new role is added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from models.io.readers.inputs import INPUT_ROLES
from service.jobs.schema import JobParams, JobResult, ModelVersionRef

__all__ = ["RegistrationParams", "RegistrationResult", "OutputFile"]

REFINE_FIELDS = ("refine_steps", "refine_time_limit_s")
SERIES_FRAME_FIELDS = ("fixed_series", "moving_series", "fixed_frame", "moving_frame")


class RegistrationParams(JobParams):
    """``job.params`` of a registration. Fields are checked in the order the worker always checked them."""

    inputs: dict[str, str]
    """Role (``fixed``, ``moving``, optionally ``moving_mask``, ``fixed_mask``) -> path relative to the job's folder."""
    model: str | None = None
    """``name``, ``name:3`` or ``name@stage``; None: the settings' default model."""
    fixed_series: str | None = None
    moving_series: str | None = None
    fixed_frame: int | None = None
    moving_frame: int | None = None
    refine_steps: int | None = Field(None, ge=0)
    """Test-time refinement steps; None: the model card decides (``models.refine.refine_config``)."""
    refine_time_limit_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    label_names: dict[str, str] | None = None
    """Label value -> name for the report (``models.report.parse_label_names`` checked it); None: the card's."""

    @field_validator("inputs")
    @classmethod
    def _known_roles(cls, inputs: dict[str, str]) -> dict[str, str]:
        if not {"fixed", "moving"} <= set(inputs) or set(inputs) - set(INPUT_ROLES):
            raise ValueError(f"roles are {list(INPUT_ROLES)}, with 'fixed' and 'moving'")
        return inputs

    @field_validator("model", mode="before")
    @classmethod
    def _empty_is_default(cls, model: Any) -> Any:
        """An empty reference means the default model, as it always has in the worker."""
        return model or None

    @property
    def series(self) -> dict[str, str | None]:
        """The DICOM series (SeriesInstanceUID or a prefix) to read, by image role."""
        return {"fixed": self.fixed_series, "moving": self.moving_series}

    @property
    def frames(self) -> dict[str, int | None]:
        """The frame of a 4-D image to read, by image role."""
        return {"fixed": self.fixed_frame, "moving": self.moving_frame}

    @classmethod
    def problem(cls, field: str, raw: Mapping[str, Any]) -> str:
        """The worker's messages for bad params, unchanged since it checked them by hand."""
        inputs = raw.get("inputs")
        if field == "inputs" and (not isinstance(inputs, dict) or not {"fixed", "moving"} <= set(inputs)):
            return f"params['inputs'] must name at least 'fixed' and 'moving', got {inputs!r}"
        if field == "inputs":
            return f"params['inputs'] maps {list(INPUT_ROLES)} to relative paths, got {inputs!r}"
        if field == "model":
            return f"params['model'] is a model reference string, got {raw.get('model')!r}"
        if field in SERIES_FRAME_FIELDS:
            series = {role: raw.get(f"{role}_series") for role in ("fixed", "moving")}
            frames = {role: raw.get(f"{role}_frame") for role in ("fixed", "moving")}
            return f"params: a *_series is a string and a *_frame an integer, got {series}, {frames}"
        if field in REFINE_FIELDS:
            return (f"params: refine_steps is an integer >= 0 and refine_time_limit_s a number of seconds > 0, "
                    f"got {raw.get('refine_steps')!r} and {raw.get('refine_time_limit_s')!r}")
        return super().problem(field, raw)

    def to_row(self) -> dict[str, Any]:
        """The refinement fields and label names only when given: for those left out the model card decides."""
        left_out = {name for name in (*REFINE_FIELDS, "label_names") if getattr(self, name) is None}
        return self.model_dump(exclude=left_out)


class OutputFile(JobResult):
    """One output of a registration: an object of the artifact store, and its file name."""

    file: str
    """``displacement.nii.gz``, ``warped.nii.gz``, ``warped_mask.nii.gz``, ``report.json`` or ``preview.png``."""
    sha256: str
    size_bytes: int
    key: str | None = None
    """The object's key in the store."""


class RegistrationResult(JobResult):
    """``job.result`` of a succeeded registration."""

    model: ModelVersionRef | None = None
    outputs: dict[str, OutputFile] = Field(default_factory=dict)
    """By role: ``displacement``, ``warped``, ``warped_mask`` (with a moving mask), ``warped_mask_seg`` (a DICOM
    SEG, with a moving mask and a DICOM fixed image), ``report``, ``preview`` and the others of ``models.outputs``."""
    report: dict[str, Any] | None = None
    """report.json: dice and dice_before (with a fixed mask), folding_pct, refine, timings, the model."""
    timings_s: dict[str, float] | None = None
    """``load_model``, ``read_inputs``, ``register``, ``write_outputs`` and ``total``."""
    device: str | None = None
    attempt: int | None = None

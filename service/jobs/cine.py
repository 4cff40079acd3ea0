"""A cine registration's ``params`` (the API writes, the worker reads); its ``result`` is a registration's.

The contract in prose is ``worker.tasks.cine``'s docstring. The files a cine job makes are
``models.cine_files.CINE_OUTPUTS``; they are recorded, like a registration's, as
:class:`~service.jobs.registration.RegistrationResult` (model, outputs by role, report, timings).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from service.jobs.schema import JobParams

__all__ = ["CineParams", "CINE_ROLES", "SIMILARITIES"]

CINE_ROLES = ("cine", "reference_mask")
"""The uploads of a cine job: the series and the mask of its reference frame."""
SIMILARITIES = ("mse", "ncc")  # models.refine.SIMILARITIES, restated: the API imports no torch


class CineParams(JobParams):
    """``job.params`` of a cine registration."""

    inputs: dict[str, str]
    """``cine`` and ``reference_mask`` -> path relative to the job's folder."""
    model: str | None = None
    """``name``, ``name:3`` or ``name@stage``; None: the settings' default model."""
    cine_series: str | None = None
    """A DICOM series (SeriesInstanceUID or a prefix) when the upload holds several."""
    reference_frame: int = Field(0, ge=0)
    """The frame the mask was drawn on (0: the first, usually end-diastole)."""
    refine_steps: int | None = Field(None, ge=0)
    refine_time_limit_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    refine_similarity: str | None = None
    label_names: dict[str, str] | None = None
    lv_label: int | None = Field(None, gt=0)
    """The left ventricle's label (for ED, ES and EF); None: the label named so, if any."""

    @field_validator("inputs")
    @classmethod
    def _known_roles(cls, inputs: dict[str, str]) -> dict[str, str]:
        if set(inputs) != set(CINE_ROLES):
            raise ValueError(f"roles are {list(CINE_ROLES)}")
        return inputs

    @field_validator("refine_similarity")
    @classmethod
    def _known_similarity(cls, similarity: str | None) -> str | None:
        if similarity is not None and similarity not in SIMILARITIES:
            raise ValueError(f"refine_similarity is one of {list(SIMILARITIES)}")
        return similarity

    @field_validator("model", mode="before")
    @classmethod
    def _empty_is_default(cls, model: Any) -> Any:
        return model or None

    def to_row(self) -> dict[str, Any]:
        """Optional fields only when given: for those left out the model card (or the report) decides."""
        optional = ("refine_steps", "refine_time_limit_s", "refine_similarity", "label_names", "lv_label",
                    "cine_series")
        return self.model_dump(exclude={name for name in optional if getattr(self, name) is None})

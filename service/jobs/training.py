"""A training job's ``params`` (the API writes, the worker reads) and ``result`` (the other way round).

The contract in prose is ``worker.tasks.training``'s docstring; these models are its keys and types.
``hyperparameters`` stays an object of names to values here: the API checks them against its schema
(``service.api.schemas.TrainingHyperparameters``) and the worker against ``models.trainer.TrainConfig``,
whose defaults fill any key a row leaves out, so the trainer's own list is the one that decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from service.jobs.schema import JobParams, JobResult, ModelVersionRef

__all__ = ["MAX_DEVICES", "TrainingParams", "TrainingResult"]

NAMES = ("dataset_id", "model_name", "architecture", "method")
# The most processes (GPUs) one training job may ask of its worker's machine: one node's worth. Past
# one machine, `adacs train` runs under torchrun (README, "Training across GPUs").
MAX_DEVICES = 8


class TrainingParams(JobParams):
    """``job.params`` of a training job."""

    dataset_id: str = Field(min_length=1)
    """A ready dataset of the job's owner, unpacked in the store."""
    model_name: str = Field(min_length=1)
    """The registry name the estimator is registered under."""
    architecture: str = Field(min_length=1)
    architecture_options: dict[str, Any] = Field(default_factory=dict)
    """Sizes of the architecture, e.g. ``{"embed_dim": 48}``; unknown names fail the job."""
    method: str = Field(min_length=1)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    """``models.trainer.TrainConfig`` fields (and ``crop``); any left out take ``models.defaults``' value."""
    val_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of subjects held out for validation Dice."""
    devices: int = Field(1, ge=1, le=MAX_DEVICES)
    """Processes the worker trains with, one per GPU (data-parallel; on a CPU worker, CPU processes)."""

    @field_validator("architecture_options", "hyperparameters", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        """A null object is an empty one, as the worker always read it."""
        return {} if value is None else value

    @classmethod
    def problem(cls, field: str, raw: Mapping[str, Any]) -> str:
        """The worker's messages for bad params, unchanged since it checked them by hand."""
        if field in NAMES:
            missing = [name for name in NAMES if not raw.get(name)]
            return f"training params lack {missing}" if missing else \
                f"training params: {field} is a string, got {raw.get(field)!r}"
        if field == "devices":
            return f"training params: devices must be an integer from 1 to {MAX_DEVICES}, got {raw.get(field)!r}"
        return (f"hyperparameters and architecture_options must be objects and 0 <= val_fraction < 1, got "
                f"{raw.get('hyperparameters')!r}, {raw.get('architecture_options')!r}, {raw.get('val_fraction')!r}")

    def to_row(self) -> dict[str, Any]:
        """``devices`` only when more than one: a one-process job's row is the one written before the field
        existed, so rows read and write back unchanged."""
        return self.model_dump(exclude={"devices"} if self.devices == 1 else set())


class TrainingResult(JobResult):
    """``job.result`` of a succeeded training job."""

    model: ModelVersionRef | None = None
    """The version it registered."""
    validation: dict[str, float | None] = Field(default_factory=dict)
    """``val_dice`` and ``val_folding_pct`` of the last epoch (with validation pairs)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """What it trained on: dataset id and name, layout, subjects, pairs, shape, val_fraction."""
    device: str | None = None
    devices: int | None = None
    """Processes it trained with."""
    attempt: int | None = None
    resumed_from_epoch: int | None = None
    epochs_run: int | None = None
    wall_s: float | None = None

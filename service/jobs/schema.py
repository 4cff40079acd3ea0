"""What every job kind's records share: strict params, tolerant results, the registry version a job names.

``jobs.params`` is written by the API and read by the worker, ``jobs.result`` written by the worker
and read by the API; both are JSON columns. A pydantic model per kind (``service.jobs.registration``,
``service.jobs.training``) states their keys once, so neither side reads an untyped dict with
``.get()``. The keys are those of the rows the service has always written: old rows still read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["InvalidJobParams", "JobParams", "JobResult", "ModelVersionRef"]

P = TypeVar("P", bound="JobParams")
R = TypeVar("R", bound="JobResult")


class InvalidJobParams(ValueError):
    """``job.params`` does not follow the task's contract (an API bug, not a user's): the job fails as
    ``invalid_params`` (``worker.failures``) and is never retried."""


class JobParams(BaseModel):
    """The base of a job kind's ``params``.

    Strict, because the worker must refuse what the API would never write (``"4"`` for 4, ``true``
    for 1); keys it does not know are ignored, so a row from a newer API still runs.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, protected_namespaces=())

    @classmethod
    def parse(cls: type[P], raw: Mapping[str, Any] | None) -> P:
        """``raw`` checked, or :class:`InvalidJobParams` worded for the first field that is wrong."""
        raw = dict(raw or {})
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            raise InvalidJobParams(cls.problem(field, raw)) from None

    @classmethod
    def problem(cls, field: str, raw: Mapping[str, Any]) -> str:
        """The message for a wrong ``field`` of ``raw``, naming what was expected and what came."""
        return f"params[{field!r}] is not valid, got {raw.get(field)!r}"

    def to_row(self) -> dict[str, Any]:
        """The JSON stored in ``jobs.params``."""
        return self.model_dump()


class JobResult(BaseModel):
    """The base of a job kind's ``result`` on success.

    Tolerant where params are strict: every field may be missing, so a row written by an older
    worker, a failed job's ``{"error": ...}`` or a cancelled job's empty result still reads (as
    "nothing recorded") instead of breaking the listing that shows it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    @classmethod
    def read(cls: type[R], row: Mapping[str, Any] | None) -> R:
        """The result recorded in ``row`` (``jobs.result``; None or another outcome's: an empty one)."""
        return cls.model_validate(dict(row or {}))

    def to_row(self) -> dict[str, Any]:
        """The JSON stored in ``jobs.result``: the fields recorded (None ones left out), values as they are."""
        return self.model_dump(exclude_none=True)


class ModelVersionRef(BaseModel):
    """The registry version a job used (a registration) or made (a training)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ref: str
    """``name:version``, e.g. ``cardiac:3``."""
    name: str | None = None
    version: int | None = None
    sha256: str | None = None

"""What a task does with an exception: record it on the job, or raise it for Celery to retry.

Three kinds (Celery ``faq.rst``: retry only named errors; paperless retries one lock error):

- **Bad input** (:data:`INPUT_ERRORS`): the job fails with the error's message and ``code``; never
  retried, because the same input fails the same way.
- **Transient** (:data:`TRANSIENT_ERRORS`): the database went away or its lock timed out. The task
  raises; Celery retries it with backoff, and the job row, still ``running``, is claimed again.
- **Anything else** is a bug or a broken installation: the job fails with ``internal_error`` and a
  short traceback; retrying would only repeat it.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from models.io.errors import ImageError
from service.jobs.schema import InvalidJobParams
from service.registry import InvalidReference, NotFound, RegistryError

__all__ = ["TRANSIENT_ERRORS", "INPUT_ERRORS", "JobFailure", "describe_failure"]

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeoutError)
INPUT_ERRORS: tuple[type[Exception], ...] = (ImageError, RegistryError, ValueError)
TRACEBACK_LINES = 12  # the end of the traceback: where it broke, not how the task got there


@dataclass(frozen=True)
class JobFailure:
    """What ``jobs.error`` (``"<code>: <message>"``) and ``jobs.result["error"]`` record."""

    code: str
    message: str
    http_status: int
    details: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None

    @property
    def error_text(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out = {"code": self.code, "message": self.message, "http_status": self.http_status, "details": self.details}
        return out | ({"traceback": self.traceback} if self.traceback else {})


def _registry_code(error: RegistryError) -> str:
    if isinstance(error, NotFound):
        return "model_not_found"
    return "invalid_model_reference" if isinstance(error, InvalidReference) else "registry_error"


def describe_failure(error: BaseException, hide: Path | None = None) -> JobFailure:
    """The record of ``error``; ``hide`` (the job's folder) is cut from messages, which then name
    files as ``inputs/moving.nii.gz`` rather than by the server's paths."""
    message = str(error) if not hide else str(error).replace(f"{hide}/", "").replace(str(hide), ".")
    if isinstance(error, ImageError):
        return JobFailure(error.code, message, error.http_status, _json_safe(error.details))
    if isinstance(error, RegistryError):
        return JobFailure(_registry_code(error), message, error.http_status)
    if isinstance(error, InvalidJobParams):
        return JobFailure("invalid_params", message, 422)
    if isinstance(error, SoftTimeLimitExceeded):
        return JobFailure("time_limit_exceeded", "the job ran past its time limit "
                          "(ADACS_REGISTRATION_TIME_LIMIT_S / ADACS_TRAINING_TIME_LIMIT_S)", 500)
    if isinstance(error, ValueError):  # models/ validates at its boundary with ValueError
        return JobFailure("invalid_input", message, 422)
    lines = "".join(traceback.format_exception(type(error), error, error.__traceback__)).splitlines()
    return JobFailure("internal_error", f"{type(error).__name__}: {message}", 500,
                      traceback="\n".join(lines[-TRACEBACK_LINES:]))


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as the JSON column stores it (tuples become lists, anything odd its text)."""
    return json.loads(json.dumps(details, default=str))

"""The one way a job kind becomes a Celery task, so both kinds retry and are re-sent alike."""

from __future__ import annotations

from collections.abc import Callable

from celery import Task

from worker.celery_app import app
from worker.failures import TRANSIENT_ERRORS

__all__ = ["job_task"]


def job_task(name: str, run_job_kind: Callable[..., None]) -> Task:
    """Celery task ``name`` that runs ``run_job_kind(job_id, only_if_queued=...)``.

    Retried with backoff on :data:`~worker.failures.TRANSIENT_ERRORS` only: every other outcome is
    already written to the job row. ``only_if_queued`` marks a copy the reaper sent: it claims only a
    job still queued (``worker.jobs.claim_job``). The API sends ``args=[job_id]`` alone.
    """

    def run(job_id: str, only_if_queued: bool = False) -> None:
        run_job_kind(job_id, only_if_queued=only_if_queued)

    run.__doc__ = f"Celery's wrapper of :func:`{run_job_kind.__module__}.{run_job_kind.__name__}`."
    return app.task(name=name, autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60,
                    retry_jitter=True, max_retries=5)(run)

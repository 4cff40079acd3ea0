"""The Celery app, configured from the service's settings when its configuration is first read.

``celery --app worker.celery_app:app worker`` starts a worker; the Docker health check imports this
module every minute, so it imports no torch and no task module (Celery imports ``include`` when a
worker starts). Settings are read lazily (``add_defaults`` with a callable), so a test or launcher
can set ``ADACS_*`` first.

Task names, their queues and the broker's configuration are the contract with the API and the
reaper, written once in ``service.jobs.tasks``: the API sends tasks by name and never imports this
package.

The choices, and why (Celery ``docs/faq.rst``, "Should I use retry or acks_late?"):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged when its task
  ends, so a worker killed mid-job leaves it to be delivered again; the task is idempotent and
  counts deliveries in ``jobs.attempts`` (``max_attempts`` stops a job that kills every worker).
- ``worker_prefetch_multiplier=1``: a worker reserves one job at a time, so a long training does
  not hold registrations hostage behind it in a reserved batch.
- Redis' ``visibility_timeout`` (from settings) outlasts the longest job; the reaper's heartbeat
  check is the first line against lost jobs, redelivery the second (DESIGN "Jobs survive crashes").
- JSON only, no result backend, results ignored: the job row is the truth and messages carry ids.
- ``worker_max_tasks_per_child`` from ``ADACS_WORKER_MAX_TASKS_PER_CHILD``; time limits from
  settings (enforced by the prefork pool; ``--pool solo`` ignores them).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from service.core.config import Settings, get_settings
from service.core.privacy import use_private_umask
from service.jobs.tasks import (
    CINE_TASK,
    REAP_TASK,
    REGISTRATION_TASK,
    RETENTION_TASK,
    TRAINING_TASK,
    broker_config,
    task_routes,
)
from worker.settings import WorkerSettings, get_worker_settings

__all__ = ["app", "create_app", "celery_config", "TASK_MODULES"]

TASK_MODULES = ["worker.tasks.registration", "worker.tasks.cine", "worker.tasks.training", "worker.reaper",
                "worker.tasks.maintenance"]


def _beat_entry(task: str, every_s: float, settings: Settings) -> dict[str, Any]:
    """A periodic maintenance task, sent to the inference queue (every worker serves it in compose)."""
    return {"task": task, "schedule": every_s, "options": task_routes(settings)[task] | {"expires": every_s}}


def celery_config(settings: Settings, worker_settings: WorkerSettings | None = None) -> dict[str, Any]:
    """Celery's configuration for ``settings`` (see the module docstring for the reasons)."""
    worker_settings = worker_settings or get_worker_settings()
    limit, training_limit = settings.registration_time_limit_s, settings.training_time_limit_s
    return broker_config(settings) | {
        "result_backend": settings.result_backend,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": worker_settings.max_tasks_per_child or None,
        "task_default_queue": settings.inference_queue,
        # Explicit routes for our tasks; senders name the queue anyway (the API, the reaper).
        "task_routes": task_routes(settings),
        # The soft limit raises inside the task, which then records the job as failed; the hard
        # limit kills a task that ignores it.
        "task_annotations": {REGISTRATION_TASK: {"soft_time_limit": max(1.0, 0.9 * limit), "time_limit": limit},
                             CINE_TASK: {"soft_time_limit": max(1.0, 0.9 * limit), "time_limit": limit},
                             TRAINING_TASK: {"soft_time_limit": max(1.0, 0.95 * training_limit),
                                             "time_limit": training_limit}},
        # Celery beat (``celery beat``, or ``worker --beat`` in the embedded mode) runs the reaper and
        # retention; a round that no worker took before the next one is due is dropped (``expires``).
        "beat_schedule": {"reap-stale-jobs": _beat_entry(REAP_TASK, settings.reaper_interval_s, settings),
                          "retention": _beat_entry(RETENTION_TASK, settings.retention_interval_s, settings)},
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app whose configuration is built from ``settings`` (default: the process's) on first use."""
    app = Celery("adacs", include=TASK_MODULES, set_as_current=settings is None)
    app.add_defaults(lambda: celery_config(settings or get_settings()))
    return app


app = create_app()


_concurrency = 1  # processes of this worker's pool, learnt when the worker starts


def torch_threads(concurrency: int, configured: int = 0, cores: int | None = None) -> int:
    """Threads per process: ``configured``, or the cores shared out among the pool's processes."""
    return configured or max(1, (cores or os.cpu_count() or 1) // max(1, concurrency))


def _set_torch_threads() -> None:
    import torch

    torch.set_num_threads(torch_threads(_concurrency, get_worker_settings().torch_threads))


@worker_init.connect
def _size_the_threads(sender: Any = None, **_: Any) -> None:
    """In the worker's main process (where ``--pool solo`` runs tasks) before any task runs."""
    global _concurrency
    use_private_umask()  # outputs and checkpoints are patient data; pool processes inherit it
    # A thread pool's tasks share this one process (and batch their forwards: worker.batching), so
    # its torch threads are not divided among them.
    threads = "thread" in str(getattr(sender, "pool_cls", "")).lower()
    _concurrency = 1 if threads else int(getattr(sender, "concurrency", 1) or 1)
    _set_torch_threads()


@worker_process_init.connect
def _no_inherited_connections(**_: Any) -> None:
    """A forked pool process must not share its parent's database connections (``get_engine`` docs),
    and takes its share of the cores."""
    from service.db import get_engine

    settings = get_settings()
    get_engine(settings.database_url, settings.db_busy_timeout_ms).dispose(close=False)
    _set_torch_threads()

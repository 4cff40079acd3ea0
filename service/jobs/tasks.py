"""The Celery side of the job contract: task names, where each goes, and the one sender.

The API sends a task by name once the job row is committed and never imports ``worker/``; the
reaper sends copies of the same tasks; the worker registers its task functions under these names
and routes them with :func:`task_routes`. Writing all of it here, once, keeps the three in step
(Celery ``faq.rst``: send by name; ``tasks.rst`` "Names": explicit names, namespaced by module).

Messages carry ids only, as JSON: ``args=[job_id]``, plus ``kwargs={"only_if_queued": True}`` on the
reaper's copies, so that a copy claims a job only while it is still queued (``worker.jobs.claim_job``).
Imports no torch and no worker code: the API process and the worker's health check load it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.core.config import Settings

__all__ = ["REGISTRATION_TASK", "CINE_TASK", "PREVIEW_TASK", "TRAINING_TASK", "REAP_TASK", "RETENTION_TASK",
           "TASK_OF_KIND", "FILESYSTEM_POLLING_INTERVAL_S", "task_routes", "broker_config", "client_config",
           "TaskSender"]

REGISTRATION_TASK = "adacs.registration.run"
CINE_TASK = "adacs.cine.run"
PREVIEW_TASK = "adacs.registration.preview"
"""Draws a succeeded registration's ``preview.png`` when a client first asks for it: ``args=[job_id]``."""
TRAINING_TASK = "adacs.training.run"
REAP_TASK = "adacs.maintenance.reap_stale_jobs"
RETENTION_TASK = "adacs.maintenance.retention"
TASK_OF_KIND = {"registration": REGISTRATION_TASK, "cine": CINE_TASK, "training": TRAINING_TASK}
"""The task that runs a job, by ``JobKind`` value."""

# kombu polls the filesystem transport's folder; its default (1 s) would add up to a second to
# every job of the embedded mode, and 0.1 s still added 50 ms on average to a 2D job of ~100 ms.
# A poll lists one small folder: 50 a second cost an idle worker well under 1 % of a core.
FILESYSTEM_POLLING_INTERVAL_S = 0.02
# kombu's own filesystem transport can hand a consumer half a message; ours writes atomically
# (service.fs_broker). Named, not imported: kombu loads it by name.
FILESYSTEM_TRANSPORT = "service.fs_broker:Transport"


def _queues(settings: Settings) -> dict[str, str]:
    """The queue of each job kind: registrations (pairs and cines) to the inference queue, trainings to the
    training one."""
    return {"registration": settings.inference_queue, "cine": settings.inference_queue,
            "training": settings.training_queue}


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: each job's task to its kind's queue; maintenance to the inference queue,
    which every worker serves in compose."""
    queues = _queues(settings)
    return {REGISTRATION_TASK: {"queue": queues["registration"]}, CINE_TASK: {"queue": queues["cine"]},
            PREVIEW_TASK: {"queue": queues["registration"]},
            TRAINING_TASK: {"queue": queues["training"]},
            REAP_TASK: {"queue": settings.inference_queue}, RETENTION_TASK: {"queue": settings.inference_queue}}


def _is_filesystem(settings: Settings) -> bool:
    return (settings.broker_url or "").startswith("filesystem")


def broker_config(settings: Settings) -> dict[str, Any]:
    """Where the broker is and how to reach it, for senders and workers alike."""
    options = settings.broker_transport_options()
    if _is_filesystem(settings):
        settings.ensure_directories()  # kombu's filesystem transport writes into existing folders only
        options["polling_interval"] = FILESYSTEM_POLLING_INTERVAL_S
    return {"broker_url": settings.broker_url, "broker_transport_options": options,
            "broker_transport": FILESYSTEM_TRANSPORT if _is_filesystem(settings) else None,
            "broker_connection_retry_on_startup": True}


def client_config(settings: Settings) -> dict[str, Any]:
    """What a sender needs of Celery's configuration: the broker, JSON messages, no result backend.

    A sender gives up after a few connection retries, so the API answers 503 rather than hang.
    """
    return broker_config(settings) | {
        "broker_connection_max_retries": 3, "result_backend": None, "task_ignore_result": True,
        "task_serializer": "json", "accept_content": ["json"], "task_default_queue": settings.inference_queue,
        "task_routes": task_routes(settings)}


class TaskSender:
    """Sends the task of a job: the API's entry (after the row is committed) and the reaper's.

    ``app`` is the Celery app whose connection sends; by default a small client app of this sender's
    own (the API's), while the reaper passes the worker's app, which is already connected. The queue
    names can be overridden (tests use unique ones).
    """

    def __init__(self, settings: Settings, inference_queue: str | None = None, training_queue: str | None = None,
                 *, app: Celery | None = None) -> None:
        self._owns_app = app is None
        if app is None:
            app = Celery("adacs-api", set_as_current=False)
            app.conf.update(client_config(settings))
        self.app = app
        overrides = (("registration", inference_queue), ("cine", inference_queue), ("training", training_queue))
        self.queues = _queues(settings) | {kind: queue for kind, queue in overrides if queue}

    @property
    def inference_queue(self) -> str:
        return self.queues["registration"]

    @property
    def training_queue(self) -> str:
        return self.queues["training"]

    def send(self, kind: str, job_id: str, *, only_if_queued: bool = False) -> None:
        """Queue the task of job ``job_id`` of ``kind`` (a ``JobKind`` or its value).

        ``only_if_queued`` marks a copy (the reaper's): the task then claims only a job still queued.
        """
        kind = getattr(kind, "value", kind)  # a JobKind is looked up by its value
        kwargs = {"only_if_queued": True} if only_if_queued else {}
        self.app.send_task(TASK_OF_KIND[kind], args=[job_id], kwargs=kwargs, queue=self.queues[kind])

    def send_preview(self, job_id: str) -> None:
        """Ask a worker to draw the preview of succeeded registration ``job_id`` (:data:`PREVIEW_TASK`)."""
        self.app.send_task(PREVIEW_TASK, args=[job_id], queue=self.inference_queue)

    def close(self) -> None:
        """Release the connections of the app this sender made (never those of an app it was given)."""
        if self._owns_app:
            self.app.close()

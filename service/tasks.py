"""Sending tasks to the workers by name, from the API process, without importing ``worker/``.

The names and queues are the contract written down in ``worker.celery_app`` (they are repeated
here, not imported: the API must not load the worker package). The client app is configured from
the same settings as the workers' (broker URL and transport options, JSON only, no result backend)
and only ever sends messages that carry ids.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.core.config import Settings

__all__ = ["REGISTRATION_TASK", "TRAINING_TASK", "INFERENCE_QUEUE", "TRAINING_QUEUE", "TaskSender", "client_config"]

REGISTRATION_TASK = "adacs.registration.run"
TRAINING_TASK = "adacs.training.run"
INFERENCE_QUEUE, TRAINING_QUEUE = "inference", "training"
FILESYSTEM_POLLING_INTERVAL_S = 0.1
FILESYSTEM_TRANSPORT = "service.fs_broker:Transport"  # repeated, not imported: kombu loads it by name


def client_config(settings: Settings) -> dict[str, Any]:
    """What a sender needs of Celery's configuration: where the broker is and how messages look."""
    options, transport = settings.broker_transport_options(), None
    if (settings.broker_url or "").startswith("filesystem"):
        settings.ensure_directories()  # kombu's filesystem transport writes into existing folders only
        options["polling_interval"] = FILESYSTEM_POLLING_INTERVAL_S
        transport = FILESYSTEM_TRANSPORT  # atomic writes (see service.fs_broker)
    return {"broker_url": settings.broker_url, "broker_transport": transport, "broker_transport_options": options,
            "broker_connection_retry_on_startup": True, "broker_connection_max_retries": 3,
            "result_backend": None, "task_ignore_result": True, "task_serializer": "json",
            "accept_content": ["json"], "task_default_queue": INFERENCE_QUEUE}


class TaskSender:
    """A small Celery client app; the queue names can be overridden (tests use unique ones)."""

    def __init__(self, settings: Settings, inference_queue: str | None = None,
                 training_queue: str | None = None) -> None:
        self.app = Celery("adacs-api", set_as_current=False)
        self.app.conf.update(client_config(settings))
        self.inference_queue = inference_queue or settings.inference_queue
        self.training_queue = training_queue or settings.training_queue

    def send_registration(self, job_id: str) -> None:
        """Queue ``adacs.registration.run(job_id)``; call it only after the job row is committed."""
        self.app.send_task(REGISTRATION_TASK, args=[job_id], queue=self.inference_queue)

    def send_training(self, job_id: str) -> None:
        """Queue ``adacs.training.run(job_id)``; call it only after the job row is committed."""
        self.app.send_task(TRAINING_TASK, args=[job_id], queue=self.training_queue)

    def send(self, kind: str, job_id: str) -> None:
        """Queue the task of a job of ``kind`` (``registration`` or ``training``): the reaper's entry."""
        {"registration": self.send_registration, "training": self.send_training}[kind](job_id)

    def close(self) -> None:
        self.app.close()

"""What the end-to-end registration tests share: the API and a real Celery worker on a queue of their own."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from service.core.config import Settings
from service.db import upgrade_database
from service.main import create_app


@pytest.fixture(scope="module")
def registration_stack(redis_url: str, model_zip: bytes, live_server, module_worker_process) -> Callable:
    """``registration_stack(data, url, model, env=None, pool=("solo", 1))``: a context manager that serves the API
    on ``url`` (a database) with one worker on a fresh Redis queue, uploads the tiny model as ``model``
    and promotes it; the server it yields has ``worker``. The queue's keys go when it exits.

    The worker gets as many torch threads as this process (the same kernels as ``adacs register``
    here, so the same sums); ``env`` adds to its environment, ``pool`` is ``(name, concurrency)``.
    """
    @contextmanager
    def serve(data: Path, url: str, model: str, env: dict[str, str] | None = None,
              pool: tuple[str, int] = ("solo", 1)) -> Iterator:
        import redis

        upgrade_database(url)
        queue = f"inference-e2e-{secrets.token_hex(6)}"
        settings = Settings(data_dir=data / "data", database_url=url, broker_url=redis_url, default_model=model)
        worker = module_worker_process(
            {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": url, "ADACS_BROKER_URL": redis_url,
             "ADACS_ARTIFACT_DIR": str(settings.artifact_dir),
             "ADACS_WORKER_TORCH_THREADS": str(torch.get_num_threads())} | (env or {}),
            [queue], data / "worker.log", pool=pool)
        try:
            with live_server(create_app(settings, inference_queue=queue), settings, timeout=60) as server:
                response = server.client.post("/v1/models", data={"name": model},
                                              files={"file": ("model.zip", model_zip)})
                assert response.status_code == 201, response.text
                response = server.client.post(f"/v1/models/{model}/versions/1/promote", json={"stage": "production"})
                assert response.status_code == 200, response.text
                server.worker = worker
                yield server
        finally:
            worker.stop()
            redis.Redis.from_url(redis_url).delete(queue, f"_kombu.binding.{queue}",
                                                   f"_kombu.binding_permanent.{queue}")

    return serve

"""Knobs that only the worker process reads, from ``ADACS_WORKER_*`` environment variables.

They are apart from ``service.core.config.Settings`` because the API process has no use for them;
like those, they are read when first needed, never at import time.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WorkerSettings", "get_worker_settings"]


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADACS_WORKER_", extra="ignore")

    # A fresh process now and then bounds slow growth (allocator fragmentation, library caches)
    # while the per-process model cache still serves many registrations; 0 means never.
    max_tasks_per_child: int = Field(100, ge=0, description="tasks a worker process runs before it is replaced")
    model_cache_size: int = Field(2, ge=1, description="loaded models kept per worker process")
    # PyTorch starts one thread per core in every process: N pool processes would run N x cores
    # threads and slow each other down many times over (measured: a 2D forward 16 ms -> 464 ms).
    torch_threads: int = Field(0, ge=0, description="PyTorch threads per worker process (0: cores / concurrency)")
    # A thread pool's concurrent registrations share one forward (worker.batching); 1 turns it off.
    inference_batch: int = Field(16, ge=1, le=1024, description="pairs at most in one batched forward")
    batch_window_ms: float = Field(5.0, ge=0, le=1000, description="how long a batch waits for registrations "
                                   "still reading their inputs")


@lru_cache
def get_worker_settings() -> WorkerSettings:
    """The process's worker settings, built on first use. Tests call ``get_worker_settings.cache_clear()``."""
    return WorkerSettings()

"""Loaded models kept per worker process, keyed by the version's content digest.

A registration takes well under a second on a GPU, loading the model far longer (CUDA context,
weights): each process keeps its last few models. The key is the artifact's sha256, which names
immutable content, so a cached model can never be stale; a promoted label changes the key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.storage import ArtifactStore

if TYPE_CHECKING:  # models.artifact imports torch; the cache does so only when it loads
    from models.artifact import LoadedModel

__all__ = ["ModelCache", "CacheInfo", "default_device", "MODEL_CACHE"]


def default_device() -> str:
    """``cuda`` when this process sees a GPU, else ``cpu`` (asked only in the process that runs models)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    loads: int
    size: int


class ModelCache:
    """The ``maxsize`` most recently used models; ``get`` loads on a miss (thread-safe)."""

    def __init__(self, maxsize: int | None = None) -> None:
        self.maxsize = maxsize
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._loads = 0

    def get(self, store: ArtifactStore, sha256: str, device: str | None = None) -> LoadedModel:
        """The model stored as directory ``sha256`` (``load_artifact`` on its checkout)."""
        from models.artifact import load_artifact

        with self._lock:
            if sha256 in self._models:
                self._hits += 1
                self._models.move_to_end(sha256)
                return self._models[sha256]
            model = load_artifact(store.checkout_dir(sha256), device=device or default_device())
            self._loads += 1
            self._models[sha256] = model
            while len(self._models) > self._limit():
                self._models.popitem(last=False)
            return model

    def info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._loads, len(self._models))

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._hits = self._loads = 0

    def _limit(self) -> int:
        if self.maxsize is not None:
            return self.maxsize
        from worker.settings import get_worker_settings

        return get_worker_settings().model_cache_size


MODEL_CACHE = ModelCache()

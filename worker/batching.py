"""Concurrent registrations' network forwards, run as one batch in a worker process.

Why: on a GPU a forward over 16 pairs takes about the time of one, so a worker whose pool runs
several registrations at once (``--pool threads``, ``WORKER_POOL=threads``) should not run their
forwards one by one. Only the forward is shared: each job keeps its whole life (claim, heartbeat,
progress, outcome, retry) in its own task thread, as with any pool, so one job's failure or
cancellation is its own.

How: a registration runs inside :meth:`ForwardBatcher.registering` and hands its model-grid
tensors to the batcher (``models.register``'s ``forward`` hook). The first request of a model and
grid leads: it waits until every registration of this process that has not yet reached its forward
has handed its own, or ``max_pairs`` pairs are waiting, or ``window_s`` has passed, whichever
comes first; then it runs one forward over all of them and hands each request its slice. A lone
registration (a solo or prefork worker: one task per process) therefore never waits. If the
batched forward raises, each request is run alone, so that the error stays with the job that
caused it and the others succeed.

On a CPU the batch buys little (a forward's cost grows with its pairs; ``benchmarks/results/
service_throughput.md``); the thread pool's concurrency is what helps there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from models.inference import predict_deformation
from models.networks.estimator import Deformation, DisplacementEstimator
from worker.settings import get_worker_settings

__all__ = ["ForwardBatcher", "BatchStats", "forward_batcher"]

log = logging.getLogger(__name__)
FIELDS = ("vel", "disp", "disp_inv")


@dataclass
class _Request:
    estimator: DisplacementEstimator
    moving: torch.Tensor
    fixed: torch.Tensor
    done: threading.Event = field(default_factory=threading.Event)
    result: Deformation | None = None
    error: BaseException | None = None

    @property
    def pairs(self) -> int:
        return int(self.moving.shape[0])

    def key(self) -> tuple:
        """Requests batch together when one network reads tensors of one shape, type and device."""
        return id(self.estimator), tuple(self.moving.shape[1:]), self.moving.dtype, self.moving.device


@dataclass(frozen=True)
class BatchStats:
    """Forwards run and the requests (registrations) and pairs they served, since the process started."""

    forwards: int
    requests: int
    pairs: int


class ForwardBatcher:
    """A ``models.register.Forward`` that runs concurrent threads' requests as one forward.

    ``max_pairs`` bounds a batch (and is the chunk of one forward, for memory); ``window_s`` bounds how
    long a leader waits for registrations still reading their inputs. ``max_pairs <= 1`` turns
    batching off: every call is :func:`~models.inference.predict_deformation` as it is.
    """

    def __init__(self, max_pairs: int = 16, window_s: float = 0.005) -> None:
        self.max_pairs, self.window_s = max_pairs, window_s
        self._cond = threading.Condition()
        self._waiting: dict[tuple, list[_Request]] = {}
        self._expected = 0  # registrations in this process that have not handed their forward yet
        self._local = threading.local()
        self._forwards = self._requests = self._pairs = 0

    @contextmanager
    def registering(self) -> Iterator[None]:
        """The span of one registration in this thread: the batcher expects one forward from it."""
        with self._cond:
            self._expected += 1
        self._local.expected = True
        try:
            yield
        finally:
            self._handed()

    def _handed(self) -> None:
        """This thread's registration no longer owes a forward (it handed one, or ended before)."""
        if getattr(self._local, "expected", False):
            self._local.expected = False
            with self._cond:
                self._expected -= 1
                self._cond.notify_all()

    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._forwards, self._requests, self._pairs)

    def __call__(self, estimator: DisplacementEstimator, moving: torch.Tensor, fixed: torch.Tensor,
                 batch_size: int = 16, progress: Callable[[Iterable, int], Iterable] | None = None) -> Deformation:
        if self.max_pairs <= 1:
            self._handed()
            self._count([moving.shape[0]])
            return predict_deformation(estimator, moving, fixed, batch_size, progress)
        request = _Request(estimator, moving, fixed)
        batch = self._join(request)
        if batch is not None:
            self._run(batch)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _join(self, request: _Request) -> list[_Request] | None:
        """Queue ``request``; the batch to run if this thread leads it, else None (another thread runs it)."""
        key = request.key()
        with self._cond:
            queue = self._waiting.setdefault(key, [])
            queue.append(request)
            if getattr(self._local, "expected", False):
                self._local.expected = False
                self._expected -= 1
            self._cond.notify_all()
            if len(queue) > 1:
                return None
            deadline = time.monotonic() + self.window_s
            while sum(r.pairs for r in queue) < self.max_pairs and self._expected > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            del self._waiting[key]
            return queue

    def _run(self, batch: list[_Request]) -> None:
        """One forward over ``batch``, each request's slice handed back; each alone if that fails."""
        try:
            try:
                whole = predict_deformation(batch[0].estimator, torch.cat([r.moving for r in batch]),
                                            torch.cat([r.fixed for r in batch]), self.max_pairs)
            except Exception:
                if len(batch) == 1:
                    raise
                log.warning("a batched forward of %d registrations failed; running each alone", len(batch),
                            exc_info=True)
                self._run_alone(batch)
                return
            self._count([r.pairs for r in batch])
            if len(batch) > 1:
                log.info("one forward for %d registrations (%d pairs)", len(batch), sum(r.pairs for r in batch))
            parts = {name: torch.split(getattr(whole, name), [r.pairs for r in batch]) for name in FIELDS}
            for i, request in enumerate(batch):
                request.result = Deformation(**{name: parts[name][i] for name in FIELDS})
        except BaseException as error:
            for request in batch:
                if request.result is None and request.error is None:
                    request.error = error
        finally:
            for request in batch:
                request.done.set()

    def _run_alone(self, batch: list[_Request]) -> None:
        for request in batch:
            try:
                request.result = predict_deformation(request.estimator, request.moving, request.fixed, self.max_pairs)
                self._count([request.pairs])
            except Exception as error:
                request.error = error

    def _count(self, pairs: list[int]) -> None:
        with self._cond:
            self._forwards += 1
            self._requests += len(pairs)
            self._pairs += sum(pairs)


@lru_cache
def forward_batcher() -> ForwardBatcher:
    """The process's batcher, sized by ``ADACS_WORKER_INFERENCE_BATCH`` and ``ADACS_WORKER_BATCH_WINDOW_MS``."""
    settings = get_worker_settings()
    return ForwardBatcher(settings.inference_batch, settings.batch_window_ms / 1000)

"""worker/batching.py: concurrent registrations share one forward; a failure stays with its job."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch

from models.inference import predict_deformation
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from service.db import JobStatus
from worker import batching
from worker.batching import ForwardBatcher
from worker.model_cache import MODEL_CACHE
from worker.tasks.registration import run_registration


@pytest.fixture(scope="module")
def estimator():
    torch.manual_seed(0)
    net = build_estimator(EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)))
    with torch.no_grad():
        net.flow.weight.normal_(0.0, 0.3)
    return net.eval()


def pair(seed: int, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.rand(n, 1, 16, 16, generator=g)


class Counting:
    """Counts the estimator's forwards and the pairs each saw."""

    def __init__(self, estimator) -> None:
        self.sizes: list[int] = []
        self.handle = estimator.register_forward_pre_hook(lambda _m, args: self.sizes.append(args[0].shape[0]))


def run_together(batcher: ForwardBatcher, estimator, inputs, expected: int | None = None):
    """Each input in its own thread, all inside ``registering`` before any forward is asked for."""
    barrier = threading.Barrier(len(inputs))

    def one(moving_fixed):
        with batcher.registering():
            barrier.wait()
            try:
                return batcher(estimator, *moving_fixed)
            except Exception as error:  # noqa: BLE001 - the test reads it
                return error

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, inputs))


def test_concurrent_requests_run_as_one_forward_with_each_result_its_own(estimator):
    batcher = ForwardBatcher(max_pairs=16, window_s=5.0)  # a long window: it must not be what ends the wait
    inputs = [pair(seed, n) for seed, n in ((0, 1), (1, 3), (2, 1), (3, 2))]
    counting = Counting(estimator)
    try:
        start = time.monotonic()
        results = run_together(batcher, estimator, inputs)
        elapsed = time.monotonic() - start
    finally:
        counting.handle.remove()
    assert counting.sizes == [7], "one forward over every pair"
    assert elapsed < 4.0, "the leader went as soon as every registration had handed its request"
    assert batcher.stats() == batching.BatchStats(forwards=1, requests=4, pairs=7)
    for (moving, fixed), result in zip(inputs, results):
        alone = predict_deformation(estimator, moving, fixed)
        for name in batching.FIELDS:
            assert getattr(result, name).shape == getattr(alone, name).shape
            torch.testing.assert_close(getattr(result, name), getattr(alone, name), atol=1e-5, rtol=1e-4)


def test_a_failing_request_fails_alone_and_the_others_get_their_fields(estimator, monkeypatch):
    def flat_moving_fails(est, moving, fixed, batch_size=16, progress=None):
        if bool((moving.flatten(1).std(dim=1) == 0).any()):
            raise RuntimeError("a flat moving image")
        return predict_deformation(est, moving, fixed, batch_size, progress)

    monkeypatch.setattr(batching, "predict_deformation", flat_moving_fails)
    batcher = ForwardBatcher(max_pairs=16, window_s=5.0)
    inputs = [pair(0), (torch.zeros(1, 1, 16, 16), pair(1)[1]), pair(2)]
    results = run_together(batcher, estimator, inputs)
    assert isinstance(results[1], RuntimeError) and "flat" in str(results[1])
    for i in (0, 2):
        torch.testing.assert_close(results[i].disp, predict_deformation(estimator, *inputs[i]).disp,
                                   atol=1e-5, rtol=1e-4)


def test_a_lone_registration_does_not_wait_for_the_window(estimator):
    batcher = ForwardBatcher(max_pairs=16, window_s=30.0)
    start = time.monotonic()
    with batcher.registering():
        batcher(estimator, *pair(0))
    assert time.monotonic() - start < 5.0
    # Outside any registration (the CLI's way of calling) nobody is awaited either.
    batcher(estimator, *pair(1))
    assert batcher.stats().forwards == 2


def test_a_full_batch_goes_without_waiting_for_the_rest(estimator):
    batcher = ForwardBatcher(max_pairs=2, window_s=30.0)
    counting = Counting(estimator)
    try:
        with ThreadPoolExecutor(1) as pool:
            # A registration that never reaches its forward (still reading, say) is not awaited once
            # the batch is full.
            pool.submit(lambda: batcher.registering().__enter__()).result()
            start = time.monotonic()
            batcher(estimator, *pair(0, 2))
        assert time.monotonic() - start < 5.0 and counting.sizes == [2]
    finally:
        counting.handle.remove()


def test_batching_off_runs_each_forward_as_it_is(estimator):
    batcher = ForwardBatcher(max_pairs=1)
    results = run_together(batcher, estimator, [pair(0), pair(1)])
    assert batcher.stats() == batching.BatchStats(forwards=2, requests=2, pairs=2)
    torch.testing.assert_close(results[1].disp, predict_deformation(estimator, *pair(1)).disp)


# The worker: real jobs (rows, files, heartbeats) in concurrent threads, as Celery's thread pool runs them.


@pytest.fixture(autouse=True)
def empty_model_cache():
    MODEL_CACHE.clear()
    yield
    MODEL_CACHE.clear()


def test_jobs_in_a_thread_pool_share_a_forward_and_a_bad_one_fails_alone(settings, register_model, create_job,
                                                                         load_job, image_pair, monkeypatch):
    register_model(settings)
    # The stand-in for a job whose forward fails (no valid upload makes the network raise): the
    # forward below refuses a pair whose moving image is its fixed image.
    bad = create_job(settings, files=dict(image_pair, moving=image_pair["fixed"]))
    good = [create_job(settings) for _ in range(3)]
    jobs = [good[0], bad, *good[1:]]
    alone = create_job(settings)
    run_registration(alone, settings=settings)  # the same pair without any batch, for comparison

    real = batching.predict_deformation
    sizes: list[int] = []

    def counting_and_refusing_same(est, moving, fixed, batch_size=16, progress=None):
        sizes.append(moving.shape[0])
        if bool(((moving - fixed).flatten(1).abs().amax(dim=1) == 0).any()):
            raise RuntimeError("moving is fixed")
        return real(est, moving, fixed, batch_size, progress)

    monkeypatch.setattr(batching, "predict_deformation", counting_and_refusing_same)
    batcher = ForwardBatcher(max_pairs=16, window_s=10.0)
    monkeypatch.setattr(batching, "forward_batcher", lambda: batcher)
    barrier = threading.Barrier(len(jobs))
    entered = batcher.registering

    @contextmanager
    def registering_together():  # every job is in its registration before any reaches its forward
        with entered():
            barrier.wait()
            yield

    monkeypatch.setattr(batcher, "registering", registering_together)
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job_id: run_registration(job_id, settings=settings), jobs))

    assert sizes[0] == len(jobs), "the first forward held every job's pair"
    assert sorted(sizes[1:]) == [1] * len(jobs), "then each alone, once the batch had failed"
    failed = load_job(settings, bad)
    assert failed.status == JobStatus.FAILED and "internal_error" in failed.error and failed.attempts == 1
    reference = load_job(settings, alone).result["report"]
    for job_id in good:
        job = load_job(settings, job_id)
        assert job.status == JobStatus.SUCCEEDED and job.attempts == 1, job.error
        assert job.result["report"]["dice"] == pytest.approx(reference["dice"], abs=1e-6)

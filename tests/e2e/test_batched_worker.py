"""End to end: a Celery worker with a thread pool (``--pool threads``) on real Redis and PostgreSQL runs
concurrent registrations, which share their network forwards (``worker.batching``). Every job
keeps its own outcome, and its files equal, to float tolerance, what ``adacs register`` writes
for the same pair (a batched forward sums in another order than a forward of one pair).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from service.cli import main as adacs

MODEL = "batched"
THREADS = 4
JOBS = 12
TIMEOUT_S = 120


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def batched(registration_stack, postgres_database, tmp_path_factory):
    # A long window: a batch goes as soon as every running registration has handed its forward.
    with registration_stack(tmp_path_factory.mktemp("batched"), postgres_database(), MODEL,
                            {"ADACS_WORKER_BATCH_WINDOW_MS": "1000"}, pool=("threads", THREADS)) as server:
        yield server


def register(server, files: dict[str, tuple[str, bytes]]) -> dict:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        response = client.post("/v1/registrations", files=files, params={"wait": 60})
        assert response.status_code in (200, 202), response.text
        job = response.json()
        deadline = time.monotonic() + TIMEOUT_S
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = client.get(f"/v1/registrations/{job['id']}").json()
        return job


def test_concurrent_registrations_share_forwards_and_match_the_cli(batched, image_pair, model_dir, tmp_path):
    files = {role: (path.name, path.read_bytes()) for role, path in image_pair.items()}
    with ThreadPoolExecutor(JOBS) as pool:
        jobs = list(pool.map(lambda _: register(batched, files), range(JOBS)))
    log = batched.worker.tail(200_000)
    outcomes = [(job["status"], job["error"]) for job in jobs]
    assert all(job["status"] == "succeeded" for job in jobs), f"{outcomes}\n{log[-4000:]}"
    assert "one forward for" in log, "no two registrations shared a forward"

    local = tmp_path / "local"
    argv = ["register", "--model", str(model_dir), "--out", str(local), "--device", "cpu"]
    for role, path in image_pair.items():
        argv += [f"--{role.replace('_', '-')}", str(path)]
    assert adacs(argv) == 0
    expected = read(local / "displacement.nii.gz")
    for job in jobs:
        served = tmp_path / f"{job['id']}.nii.gz"
        served.write_bytes(batched.client.get(f"/v1/registrations/{job['id']}/displacement").content)
        np.testing.assert_allclose(read(served), expected, atol=1e-4)
        assert job["report"]["dice"] == pytest.approx(jobs[0]["report"]["dice"], abs=0.5)

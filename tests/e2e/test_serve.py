"""``adacs serve``, the embedded default, as a user runs it: one subprocess, nothing else started.

This is the README's run command (``bash .ci/install && .venv/bin/adacs serve``; CI has run the
install on a clean clone before the tests, and the test adds only ``--port`` and ``--data-dir`` so
parallel runs cannot collide). The service comes up on SQLite and the filesystem broker under a
fresh data folder with the bundled starter model registered; a cardiac-like 3D stack is registered
with it (no model named: the default), a tiny model is uploaded and promoted over HTTP and a NIfTI
pair is registered with it by serve's own worker, and SIGTERM stops serve and its worker (no
orphan). The worker supervisor is also checked on its own with a stand-in child process.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import SimpleITK as sitk

from service.serve import WORKER_PID_FILE, WorkerSupervisor, worker_command

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
README_RUN = "bash .ci/install && .venv/bin/adacs serve"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


def register(client: httpx.Client, files: dict, data: dict, log: Path) -> dict:
    """Upload a pair, wait for its job to finish (up to 60 s) and return it; it must have succeeded."""
    response = client.post("/v1/registrations", files=files, data=data)
    assert response.status_code == 202, response.text
    job_id, job = response.json()["id"], {}

    def finished() -> bool:
        nonlocal job
        job = client.get(f"/v1/registrations/{job_id}").json()
        return job["status"] in ("succeeded", "failed", "cancelled")

    assert wait_until(finished, 60, 0.2), f"job still {job.get('status')}:\n{tail(log)}"
    assert job["status"] == "succeeded", f"{job['error']}\n{tail(log)}"
    return job


@pytest.fixture(scope="module")
def cardiac_stack(tmp_path_factory) -> dict[str, Path]:
    """A short-axis-like 3D stack (6 phantom slices, 1.5 mm in plane, 8 mm apart) with masks, as NIfTI."""
    import numpy as np

    from models.data.synthetic import PhantomConfig, make_phantom_pair

    pairs = [make_phantom_pair(PhantomConfig(size=96, seed=11), i) for i in range(6)]
    folder, paths = tmp_path_factory.mktemp("stack"), {}
    for role in ROLES:
        image = sitk.GetImageFromArray(np.stack([getattr(p, role) for p in pairs]))
        image.SetSpacing((1.5, 1.5, 8.0))
        paths[role] = folder / f"{role}.nii.gz"
        sitk.WriteImage(image, str(paths[role]))
    return paths


def test_serve_registers_trains_and_stops_its_worker_on_sigterm(model_zip, image_pair, cardiac_stack, dataset_zip,
                                                                tmp_path):
    port, data, log = free_port(), tmp_path / "adacs-data", tmp_path / "serve.log"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_RUN in readme, "the README's run command changed: update this test with it"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")}
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data)]
    with open(log, "wb") as handle:
        serve = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    worker_pid = None
    try:
        def ready() -> bool:
            assert serve.poll() is None, f"serve exited with {serve.returncode}:\n{tail(log)}"
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(ready, 60, 0.2), f"/readyz never answered 200:\n{tail(log)}"
        assert f"http://127.0.0.1:{port}" in tail(log) and str(data.resolve()) in tail(log)
        assert (data / "adacs.db").is_file() and (data / "broker" / "queue").is_dir()
        worker_pid = int((data / WORKER_PID_FILE).read_text())
        assert alive(worker_pid)

        starter = client.get("/v1/models/starter").json()
        assert starter["stages"] == {"production": 1}, starter
        card = starter["versions"][0]["card"]
        assert "ACDC" in card["data"]["dataset"] and "Bernard" in card["data"]["citation"]
        assert "Research use only" in card["intended_use"]
        job = register(client, {role: (p.name, p.read_bytes()) for role, p in cardiac_stack.items()}, {}, log)
        assert job["model_version"] == "starter:1" and job["report"]["dice"]["2"] > 0, job["report"]
        displacement = client.get(f"/v1/registrations/{job['id']}/displacement")
        (tmp_path / "displacement.nii.gz").write_bytes(displacement.content)
        field = sitk.ReadImage(str(tmp_path / "displacement.nii.gz"))
        assert field.GetSize() == sitk.ReadImage(str(cardiac_stack["fixed"])).GetSize()

        response = client.post("/v1/models", data={"name": MODEL}, files={"file": ("model.zip", model_zip)})
        assert response.status_code == 201, response.text
        response = client.post(f"/v1/models/{MODEL}/versions/1/promote", json={"stage": "production"})
        assert response.status_code == 200, response.text

        files = {role: (path.name, path.read_bytes()) for role, path in image_pair.items()}
        job = register(client, files, {"model": MODEL}, log)
        assert job["model_version"] == f"{MODEL}:1"
        response = client.get(f"/v1/registrations/{job['id']}/warped-mask")
        assert response.status_code == 200, response.text
        (tmp_path / "warped_mask.nii.gz").write_bytes(response.content)
        warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped_mask.nii.gz")))
        assert warped.shape == (32, 32) and warped.any()

        # Training on the server-less broker too: a dataset, a short job, its model in the registry.
        dataset = client.post("/v1/datasets", files={"file": ("study.zip", dataset_zip)}).json()
        job = client.post("/v1/training-jobs", json={
            "dataset_id": dataset["id"], "model_name": "embedded", "method": "none",
            "hyperparameters": {"warmup_epochs": 0, "epochs": 1, "steps_per_epoch": 2, "batch_size": 2,
                                "crop": None}}).json()
        assert wait_until(lambda: client.get(job["url"]).json()["status"] not in ("queued", "running"), 90, 0.2)
        job = client.get(job["url"]).json()
        assert job["status"] == "succeeded" and job["model_version"] == "embedded:1", f"{job}\n{tail(log)}"

        # Patient data stays the service user's: the database, uploads, the worker's outputs and
        # checkpoints, the broker's messages (issue 11).
        loose = [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in [data, *data.rglob("*")]
                 if not p.is_symlink() and p.lstat().st_mode & 0o077]
        assert loose == [], loose[:10]
        assert any((data / "artifacts" / "jobs").rglob("*.nii.gz")) and (data / "adacs.db").is_file()
    finally:
        client.close()
        serve.send_signal(signal.SIGTERM)
        try:
            returncode = serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
            if worker_pid is not None and alive(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)
            pytest.fail(f"serve did not exit within 20 s of SIGTERM:\n{tail(log)}")
    assert returncode == 0, tail(log)
    assert worker_pid is not None and not alive(worker_pid), "serve left its worker running"
    assert not (data / WORKER_PID_FILE).exists()


SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_supervisor_restarts_a_worker_that_dies_and_stops_it_for_good(tmp_path):
    supervisor = WorkerSupervisor(SLEEPER, pid_file=tmp_path / "worker.pid", max_backoff_s=0.1, poll_s=0.02)
    supervisor.start()
    try:
        first = supervisor.pid
        assert int((tmp_path / "worker.pid").read_text()) == first
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: supervisor.pid != first and supervisor.restarts == 1, 5)
        second = supervisor.pid
        assert alive(second) and int((tmp_path / "worker.pid").read_text()) == second
    finally:
        returncode = supervisor.stop()
    assert returncode == -signal.SIGTERM and not alive(second) and not alive(first)
    assert not (tmp_path / "worker.pid").exists() and not supervisor.gave_up


def test_supervisor_gives_up_on_a_worker_that_keeps_dying(tmp_path):
    gave_up = []
    supervisor = WorkerSupervisor([sys.executable, "-c", "raise SystemExit(3)"], max_backoff_s=0.01, poll_s=0.02,
                                  max_quick_failures=3, on_give_up=lambda: gave_up.append(True))
    supervisor.start()
    try:
        assert wait_until(lambda: supervisor.gave_up, 10)
    finally:
        assert supervisor.stop() == 3
    assert gave_up == [True] and supervisor.restarts == 2


def test_supervisor_kills_a_worker_that_ignores_sigterm(tmp_path):
    # The child says it is ready in a file once SIGTERM is ignored (the supervisor does not capture its
    # output): stopped before that, it would die of the SIGTERM and prove nothing.
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)")
    supervisor = WorkerSupervisor([sys.executable, "-c", child, str(ready)], stop_timeout_s=0.5, poll_s=0.02)
    supervisor.start()
    installed, pid = wait_until(ready.exists, 30), supervisor.pid
    returncode = supervisor.stop()
    assert installed, "the child never installed its SIGTERM handler"
    assert returncode == -signal.SIGKILL and not alive(pid)


def test_worker_command_pools():
    assert worker_command(1)[worker_command(1).index("--pool") + 1] == "solo"
    many = worker_command(3)
    assert many[many.index("--pool") + 1] == "prefork" and many[many.index("--concurrency") + 1] == "3"
    assert many[many.index("--queues") + 1] == "inference,training"
    threads = worker_command(4, pool="threads")
    assert threads[threads.index("--pool") + 1] == "threads" and threads[threads.index("--concurrency") + 1] == "4"
    with pytest.raises(ValueError):
        worker_command(0)
    with pytest.raises(ValueError, match="--pool"):
        worker_command(2, pool="gevent")

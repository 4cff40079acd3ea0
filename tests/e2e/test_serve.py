"""``adacs serve``, the embedded default, as a user runs it: one subprocess, nothing else started.

The service comes up on SQLite and the filesystem broker under a fresh data folder, a tiny model is
uploaded and promoted over HTTP, a NIfTI pair with masks is registered by serve's own worker, and
SIGTERM stops serve and its worker (no orphan). The worker supervisor is also checked on its own
with a stand-in child process.
"""

from __future__ import annotations

import os
import signal
import socket
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


def test_serve_registers_a_pair_and_stops_its_worker_on_sigterm(model_zip, image_pair, tmp_path):
    port, data, log = free_port(), tmp_path / "adacs-data", tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")} | {"ADACS_DEFAULT_MODEL": MODEL}
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

        response = client.post("/v1/models", data={"name": MODEL}, files={"file": ("model.zip", model_zip)})
        assert response.status_code == 201, response.text
        response = client.post(f"/v1/models/{MODEL}/versions/1/promote", json={"stage": "production"})
        assert response.status_code == 200, response.text

        files = {role: (path.name, path.read_bytes()) for role, path in image_pair.items()}
        response = client.post("/v1/registrations", files=files)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        job = {}

        def finished() -> bool:
            nonlocal job
            job = client.get(f"/v1/registrations/{job_id}").json()
            return job["status"] in ("succeeded", "failed", "cancelled")

        assert wait_until(finished, 45, 0.2), f"job still {job.get('status')}:\n{tail(log)}"
        assert job["status"] == "succeeded", f"{job['error']}\n{tail(log)}"
        assert job["model_version"] == f"{MODEL}:1"
        response = client.get(f"/v1/registrations/{job_id}/warped-mask")
        assert response.status_code == 200, response.text
        (tmp_path / "warped_mask.nii.gz").write_bytes(response.content)
        warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped_mask.nii.gz")))
        assert warped.shape == (32, 32) and warped.any()
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
    stubborn = [sys.executable, "-c", "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "print('ready', flush=True); time.sleep(60)"]
    supervisor = WorkerSupervisor(stubborn, stop_timeout_s=0.5, poll_s=0.02)
    supervisor.start()
    time.sleep(0.5)  # let it install its handler
    pid = supervisor.pid
    assert supervisor.stop() == -signal.SIGKILL and not alive(pid)


def test_worker_command_pools():
    assert worker_command(1)[worker_command(1).index("--pool") + 1] == "solo"
    many = worker_command(3)
    assert many[many.index("--pool") + 1] == "prefork" and many[many.index("--concurrency") + 1] == "3"
    assert many[many.index("--queues") + 1] == "inference,training"
    with pytest.raises(ValueError):
        worker_command(0)

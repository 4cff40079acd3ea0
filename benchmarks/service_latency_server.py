"""The embedded ``adacs serve`` that ``service_latency.py`` measures, on a free port, stopped however the run ends.

A subprocess of its own, in its own session, with the caller's ``ADACS_*`` variables cleared so the
benchmark measures the defaults and not whatever the shell points at.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the repository: serve runs from here, as `python -m service.cli`


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so two runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    """The end of serve's log, shown when the run fails: the server's side of the story."""
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def embedded_server(data_dir: Path, workers: int, threads: int | None = None,
                    ready_timeout_s: float = 180.0, pool: str | None = None) -> Iterator[str]:
    """``adacs serve`` on a free port; stopped with SIGINT (then a wait) however the block ends."""
    port, log = free_port(), data_dir.parent / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op default in the worker
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--workers", str(workers), *(["--pool", pool] if pool else [])]
    with open(log, "wb") as handle:
        # A session of its own: a Ctrl-C in the terminal reaches this script only, which then stops
        # serve once (a second SIGINT would make uvicorn skip its graceful shutdown).
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, ready_timeout_s)
        yield url
    except BaseException:
        print(f"--- adacs serve log (tail) ---\n{_tail(log)}", file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)  # serve gives its worker 15 s to finish a job, then kills it
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until ``/readyz`` answers 200 (the service says it can take jobs), or fail early if serve died."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"adacs serve exited with status {process.returncode} before it was ready")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"adacs serve did not answer 200 on /readyz within {timeout_s:.0f} s")

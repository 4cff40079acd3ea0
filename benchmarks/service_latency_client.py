"""Talking to the API as ``service_latency.py``'s clients do: upload a model, register, time each stage.

A request is answered once its job has finished (``?wait=``); the job's own timestamps and timings
then split it into stages (:data:`SPLIT`, :func:`split`). A job whose broker message was dropped
stays queued for ever: :class:`JobLost` says so, and :func:`run_jobs` submits it again.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

FINISHED = ("succeeded", "failed", "cancelled")
WAIT_S = 60.0  # the API's MAX_WAIT_S: a request is answered as soon as its job has finished
POLL_S = 0.5  # client polling, only for a job still unfinished after WAIT_S (rare: long queues)
# A job is declared lost (its broker message dropped) when it is still queued and no job at all has
# started for STUCK_AFTER_S: longer than a worker restart (about 10 s here) and than one job.
STUCK_AFTER_S, STUCK_CHECK_S, MAX_LOST = 30.0, 5.0, 10
TIMEOUT_S = WAIT_S + 60.0
# The stages of one API request; `predict` (the worker's report: model grid, forward, field back to
# native voxels) is the part of `register` that the in-process forward compares with, not a stage.
SPLIT = ("upload", "queue", "load_model", "read_inputs", "register", "predict", "write_outputs", "bookkeeping",
         "respond", "download", "total")


def _check(response: httpx.Response, *ok: int) -> httpx.Response:
    """``response`` if its status is one of ``ok``; else an error that quotes the server's answer."""
    if response.status_code not in ok:
        raise RuntimeError(f"{response.request.method} {response.request.url}: HTTP {response.status_code}, "
                           f"expected {ok}: {response.text[:800]}")
    return response


def upload_model(client: httpx.Client, name: str, artifact_zip: bytes) -> str:
    """Upload the zip as a version of ``name`` and promote it to production; returns ``name:version``."""
    response = _check(client.post("/v1/models", data={"name": name},
                                  files={"file": ("model.zip", artifact_zip, "application/zip")}), 200, 201)
    version = response.json()["version"]
    _check(client.post(f"/v1/models/{name}/versions/{version}/promote", json={"stage": "production"}), 200)
    return f"{name}:{version}"


def _epoch_s(text: str) -> float:
    """An API timestamp as epoch seconds, comparable with ``time.time()`` on the same machine."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()  # Python 3.10 refuses "Z"


def split(job: dict, sent: float, answered: float, downloaded: float) -> dict[str, float]:
    """One request's seconds by stage (see the module docstring); client times are epoch seconds."""
    created, started, finished = (_epoch_s(job[k]) for k in ("created_at", "started_at", "finished_at"))
    work = job["timings_s"]
    return {"upload": created - sent, "queue": started - created, "load_model": work["load_model"],
            "read_inputs": work["read_inputs"], "register": work["register"], "predict": job["report"]["predict_s"],
            "write_outputs": work["write_outputs"], "bookkeeping": finished - started - work["total"],
            "respond": answered - finished, "download": downloaded - answered, "total": downloaded - sent}


class JobLost(RuntimeError):
    """A job still ``queued`` while the workers have started nothing for a while: its message is gone."""

    def __init__(self, job_id: str, idle_s: float) -> None:
        super().__init__(f"registration {job_id} is still queued but no job has started for {idle_s:.0f} s")
        self.job_id = job_id


def _idle_s(client: httpx.Client) -> float:
    """Seconds since the newest start among the last 100 registrations (inf when none started)."""
    jobs = _check(client.get("/v1/registrations", params={"limit": 100}), 200).json()["data"]
    started = [_epoch_s(job["started_at"]) for job in jobs if job["started_at"]]
    return time.time() - max(started) if started else math.inf


def _follow(client: httpx.Client, job: dict) -> dict:
    """Poll ``job`` until it has finished: a no-op for the usual answer (200, finished within ``WAIT_S``)."""
    checked = time.monotonic()
    while job["status"] not in FINISHED:
        time.sleep(POLL_S)
        job = _check(client.get(job["url"]), 200).json()
        if job["status"] == "queued" and time.monotonic() - checked > STUCK_CHECK_S:
            checked, idle_s = time.monotonic(), _idle_s(client)
            if idle_s > STUCK_AFTER_S:
                raise JobLost(job["id"], idle_s)
    return job


def register_once(client: httpx.Client, model: str, files: dict[str, tuple[str, bytes, str]]) -> dict[str, float]:
    """Upload the pair, get the finished job, download its warped mask; returns :func:`split`."""
    sent = time.time()  # wall clock, as the server's timestamps (same machine, same clock)
    response = _check(client.post("/v1/registrations", data={"model": model}, files=files,
                                  params={"wait": WAIT_S}), 200, 202)
    job = _follow(client, response.json())
    answered = time.time()
    if job["status"] != "succeeded":
        raise RuntimeError(f"registration {job['id']} {job['status']}: {job['error']}")
    output = job["outputs"]["warped_mask"]
    body = _check(client.get(output["url"]), 200).content
    if len(body) != output["size_bytes"]:
        raise RuntimeError(f"warped mask of {job['id']}: {len(body)} bytes, expected {output['size_bytes']}")
    return split(job, sent, answered, time.time())


def run_jobs(client: httpx.Client, model: str, files: dict, count: int, lost: list[str]) -> list[dict[str, float]]:
    """``count`` registrations in a row. A lost job is deleted, recorded in ``lost`` and submitted again
    (``MAX_LOST`` in all), so one dropped message does not end the run."""
    records: list[dict[str, float]] = []
    while len(records) < count:
        try:
            records.append(register_once(client, model, files))
        except JobLost as error:
            print(f"   {error}; deleted and submitted again", file=sys.stderr, flush=True)
            lost.append(error.job_id)
            _check(client.delete(f"/v1/registrations/{error.job_id}"), 204, 404)
            if len(lost) > MAX_LOST:
                raise
    return records


def files_of(paths: dict[str, Path]) -> dict[str, tuple[str, bytes, str]]:
    """The multipart files of a registration, read once: reading them is not what is timed."""
    return {role: (path.name, path.read_bytes(), "application/gzip") for role, path in paths.items()}

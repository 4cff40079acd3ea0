"""Registration latency and throughput through the API, against the model's own forward time.

What is measured, per case (a 2D 128×128 pair and a 3D pair, 64³ by default), in one run:

1. ``forward``: the displacement estimator alone, ``estimator(moving, fixed)`` on the model's grid in
   this process (``torch.no_grad``). This is the floor: on the same hardware no request can finish
   faster.
2. ``register_images``: the whole in-process registration with the images already read (resampling,
   prediction, ITK warps of the image and the mask, Dice). This is what ``adacs register`` pays on
   top of reading and writing files.
3. ``API``: ``POST /v1/registrations`` with the four files, answered once the job has finished
   (``?wait=``), then the warped mask downloaded. The job's own timestamps, ``timings_s`` and
   report split each request into: upload (files saved and checked, row committed), queue (task
   sent, broker polled, job claimed), the worker's load_model / read_inputs / register (with its
   ``predict``) / write_outputs, bookkeeping (claim to work, then the final commit), respond (until
   the client has the answer; the API re-reads the row every 0.1 s) and download.

The three are timed in ``--repeats`` interleaved rounds (one of each per round, after a warm-up round
in which the worker loads the model) and reported as medians, p90 for the API. On a machine shared
with other work the load drifts within minutes; interleaving makes the drift hit all three alike.

Threads: torch uses one intra-op thread per core by default, in this process and in the worker. On
cores shared with other work, every parallel region then waits for its slowest thread, which the
scheduler may have put aside: a 2D forward measured 464 ms with 2 threads and 16 ms with 1 on this
2-core machine under load. ``--torch-threads`` sets the count here and, as ``OMP_NUM_THREADS``, in
the embedded worker.

Throughput: 1, 4 and 16 concurrent clients (``--clients``), each submitting ``--jobs-per-client`` 2D
registrations back to back, reported as jobs/s and latency per level. With ``--workers 1``, the
default on a 2-core machine, jobs run one at a time: more clients gain throughput only while the
work outside the worker (upload, queue, respond, download) can overlap with the worker's jobs, and
past that they only add latency.

The server is ``adacs serve`` (SQLite, kombu's filesystem broker, one Celery worker process with
``--workers`` slots). It is started on a free port under a temporary data folder with the caller's
``ADACS_*`` variables cleared, or the script uses ``--server URL`` (the in-process times are then
this machine's, not the server's). Models are VoxelMorph artifacts at the SPEC's default network
size with random initial weights (latency does not depend on the weights' values). They are
uploaded over the API and promoted to production. The script writes a markdown table to
``benchmarks/results/`` and prints it, then prints one JSON line. A lost job (see
:class:`JobLost`) is deleted, submitted again and counted in the tables.

    python benchmarks/service_latency.py --torch-threads 1   # 2 to 6 minutes on 2 busy CPU cores
    python benchmarks/service_latency.py --quick --out /tmp/service_latency.md
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk
import torch

from models.artifact import load_artifact, save_artifact
from models.intensity import IntensityConfig
from models.io.image import LABEL, SCALAR
from models.io.readers import read_image
from models.io.writers import write_image
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.register import register_images

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
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
FULL = {"shape_2d": (128, 128), "shape_3d": (64, 64, 64), "repeats": 30, "clients": (1, 4, 16),
        "jobs_per_client": 6}
QUICK = {"shape_2d": (32, 32), "shape_3d": (16, 16, 16), "repeats": 2, "clients": (1, 2), "jobs_per_client": 1}


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape-2d", type=_ints, help="2D grid, rows,cols (default 128,128; --quick 32,32)")
    p.add_argument("--shape-3d", type=_ints, help="3D grid, z,y,x (default 64,64,64; --quick 16,16,16)")
    p.add_argument("--repeats", type=int, help="timed rounds of forward, register_images and API request per case "
                   "(default 30; --quick 2)")
    p.add_argument("--clients", type=_ints, help="concurrency levels (default 1,4,16; --quick 1,2)")
    p.add_argument("--jobs-per-client", type=int, help="2D jobs each client submits (default 6; --quick 1)")
    p.add_argument("--workers", type=int, help="adacs serve --workers: jobs run at once (default 1)")
    p.add_argument("--torch-threads", type=int, help="intra-op threads of the forward in this process and, as "
                   "OMP_NUM_THREADS, in the embedded worker (default: torch's, one per core)")
    p.add_argument("--server", help="URL of a running service (keys off, or --api-key) instead of adacs serve")
    p.add_argument("--api-key", help="X-API-Key with the train and register scopes, for --server")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service_latency.md")
    p.add_argument("--quick", action="store_true", help="tiny grids and budgets (the test's run)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _check_args(p, args)
    return args


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.server and args.workers is not None:
        p.error("--workers sets the embedded server's worker; a --server runs its own workers")
    if args.api_key and not args.server:
        p.error("--api-key is for --server (the embedded server has keys off)")
    if args.workers is None:
        args.workers = 1
    for flag, shape, ndim in (("--shape-2d", args.shape_2d, 2), ("--shape-3d", args.shape_3d, 3)):
        levels = len(EstimatorConfig().enc)
        if len(shape) != ndim or min(shape) < 2**levels:
            p.error(f"{flag} needs {ndim} sides of at least {2**levels} voxels (the U-Net has {levels} "
                    f"levels), got {','.join(map(str, shape))}")
    for flag in ("repeats", "jobs_per_client", "workers", "torch_threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if min(args.clients) < 1:
        p.error(f"--clients must all be at least 1, got {args.clients}")


# --- inputs: a random-weight model and a synthetic NIfTI pair per case -------------------------------------


def label(shape: tuple[int, ...]) -> str:
    return f"{len(shape)}D {'×'.join(map(str, shape))}"


def save_random_model(folder: Path, shape: tuple[int, ...]) -> Path:
    """A VoxelMorph artifact at the SPEC's default size, trained on ``shape`` (so no resizing at inference)."""
    torch.manual_seed(0)
    config = EstimatorConfig(ndim=len(shape))
    card = {"method": "none", "data": "none: random initial weights (benchmarks/service_latency.py)"}
    return save_artifact(folder, build_estimator(config), config, IntensityConfig(), card, train_shape=shape)


def zip_artifact(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(directory.iterdir()):
            archive.write(file, file.name)
    return buffer.getvalue()


def _ellipsoid(shape: tuple[int, ...], center: np.ndarray, radius: np.ndarray) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)  # (ndim, *shape), array axis order
    distance = sum(((grid[k] - center[k]) / radius[k]) ** 2 for k in range(len(shape)))
    return (distance <= 1).astype(np.uint8)


def write_pair(folder: Path, shape: tuple[int, ...], seed: int = 0) -> dict[str, Path]:
    """Noisy images with a bright ellipsoid (label 1) that moves by a few voxels, as ``.nii.gz``."""
    rng = np.random.default_rng(seed)
    size = np.asarray(shape, dtype=np.float32)
    arrays = {"fixed_mask": _ellipsoid(shape, (size - 1) / 2, 0.25 * size),
              "moving_mask": _ellipsoid(shape, (size - 1) / 2 + 0.04 * size, 0.28 * size)}
    for image, mask in (("fixed", "fixed_mask"), ("moving", "moving_mask")):
        arrays[image] = (0.3 + 0.5 * arrays[mask] + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ROLES:
        image = sitk.GetImageFromArray(arrays[role])
        image.SetSpacing((1.25,) * len(shape))
        paths[role] = folder / f"{role}.nii.gz"
        write_image(image, paths[role])
    return paths


# --- in-process reference times --------------------------------------------------------------------------


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"  # what the worker picks (worker.model_cache)


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` (CUDA work synchronised)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def forward_call(model_dir: Path, shape: tuple[int, ...]) -> Callable[[], None]:
    """The estimator alone on ``(1, 1, *shape)`` inputs: the model grid, since train_shape == shape."""
    model = load_artifact(model_dir, device=_device())
    moving, fixed = (torch.rand(1, 1, *shape, device=_device()) for _ in range(2))

    def forward() -> None:
        with torch.no_grad():
            model.estimator(moving, fixed)

    return forward


def register_call(model_dir: Path, paths: dict[str, Path]) -> Callable[[], None]:
    """``register_images`` with the four images read beforehand (reading is not timed)."""
    model = load_artifact(model_dir, device=_device())
    images = {role: read_image(path, kind=LABEL if role.endswith("_mask") else SCALAR) for role, path in paths.items()}
    return lambda: register_images(model, *(images[role] for role in ROLES))


# --- the server ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def embedded_server(data_dir: Path, workers: int, threads: int | None = None,
                    ready_timeout_s: float = 180.0) -> Iterator[str]:
    """``adacs serve`` on a free port; stopped with SIGINT (then a wait) however the block ends."""
    port, log = free_port(), data_dir.parent / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op default in the worker
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--workers", str(workers)]
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


# --- talking to the API -------------------------------------------------------------------------------------


def _check(response: httpx.Response, *ok: int) -> httpx.Response:
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


def measure_case(client: httpx.Client, case: dict, repeats: int) -> None:
    """Fill ``case``'s ``forward``, ``register`` and ``api`` times and its ``lost`` jobs.

    Interleaved: each round times one forward, one ``register_images`` and one API request, so a change
    of load on a shared machine hits all three alike. A warm-up round comes first, in which the worker
    loads (and caches) the model.
    """
    forward, register, files = case["forward_call"], case["register_call"], files_of(case["paths"])
    case.update(forward=[], register=[], api=[], lost=[])
    for warm_up in (forward, forward, register):
        warm_up()
    run_jobs(client, case["name"], files, 1, case["lost"])
    for _ in range(repeats):
        case["forward"].append(timed(forward))
        case["register"].append(timed(register))
        case["api"] += run_jobs(client, case["name"], files, 1, case["lost"])


def measure_throughput(url: str, headers: dict, model: str, files: dict, clients: int, jobs: int) -> dict:
    """``clients`` threads, each with its own connection, each running ``jobs`` registrations in a row."""
    lost: list[str] = []  # list.append is atomic: the threads share it

    def one_client(_: int) -> list[dict[str, float]]:
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
            return run_jobs(client, model, files, jobs, lost)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        records = [record for run in pool.map(one_client, range(clients)) for record in run]
    wall_s = time.perf_counter() - start
    totals, queues = [r["total"] for r in records], [r["queue"] for r in records]
    return {"clients": clients, "jobs": len(records), "wall_s": wall_s, "jobs_per_s": len(records) / wall_s,
            "median_s": statistics.median(totals), "p90_s": p90(totals), "queue_median_s": statistics.median(queues),
            "lost": len(lost)}


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (defined for a single value too)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


# --- tables ----------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def latency_table(cases: list[dict]) -> list[str]:
    rows = ["| case | forward ms | forward min ms | register_images ms | register_images min ms | API median ms | "
            "API p90 ms | API min ms | API − forward ms | API / forward | lost jobs |", "|---" * 11 + "|"]
    for case in cases:
        forward, register, api = case["forward"], case["register"], [r["total"] for r in case["api"]]
        median_forward, median_api = statistics.median(forward), statistics.median(api)
        cells = [ms(median_forward), ms(min(forward)), ms(statistics.median(register)), ms(min(register)),
                 ms(median_api), ms(p90(api)), ms(min(api)), ms(median_api - median_forward),
                 f"{median_api / median_forward:.1f}", str(len(case["lost"]))]
        rows.append(f"| {case['label']} | " + " | ".join(cells) + " |")
    return rows


def split_table(cases: list[dict]) -> list[str]:
    rows = ["| case | " + " | ".join(SPLIT) + " |", "|---" * (len(SPLIT) + 1) + "|"]
    for case in cases:
        cells = [ms(statistics.median(r[stage] for r in case["api"])) for stage in SPLIT]
        rows.append(f"| {case['label']} | " + " | ".join(cells) + " |")
    return rows


def throughput_table(levels: list[dict]) -> list[str]:
    rows = ["| clients | jobs | wall s | jobs/s | latency median ms | latency p90 ms | queue median ms | lost jobs |",
            "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        rows.append(f"| {level['clients']} | {level['jobs']} | {level['wall_s']:.2f} | {level['jobs_per_s']:.2f} | "
                    f"{ms(level['median_s'])} | {ms(level['p90_s'])} | {ms(level['queue_median_s'])} | "
                    f"{level['lost']} |")
    return rows


def machine(load_start: tuple[float, ...]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    load = lambda values: "/".join(f"{v:.2f}" for v in values)  # noqa: E731
    threads = torch.get_num_threads()
    return (f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} with {threads} intra-op "
            f"thread{'s' if threads != 1 else ''} here, "
            f"device {device}, Python {platform.python_version()}; load average (1/5/15 min) "
            f"{load(load_start)} at the start, {load(os.getloadavg())} at the end")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def worker_restarts(log: Path | None) -> str:
    """What ``adacs serve``'s log says about worker crashes (nothing for ``--server``)."""
    if log is None:
        return ""
    text = _read(str(log))
    restarts, decode = text.count("exited with status"), text.count("Unrecoverable error: JSONDecodeError")
    return (f" Worker restarts during the run: {restarts} ({decode} after `Unrecoverable error: JSONDecodeError`, "
            "kombu's filesystem transport reading a message file before it was written; a *lost job* is one "
            "whose message went with it: it stays queued, and the client deletes and submits it again).")


def report(args: argparse.Namespace, argv: list[str], cases: list[dict], levels: list[dict], server: str,
           load_start: tuple[float, ...], restarts: str) -> str:
    config = EstimatorConfig()
    command = "python benchmarks/service_latency.py " + shlex.join(argv)
    header = [
        "# Service latency: registrations through the API vs the model's forward", "",
        f"Command: `{command}`", "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine(load_start)}.", "",
        f"Server: {server}. Each request uploads fixed, moving, moving_mask and fixed_mask (`.nii.gz`), is "
        f"answered when its job has finished (`?wait={WAIT_S:.0f}`) and then downloads the warped mask.{restarts}",
        "",
        f"Models: VoxelMorph at the SPEC's default size (enc {list(config.enc)}, dec {list(config.dec)}, "
        f"{config.int_steps} integration steps at 1/{config.int_downsize} resolution), trained grid = the case's "
        "grid, **random initial weights**: latency does not depend on the weights' values.", "",
        f"## Latency ({args.repeats} rounds after a warm-up round; each round times one forward and one "
        "register_images in this process, then one API request)", "",
        "Medians, unless a column says otherwise; the two last columns compare medians. On a machine shared with "
        "other work the minimum is the better guess of what an idle machine would do.", ""]
    split_note = ["", "Median ms per stage of an API request (`queue` = started_at − created_at; `predict` = the "
                      "worker's forward with its model-grid resampling, a part of `register`; `bookkeeping` = the "
                      "job's claim and final commit; `respond` = finished_at until the client has the answer):", ""]
    throughput = ["", f"## Throughput ({label(args.shape_2d)}, {args.jobs_per_client} jobs per client, "
                      f"back to back; {args.workers if not args.server else 'the server’s'} worker slot(s))", ""]
    reading = ["", "## Reading", "", "_To be written after looking at the numbers._", ""]
    return "\n".join(header + latency_table(cases) + split_note + split_table(cases) + throughput
                     + throughput_table(levels) + reading)


# --- the run ---------------------------------------------------------------------------------------------


def files_of(paths: dict[str, Path]) -> dict[str, tuple[str, bytes, str]]:
    return {role: (path.name, path.read_bytes(), "application/gzip") for role, path in paths.items()}


@contextmanager
def server_url(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, str, Path | None]]:
    """The URL, a description for the report and, for the embedded server, its log."""
    if args.server:
        yield args.server.rstrip("/"), f"`{args.server}`", None
    else:
        threads = f", OMP_NUM_THREADS={args.torch_threads}" if args.torch_threads else ""
        with embedded_server(work / "adacs-data", args.workers, args.torch_threads) as url:
            yield url, (f"embedded `adacs serve --workers {args.workers}` (SQLite, filesystem broker, "
                        f"{'solo pool' if args.workers == 1 else 'prefork pool'}{threads})"), work / "serve.log"


def prepare_cases(args: argparse.Namespace, work: Path) -> list[dict]:
    """Per case: a random-weight model, a synthetic pair, and the two in-process calls to time."""
    cases = []
    for shape in (args.shape_2d, args.shape_3d):
        name = f"latency-{len(shape)}d"
        model_dir, paths = save_random_model(work / name, shape), write_pair(work / f"{name}-pair", shape)
        cases.append({"label": label(shape), "name": name, "model_dir": model_dir, "paths": paths,
                      "forward_call": forward_call(model_dir, shape), "register_call": register_call(model_dir, paths)})
    return cases


def measure_service(args: argparse.Namespace, url: str, cases: list[dict]) -> list[dict]:
    """Fills each case's ``api`` and ``lost``; returns the throughput levels."""
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        for case in cases:
            ref = upload_model(client, case["name"], zip_artifact(case["model_dir"]))
            print(f"== {case['label']}: {args.repeats} rounds of forward, register_images, API request ({ref})",
                  flush=True)
            measure_case(client, case, args.repeats)
    model, files_2d = cases[0]["name"], files_of(cases[0]["paths"])
    if args.workers > 1:  # each pool process loads the model on its first job: not in the timings
        measure_throughput(url, headers, model, files_2d, args.workers, 1)
    levels = []
    for clients in args.clients:
        print(f"== throughput: {clients} client(s) × {args.jobs_per_client} job(s)", flush=True)
        levels.append(measure_throughput(url, headers, model, files_2d, clients, args.jobs_per_client))
    return levels


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="adacs-latency-") as tmp:
        cases = prepare_cases(args, Path(tmp))
        with server_url(args, Path(tmp)) as (url, server, log):
            levels = measure_service(args, url, cases)
            restarts = worker_restarts(log)
    text = report(args, argv, cases, levels, server, load_start, restarts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    summary = {c["label"]: {"forward_ms": 1000 * statistics.median(c["forward"]),
                            "api_median_ms": 1000 * statistics.median(r["total"] for r in c["api"]),
                            "lost_jobs": len(c["lost"])} for c in cases}
    print(json.dumps({"benchmark": "service_latency", "latency": summary,
                      "jobs_per_s": {str(level["clients"]): level["jobs_per_s"] for level in levels}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

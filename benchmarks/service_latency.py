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
``service_latency_client.JobLost``) is deleted, submitted again and counted in the tables.

This file holds the command line, the inputs, the in-process timings and the measuring loops; its
siblings ``service_latency_server.py`` (the embedded server), ``service_latency_client.py`` (the
API requests and their split by stage) and ``service_latency_report.py`` (the tables).

    python benchmarks/service_latency.py --torch-threads 1   # 2 to 6 minutes on 2 busy CPU cores
    python benchmarks/service_latency.py --quick --out /tmp/service_latency.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk
import torch
from service_latency_client import TIMEOUT_S, files_of, run_jobs, upload_model
from service_latency_report import label, p90, report, worker_restarts
from service_latency_server import ROOT, embedded_server

from models.artifact import load_artifact, save_artifact
from models.intensity import IntensityConfig
from models.io.image import LABEL, SCALAR
from models.io.readers import read_image
from models.io.writers import write_image
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.register import register_images

ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
FULL = {"shape_2d": (128, 128), "shape_3d": (64, 64, 64), "repeats": 30, "clients": (1, 4, 16),
        "jobs_per_client": 6}
QUICK = {"shape_2d": (32, 32), "shape_3d": (16, 16, 16), "repeats": 2, "clients": (1, 2), "jobs_per_client": 1}


def _ints(text: str) -> tuple[int, ...]:
    """``--shape-2d 128,128``, ``--clients 1,4,16``: the shape is checked later, against the network."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags; what is left unset takes the full run's value, or ``--quick``'s."""
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
    """Usage errors before anything starts: a server and a model for nothing would take minutes."""
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


def save_random_model(folder: Path, shape: tuple[int, ...]) -> Path:
    """A VoxelMorph artifact at the SPEC's default size, trained on ``shape`` (so no resizing at inference)."""
    torch.manual_seed(0)
    config = EstimatorConfig(ndim=len(shape))
    card = {"method": "none", "data": "none: random initial weights (benchmarks/service_latency.py)"}
    return save_artifact(folder, build_estimator(config), config, IntensityConfig(), card, train_shape=shape)


def zip_artifact(directory: Path) -> bytes:
    """The artifact folder as the zip ``POST /v1/models`` takes, in memory (it is a few MB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(directory.iterdir()):
            archive.write(file, file.name)
    return buffer.getvalue()


def _ellipsoid(shape: tuple[int, ...], center: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A 0/1 mask of the ellipsoid, in array axis order."""
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
    """The device the worker would pick, so the in-process floor runs where the service does."""
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


# --- measuring ------------------------------------------------------------------------------------------


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


# --- the run ---------------------------------------------------------------------------------------------


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
    """Prepare the cases, measure them against the server, write the tables, print one JSON line."""
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

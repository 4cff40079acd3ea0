"""Registrations per second through the API, by worker pool and number of clients.

Each configuration starts ``adacs serve`` (SQLite, filesystem broker) with one worker pool:
``solo`` (one job at a time, the default), ``prefork`` with N processes, or ``threads`` with N
threads in one process, whose concurrent registrations share one network forward
(``worker.batching``). Against each, 1, 4 and 16 clients (``--clients``) each run
``--jobs-per-client`` 2D 128×128 registrations back to back: upload four ``.nii.gz`` files, wait for
the job (``?wait``), download the warped mask. With ``--preview`` a client also downloads each
job's ``preview.png``, which the worker then draws (it is drawn only when asked for): the cost every
job paid before previews were drawn on demand.

Reported per configuration and client count: jobs/s, latency median and p90, and from the serve log
how many forwards served more than one registration and their mean size. The model is VoxelMorph at
the SPEC's default size with random weights (time does not depend on their values).

    python benchmarks/service_throughput.py                       # ~10 minutes on 2 busy CPU cores
    python benchmarks/service_throughput.py --quick --out /tmp/throughput.md
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
from service_latency import save_random_model, write_pair, zip_artifact
from service_latency_client import TIMEOUT_S, WAIT_S, _check, _follow, files_of, upload_model
from service_latency_report import machine, p90
from service_latency_server import ROOT, embedded_server

FULL = {"shape": (128, 128), "clients": (1, 4, 16), "jobs_per_client": 6,
        "configs": ("solo:1", "solo:1:preview", "prefork:2", "prefork:4", "threads:4", "threads:16")}
QUICK = {"shape": (32, 32), "clients": (1, 2), "jobs_per_client": 2, "configs": ("solo:1", "threads:2")}
BATCH_LINE = re.compile(r"one forward for (\d+) registrations")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=lambda t: tuple(t.split(",")),
                   help="pool:workers[:preview], comma-separated (default: " + ",".join(FULL["configs"]) + ")")
    p.add_argument("--clients", type=lambda t: tuple(int(x) for x in t.split(",")), help="default 1,4,16")
    p.add_argument("--jobs-per-client", type=int, help="default 6")
    p.add_argument("--torch-threads", type=int, default=1, help="OMP_NUM_THREADS of the worker (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service_throughput.md")
    p.add_argument("--quick", action="store_true", help="tiny grid and budget (the test's run)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def one_client(url: str, model: str, files: dict, jobs: int, preview: bool) -> list[float]:
    """``jobs`` registrations in a row; each one's seconds from upload to its last download."""
    seconds = []
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        for _ in range(jobs):
            start = time.perf_counter()
            job = _follow(client, _check(client.post("/v1/registrations", data={"model": model}, files=files,
                                                     params={"wait": WAIT_S}), 200, 202).json())
            if job["status"] != "succeeded":
                raise RuntimeError(f"registration {job['id']} {job['status']}: {job['error']}")
            _check(client.get(job["outputs"]["warped_mask"]["url"]), 200)
            if preview:
                _check(client.get(f"/v1/registrations/{job['id']}/preview.png"), 200)
            seconds.append(time.perf_counter() - start)
    return seconds


def measure(url: str, model: str, files: dict, clients: int, jobs: int, preview: bool) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(lambda _: one_client(url, model, files, jobs, preview), range(clients)))
    wall = time.perf_counter() - start
    latencies = [s for run in runs for s in run]
    return {"clients": clients, "jobs": len(latencies), "wall_s": wall, "jobs_per_s": len(latencies) / wall,
            "median_s": statistics.median(latencies), "p90_s": p90(latencies)}


def batches(log: Path) -> tuple[int, float]:
    """Forwards that served several registrations, and their mean size, from the serve log."""
    sizes = [int(n) for n in BATCH_LINE.findall(log.read_text(encoding="utf-8", errors="replace"))]
    return len(sizes), statistics.mean(sizes) if sizes else 0.0


def run_config(config: str, args: argparse.Namespace, model_dir: Path, files: dict, work: Path) -> list[dict]:
    pool, workers, *flags = config.split(":")
    preview = "preview" in flags
    data_dir = work / config.replace(":", "-")
    data_dir.mkdir()
    with embedded_server(data_dir / "adacs-data", int(workers), args.torch_threads, pool=pool) as url:
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            model = upload_model(client, "throughput", zip_artifact(model_dir))
        measure(url, model, files, int(workers), 1, preview)  # each process or thread loads and warms up
        rows = []
        for clients in args.clients:
            print(f"== {config}: {clients} client(s) × {args.jobs_per_client} job(s)", flush=True)
            rows.append({"config": config, **measure(url, model, files, clients, args.jobs_per_client, preview)})
    rows[-1]["batched"] = batches(data_dir / "serve.log")
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| pool:workers | clients | jobs | wall s | jobs/s | latency median ms | latency p90 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['clients']} | {r['jobs']} | {r['wall_s']:.2f} | {r['jobs_per_s']:.2f} | "
                     f"{1000 * r['median_s']:.0f} | {1000 * r['p90_s']:.0f} |")
    lines += ["", "Forwards that served several registrations (whole run of each configuration, warm-up included):", "",
              "| pool:workers | batched forwards | mean registrations per batched forward |", "|---|---|---|"]
    lines += [f"| {r['config']} | {r['batched'][0]} | {r['batched'][1]:.1f} |" for r in rows if "batched" in r]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    load_start = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="adacs-throughput-") as tmp:
        work = Path(tmp)
        model_dir = save_random_model(work / "model", args.shape)
        files = files_of(write_pair(work / "pair", args.shape))
        for config in args.configs:
            rows += run_config(config, args, model_dir, files, work)
    text = "\n".join([
        "# Service throughput: registrations per second by worker pool and clients", "",
        f"Command: `{' '.join(['python benchmarks/service_throughput.py', *map(shlex.quote, argv)])}`", "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine(load_start)}.", "",
        f"Server: embedded `adacs serve --workers N --pool P` (SQLite, filesystem broker, "
        f"OMP_NUM_THREADS={args.torch_threads}). Pairs: {'×'.join(map(str, args.shape))} 2D, four `.nii.gz` "
        "uploads each; a job is done for its client once the warped mask is downloaded (with `:preview`, also "
        "preview.png, which a worker then draws).", "",
        *table(rows), ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

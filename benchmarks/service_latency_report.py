"""The markdown of ``service_latency.py``: latency, its split by stage, throughput, and the machine.

Medians throughout (p90 and minimum beside them): on a shared machine the mean follows the worst
moments of someone else's load.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch
from service_latency_client import SPLIT, WAIT_S

from models.networks.estimator import EstimatorConfig


def label(shape: tuple[int, ...]) -> str:
    """A case's name in the tables and the JSON line, e.g. ``2D 128×128``."""
    return f"{len(shape)}D {'×'.join(map(str, shape))}"


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (defined for a single value too)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def ms(seconds: float) -> str:
    """Seconds as a milliseconds cell."""
    return f"{1000 * seconds:.1f}"


def latency_table(cases: list[dict]) -> list[str]:
    """Per case: the forward, register_images and API times, and how much the API adds to the forward."""
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
    """Per case: the median of each stage of an API request, to show where the time goes."""
    rows = ["| case | " + " | ".join(SPLIT) + " |", "|---" * (len(SPLIT) + 1) + "|"]
    for case in cases:
        cells = [ms(statistics.median(r[stage] for r in case["api"])) for stage in SPLIT]
        rows.append(f"| {case['label']} | " + " | ".join(cells) + " |")
    return rows


def throughput_table(levels: list[dict]) -> list[str]:
    """Per concurrency level: jobs per second, latency and queueing."""
    rows = ["| clients | jobs | wall s | jobs/s | latency median ms | latency p90 ms | queue median ms | lost jobs |",
            "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        rows.append(f"| {level['clients']} | {level['jobs']} | {level['wall_s']:.2f} | {level['jobs_per_s']:.2f} | "
                    f"{ms(level['median_s'])} | {ms(level['p90_s'])} | {ms(level['queue_median_s'])} | "
                    f"{level['lost']} |")
    return rows


def machine(load_start: tuple[float, ...]) -> str:
    """CPU, torch, device and load at the start and the end: what the numbers depend on."""
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
    """A text file, or "" where there is none (``/proc`` off Linux, a server that wrote no log)."""
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
    """The whole markdown document, with a "Reading" section left for a person to write."""
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

"""DDP equivalence: one training run in 1 process at batch B, and in N processes at B / N each.

What is measured: for each method, the same seeded run (same data, same global batch, same budget)
trained by ``models.training.distributed`` in 1, 2 and 4 processes (gloo on the CPU, nccl on GPUs
when there are enough), and once more in 1 process with another seed. Reported per run: the last
validation Dice (myocardium, %), its difference from the 1-process run, the largest relative
difference of any epoch's mean losses and ``m_t`` from the 1-process run, the largest difference of
any estimator weight, and the wall time. The ceiling to compare the differences with is the other
seed's row: the run-to-run noise of training itself. With ``B / (N · micro_batch_size)`` a whole
number each process computes exactly the one-process micro-batches, and the runs differ only by the
order of floating-point sums; otherwise each process cuts its share into smaller micro-batches,
which moves only terms that are not means over pairs.

Wall times on a shared 2-core CPU say nothing about GPU speed-up; they are here so that the cost of
the processes themselves (start-up, all-reduce) is on record.

    python benchmarks/ddp_equivalence.py            # writes benchmarks/results/ddp_equivalence.md
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

from models.data.spec import load_pairs
from models.networks.estimator import EstimatorConfig
from models.trainer import TrainConfig
from models.training.distributed import backend_for, train_on_devices

LOGGED = ("loss_de", "data", "smooth", "loss_se", "scs", "reg", "tv", "m_t")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic:size=64,n=64,seed=0", help="training data SPEC")
    p.add_argument("--val-data", default="synthetic:size=64,n=16,seed=1", help="validation data SPEC")
    p.add_argument("--methods", default="none,adacs")
    p.add_argument("--devices", default="1,2,4", help="process counts (the first is the reference)")
    p.add_argument("--arch", default="voxelmorph")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp_equivalence.md"))
    return p.parse_args(argv)


def config(args: argparse.Namespace, method: str, seed: int = 0) -> TrainConfig:
    return TrainConfig(method=method, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                       steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                       micro_batch_size=args.micro_batch_size, lr=args.lr, seed=seed, device=args.device,
                       estimator=EstimatorConfig(arch=args.arch))


def run(cfg: TrainConfig, devices: int, train_pairs, val_pairs, work: Path) -> dict:
    start = time.perf_counter()
    result = train_on_devices(devices, cfg, train_pairs, work / f"{cfg.method}-{devices}-{cfg.seed}",
                              val_pairs=val_pairs)
    return {"history": result.history, "weights": result.estimator.state_dict(),
            "wall_s": time.perf_counter() - start}


def compare(row: dict, reference: dict) -> dict:
    """How far ``row`` is from the 1-process ``reference``: Dice, epoch logs, estimator weights."""
    rel = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for a, b in zip(row["history"], reference["history"])
           for k in LOGGED if a.get(k) is not None and b.get(k) is not None]
    weights = max((row["weights"][k] - reference["weights"][k]).abs().max().item() for k in reference["weights"])
    dice, dice_ref = row["history"][-1]["val_dice"], reference["history"][-1]["val_dice"]
    return {"val_dice": dice, "d_dice": dice - dice_ref, "max_rel_d_logs": max(rel), "max_d_weight": weights,
            "wall_s": row["wall_s"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    train_pairs, val_pairs = load_pairs(args.data), load_pairs(args.val_data)
    counts = [int(n) for n in args.devices.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddp-equivalence-") as work:
        for method in args.methods.split(","):
            cfg = config(args, method)
            reference = run(cfg, counts[0], train_pairs, val_pairs, Path(work))
            for n in counts:
                measured = reference if n == counts[0] else run(cfg, n, train_pairs, val_pairs, Path(work))
                rows.append({"method": method, "processes": n, "seed": 0, **compare(measured, reference)})
            other_seed = run(config(args, method, seed=1), counts[0], train_pairs, val_pairs, Path(work))
            rows.append({"method": method, "processes": counts[0], "seed": 1, **compare(other_seed, reference)})
    table = render(args, rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(json.dumps({"rows": rows}))
    return 0


def render(args: argparse.Namespace, rows: list[dict]) -> str:
    command = "python benchmarks/ddp_equivalence.py " + shlex.join(sys.argv[1:])
    lines = [
        "# DDP equivalence: 1 process at batch B vs N processes at B / N", "",
        f"Command: `{command.strip()}`", "",
        f"Data `{args.data}`, validation `{args.val_data}`; {args.arch}, batch {args.batch_size} "
        f"(micro-batches of {args.micro_batch_size}), {args.warmup_epochs} warm-up + {args.epochs} epochs of "
        f"{args.steps_per_epoch} updates, lr {args.lr:g}, {args.device} ({backend_for(args.device)}). "
        "Differences are from the seed-0 run in one process; the seed-1 row is training's own noise. Wall "
        "times include starting the processes and are taken on whatever else the machine runs: not a speed-up.", "",
        "| method | processes | pairs per process (micro) | seed | val Dice % | Δ Dice | max rel. Δ epoch logs "
        "| max abs. Δ weight | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = args.batch_size // r["processes"]
        micro = math.gcd(share, args.micro_batch_size)  # models.training.data.sample_micro_batches
        lines.append(f"| {r['method']} | {r['processes']} | {share} ({micro}) | {r['seed']} | {r['val_dice']:.2f} "
                     f"| {r['d_dice']:+.3f} | {r['max_rel_d_logs']:.1e} | {r['max_d_weight']:.1e} "
                     f"| {r['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

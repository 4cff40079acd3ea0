"""The GPU path, measured: batched inference pairs/s and training updates/s, and the paper's budget.

On a CUDA device (``--device cuda``, the default when there is one) this measures, in one run:

1. **Inference**: the displacement estimator's forward (``torch.inference_mode``) on random pairs,
   2D 128² and 3D 64³ (VoxelMorph at the SPEC's default size), at batch 1, 16 and 64, in fp32, with
   TF32 matmuls/convolutions, and in bf16 autocast, each eager and ``torch.compile``d; pairs per
   second from the median of ``--repeats`` timed calls after warm-up (CUDA synchronised).
2. **Training**: one vanilla displacement update (Eq. 1) and one AdaCS alternating update (a
   displacement update weighted by the scoring network, Eq. 2, plus a scoring update, Eq. 9), at the
   SPEC's batch of 8 2D 128² pairs, by ``models.training.steps`` (the trainer's own functions).
3. **The paper's budget**: 20 warm-up epochs of displacement updates, 20 of scoring updates and 300
   alternating epochs, 100 updates each, estimated from the rates of 2 (the updates dominate: data
   loading and validation are not counted).

Targets (issue 17, on one H100/H200-class GPU): ≥ 5,000 2D 128² pairs/s batched, the paper's budget in
≤ 10 minutes. The table is printed and written to ``benchmarks/results/gpu.md`` (``--out``). Without a
GPU the script runs on the CPU with ``--tiny`` (small networks and images, few repeats): that is how
the test suite checks it, not a measurement worth committing.

    python benchmarks/gpu.py                          # on a GPU host: about 5 minutes
    python benchmarks/gpu.py --device cpu --tiny --out /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.networks.estimator import EstimatorConfig  # noqa: E402
from models.networks.registry import build_estimator  # noqa: E402
from models.networks.scoring import ScoringNet  # noqa: E402
from models.training.config import TrainConfig  # noqa: E402
from models.training.steps import displacement_update, scoring_update, shared_scores  # noqa: E402

PAPER_EPOCHS = {"warm-up: displacement": 20, "warm-up: scoring": 20, "alternating": 300}
UPDATES_PER_EPOCH = 100
FULL = {"shapes": {2: (128, 128), 3: (64, 64, 64)}, "batches": (1, 16, 64), "train_batch": 8, "repeats": 20,
        "enc": (16, 32, 32, 32), "dec": (32, 32, 32, 32, 32, 16, 16)}
TINY = {"shapes": {2: (32, 32), 3: (16, 16, 16)}, "batches": (1, 4), "train_batch": 2, "repeats": 3,
        "enc": (4, 4), "dec": (4, 4, 4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``call`` after ``warmup`` calls (the first compiles, allocates, tunes)."""
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32 (TF32 off), tf32 (matmuls and convolutions in TF32), bf16 (autocast)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        if mode == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _config(ndim: int, sizes: dict) -> EstimatorConfig:
    return EstimatorConfig(arch="voxelmorph", ndim=ndim, enc=sizes["enc"], dec=sizes["dec"])


def _forward(net: torch.nn.Module, pair: tuple[torch.Tensor, ...], mode: str,
             device: torch.device) -> Callable[[], None]:
    def forward() -> None:
        with torch.inference_mode(), precision(mode, device):
            net(*pair)
    return forward


def inference_rows(device: torch.device, sizes: dict, modes: list[str], compile_modes: list[bool]) -> list[dict]:
    rows = []
    for ndim, shape in sizes["shapes"].items():
        torch.manual_seed(0)
        eager = build_estimator(_config(ndim, sizes)).to(device).eval()
        for compiled in compile_modes:
            net = torch.compile(eager) if compiled else eager
            for mode in modes:
                for batch in sizes["batches"]:
                    pair = torch.rand(2, batch, 1, *shape, device=device).unbind(0)
                    seconds = timed(_forward(net, pair, mode, device), device, sizes["repeats"])
                    rows.append({"case": f"{ndim}D {'x'.join(map(str, shape))}", "precision": mode,
                                 "compile": "on" if compiled else "off", "batch": batch,
                                 "ms": 1000 * seconds, "pairs_s": batch / seconds})
    return rows


def _alternating(estimator, scorer, opt_de, opt_se, micro, cfg) -> None:
    """One alternating step as the trainer runs it: one scorer forward shared by both updates."""
    shared = shared_scores(scorer, micro, cfg)
    displacement_update(estimator, scorer, opt_de, micro, cfg, scores=shared)
    scoring_update(estimator, scorer, opt_se, micro, 1.0, cfg, scores=shared)


def training_rates(device: torch.device, sizes: dict) -> dict[str, float]:
    """Seconds per update: vanilla displacement, scoring alone, and AdaCS's alternating pair."""
    shape, batch = sizes["shapes"][2], sizes["train_batch"]
    cfg = replace(TrainConfig(), method="adacs", estimator=_config(2, sizes), batch_size=batch)
    torch.manual_seed(0)
    estimator = build_estimator(cfg.estimator).to(device)
    scorer = ScoringNet(2, cfg.estimator.enc, cfg.estimator.dec).to(device)
    opt_de = torch.optim.Adam(estimator.parameters(), lr=cfg.lr)
    opt_se = torch.optim.Adam(scorer.parameters(), lr=cfg.lr)
    micro = [tuple(torch.rand(2, batch, 1, *shape, device=device).unbind(0))]
    vanilla_cfg = replace(cfg, method="none")
    seconds = {
        "vanilla": timed(lambda: displacement_update(estimator, None, opt_de, micro, vanilla_cfg), device,
                         sizes["repeats"]),
        "scoring": timed(lambda: scoring_update(estimator, scorer, opt_se, micro, 1.0, cfg), device,
                         sizes["repeats"]),
        "adacs": timed(lambda: _alternating(estimator, scorer, opt_de, opt_se, micro, cfg), device, sizes["repeats"]),
    }
    return seconds


def budget_minutes(seconds: dict[str, float]) -> float:
    """The paper's 340 epochs of 100 updates, each phase at its own update's rate."""
    per_phase = {"warm-up: displacement": seconds["vanilla"], "warm-up: scoring": seconds["scoring"],
                 "alternating": seconds["adacs"]}
    return sum(PAPER_EPOCHS[p] * UPDATES_PER_EPOCH * s for p, s in per_phase.items()) / 60.0


def render(device: torch.device, rows: list[dict], seconds: dict[str, float], tiny: bool) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    note = ", TINY configuration: a test, not a measurement" if tiny else ""
    lines = [f"# GPU path: {name} (torch {torch.__version__}{note})",
             "", "Command: `python benchmarks/gpu.py" + (" --device cpu --tiny" if tiny else "") + "`", "",
             "## Inference (forward only, random pairs)", "",
             "| case | precision | compile | batch | ms / call | pairs / s |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['precision']} | {r['compile']} | {r['batch']} | {r['ms']:.2f} "
              f"| {r['pairs_s']:,.0f} |" for r in rows]
    best = max((r for r in rows if r["case"].startswith("2D")), key=lambda r: r["pairs_s"])
    lines += ["", f"Best 2D: {best['pairs_s']:,.0f} pairs/s ({best['precision']}, compile {best['compile']}, "
                  f"batch {best['batch']}); target ≥ 5,000.", "",
              "## Training updates (2D, batch of " + str(TINY["train_batch"] if tiny else FULL["train_batch"]) + ")",
              "", "| update | ms | updates / s |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {1000 * s:.1f} | {1 / s:.1f} |" for k, s in seconds.items()]
    lines += ["", f"AdaCS alternating update / vanilla update: {seconds['adacs'] / seconds['vanilla']:.2f}×.",
              f"The paper's budget (20 + 20 + 300 epochs × 100 updates): {budget_minutes(seconds):.1f} minutes "
              "of updates; target ≤ 10.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small networks and images: a check, not a measurement")
    parser.add_argument("--no-compile", action="store_true", help="eager only (torch.compile needs a compiler)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --tiny, where a busy core skews every parallel "
                             "region; else torch's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.md")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else (1 if args.tiny else 0)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    sizes = TINY if args.tiny else FULL
    modes = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    compile_modes = [False] if args.no_compile else [False, True]
    rows = inference_rows(device, sizes, modes, compile_modes)
    seconds = training_rates(device, sizes)
    table = render(device, rows, seconds, args.tiny)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

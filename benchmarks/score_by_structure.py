"""Where a trained scoring network puts its low scores: mean S per structure of the held-out targets.

AdaCS down-weights the data term where ``S = g_ϕ(target)`` is low. Whether that helps depends on
*where* it is low: on correspondence failures (a phantom's signal dropout) it should; on the heart
itself (motion the estimator has not learnt yet) it stops the estimator from registering the very
structure that is scored. This script reads the scoring network from a training run's checkpoint
(``<run>/checkpoints/last.pt``: the scoring network is never part of a model artifact) and reports,
over the held-out pairs the run was evaluated on (its ``run.json``), the mean S on each label of the
fixed mask and, on phantoms, inside the blob where the fixed frame lost its signal.

    python benchmarks/score_by_structure.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/score_by_structure.md

RUN_DIR is a ``paper_tables.py`` run folder (``.../<dataset>/<arch>/<method>/seed<k>``) that still has
its checkpoint (checkpoints are not committed; rerun the run to get one back).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.data.spec import load_pairs
from models.inference import stack_pairs
from models.intensity import IntensityConfig
from models.networks.scoring import ScoringNet

# Raw phantom intensity below which a pixel of the heart counts as lost signal (the phantom's own
# tests use the same threshold: tissue never falls that low without a dropout).
DROPOUT_LEVEL = 0.06
LABELS = {"acdc": {0: "background", 1: "RV", 2: "myocardium", 3: "LV"},
          "synthetic": {0: "background", 1: "blood pool", 2: "myocardium"}}


def scores(run: Path, max_pairs: int) -> tuple[dict, dict[str, float]]:
    """``(run.json, {region: mean S})`` for one run folder."""
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    state = load_checkpoint(run / "checkpoints")
    if state is None or state.get("scorer") is None:
        raise SystemExit(f"{run}: no checkpoint with a scoring network (an AdaCS run whose checkpoints are kept)")
    cfg = state["train_config"]
    net = cfg["estimator"]
    scorer = ScoringNet(net["ndim"], tuple(net["enc"]), tuple(net["dec"]))
    scorer.load_state_dict(state["scorer"])
    scorer.eval()
    pairs = load_pairs(record["data"]["eval"])[:max_pairs]
    _, fixed = stack_pairs(pairs, IntensityConfig(**cfg["intensity"]))
    with torch.no_grad():
        maps = torch.cat([scorer(fixed[i:i + 16]) for i in range(0, len(fixed), 16)])[:, 0].numpy()
    names = LABELS.get(record["dataset"], {})
    sums: dict[str, list[float]] = {}
    for pair, s in zip(pairs, maps):
        for label in np.unique(pair.fixed_mask):
            sums.setdefault(names.get(int(label), f"label {label}"), []).extend(s[pair.fixed_mask == label].tolist())
        if "dropout-fixed" in pair.tags:
            lost = (pair.fixed < DROPOUT_LEVEL) & (pair.fixed_mask > 0)
            sums.setdefault("dropout blob (fixed frame)", []).extend(s[lost].tolist())
            sums.setdefault("heart outside the blob", []).extend(s[~lost & (pair.fixed_mask > 0)].tolist())
    return record, {region: float(np.mean(values)) for region, values in sums.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--max-pairs", type=int, default=64, help="held-out pairs read per run")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args(argv)
    results = [scores(run, args.max_pairs) for run in args.runs]
    regions = list(dict.fromkeys(region for _, means in results for region in means))
    lines = ["| dataset | arch | options | method | seed | " + " | ".join(f"mean S: {r}" for r in regions) + " |",
             "|---" * (5 + len(regions)) + "|"]
    for record, means in results:
        options = ", ".join(f"{k}={v}" for k, v in record["train_config"]["estimator"]["options"].items()) or "–"
        lines.append(f"| {record['dataset']} | {record['arch']} | {options} | {record['method']} | {record['seed']} | "
                     + " | ".join(f"{means[r]:.3f}" if r in means else "–" for r in regions) + " |")
    command = "python benchmarks/score_by_structure.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(["# Mean score S per structure of the held-out targets", "", f"Command: `{command}`", "",
                      "S = g_ϕ(fixed) from each run's last checkpoint; a low S removes that region from the "
                      "displacement estimator's data term.", "", *lines, ""])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

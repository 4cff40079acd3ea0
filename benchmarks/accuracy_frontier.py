"""How well does each registration a user could pick do on ACDC? The accuracy frontier (issue 12).

Train on the SSL4MIS ACDC train split (614 slice pairs, 70 patients), score on the val split (101 pairs,
10 patients), strict nearest-neighbour myocardium DSC as the headline (``models.evaluate``). Rows:
identity; the classical anchors a user already has (``benchmarks/classical.py``: SimpleITK diffeomorphic
demons, ANTs SyN, settings there); learned rows (vanilla VoxelMorph, AdaCS, each lever of issue 12 alone
and the useful combinations; ``ROWS``), each with its seeds; the bundled starter model. Columns: DSC
strict and paper-compatible, DSC per label, HD95/ASD (pixels: the HDF5 copy stores no spacing), folding
% and std of log|J|, training wall time and updates, inference ms per pair with and without refinement.
Paired t-tests over the 10 patients' means (the independent unit) against vanilla and against demons.

Every (row, seed) lives in ``--work DIR/<row>/seed<k>``: the trainer's run folder for learned rows,
``eval.json`` with per-pair metrics, written atomically. A rerun skips finished evaluations and resumes
unfinished trainings from their checkpoint; the table is rewritten after every row, so a partial run
renders. ``--rows a,b`` picks rows, ``--seeds`` seeds, ``--tables-only`` renders what exists.

    python benchmarks/accuracy_frontier.py --acdc ../shared/data/acdc --rows identity,demons,ants-syn
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.artifact import load_artifact
from models.data.pairs import MYOCARDIUM, PairSample
from models.data.spec import load_pairs
from models.evaluate import pair_metrics
from models.inference import warp_labels
from models.io.atomic import write_json_atomic
from models.metrics import dice, jacobian_determinant
from models.statistics import mean_std, paired_ttest_by_subject

ROOT = Path(__file__).resolve().parents[1]
LABELS = {1: "RV", 2: "MYO", 3: "LV"}
STARTER = ROOT / "service" / "starter" / "acdc-2d"
# The first bundle (0.1.0) was replaced by acdc-2d; its row is kept from its cached evaluation (git history has it).
STARTER_V1 = ROOT / "service" / "starter" / "acdc-voxelmorph-adacs"


@dataclass(frozen=True)
class Row:
    """One line of the table: how its fields are made (``kind``) and, for learned rows, the recipe."""

    name: str
    kind: str  # "identity", "classical", "learned", "artifact"
    label: str  # what the table says
    train: dict = field(default_factory=dict)  # TrainConfig fields (learned)
    arch: str = "voxelmorph"
    arch_options: dict = field(default_factory=dict)
    refine_steps: int = 0  # test-time refinement at evaluation (0: the network alone)
    artifact: Path | None = None
    model_of: str | None = None  # "refined" rows: evaluate the model another row trained (same seed)


VANILLA = {"method": "none", "lr": 1e-3, "warmup_epochs": 20, "epochs": 20, "steps_per_epoch": 25}
LONG = VANILLA | {"epochs": 100, "lr_schedule": "cosine"}  # 20 + 100 epochs of 25: 3000 updates
LABELS_MYO = {"supervision": "labels", "labels": (MYOCARDIUM,), "label_weight": 0.3}
ROWS: dict[str, Row] = {r.name: r for r in (
    Row("identity", "identity", "identity (no registration)"),
    Row("demons", "classical", "SimpleITK diffeomorphic demons"),
    Row("ants-syn", "classical", "ANTs SyN (SyNCC)"),
    Row("vanilla", "learned", "VoxelMorph, vanilla (Eq. 1)", VANILLA),
    Row("adacs", "learned", "VoxelMorph, AdaCS", VANILLA | {"method": "adacs", "scoring_lr": 1e-4}),
    Row("adacs-alpha02", "learned", "VoxelMorph, AdaCS, α 0.2 (scores held nearer 1)",
        VANILLA | {"method": "adacs", "scoring_lr": 1e-4, "alpha": 0.2}),
    Row("adacs-slr3e-4", "learned", "VoxelMorph, AdaCS, scoring lr 3e-4",
        VANILLA | {"method": "adacs", "scoring_lr": 3e-4}),
    Row("labels-myo", "learned", "VoxelMorph, vanilla + myocardium label term (w 0.3)",
        VANILLA | LABELS_MYO),
    Row("labels-all", "learned", "VoxelMorph, vanilla + label term on RV, MYO, LV (w 0.3)",
        VANILLA | {"supervision": "labels", "label_weight": 0.3}),
    Row("pyramid", "learned", "pyramid (3 levels), vanilla", VANILLA, arch="pyramid"),
    Row("pyramid-cosine", "learned", "pyramid, vanilla, cosine lr decay", VANILLA | {"lr_schedule": "cosine"},
        arch="pyramid"),
    Row("pyramid-long", "learned", "pyramid, vanilla, cosine, 3000 updates", LONG, arch="pyramid"),
    Row("pyramid-long+refine", "learned", "pyramid, vanilla, cosine, 3000 updates, + 50 refinement steps",
        model_of="pyramid-long", refine_steps=50),
    Row("pyramid-labels", "learned", "pyramid, vanilla + myocardium label term (w 0.3)", VANILLA | LABELS_MYO,
        arch="pyramid"),
    Row("pyramid-labels-light", "learned", "pyramid, vanilla + myocardium label term (w 0.05)",
        VANILLA | LABELS_MYO | {"label_weight": 0.05}, arch="pyramid"),
    Row("pyramid-long-labels", "learned", "pyramid, cosine, 3000 updates, + myocardium label term (w 0.05)",
        LONG | LABELS_MYO | {"label_weight": 0.05}, arch="pyramid"),
    Row("pyramid-long-labels+refine", "learned", "pyramid, cosine, 3000 updates, labels (w 0.05), + 50 refinement "
        "steps", model_of="pyramid-long-labels", refine_steps=50),
    Row("vanilla+refine", "learned", "VoxelMorph, vanilla, + 50 refinement steps", model_of="vanilla",
        refine_steps=50),
    Row("pyramid+refine", "learned", "pyramid, vanilla, + 50 refinement steps", model_of="pyramid",
        refine_steps=50),
    Row("starter-v1", "artifact", "starter v1, replaced (VoxelMorph, AdaCS, 1500 updates at lr 1e-4)",
        artifact=STARTER_V1),
    Row("starter", "artifact", "starter v2 as users get it (pyramid-long-labels seed 0 + 50 refinement steps)",
        artifact=STARTER, refine_steps=50),
)}


# --- metrics of one pair ---------------------------------------------------------------------------------

def log_jacobian_std(disp: torch.Tensor) -> float:
    """Std of log|J| over voxels with J > 0: how unevenly the field stretches (0 for a rigid shift)."""
    det = jacobian_determinant(disp.numpy())
    positive = det[det > 0]
    return float(np.std(np.log(positive))) if positive.size else float("nan")


def metrics(pair: PairSample, disp: torch.Tensor) -> dict:
    """The headline metrics of ``models.evaluate`` plus DSC per label and the std of log|J|."""
    row = pair_metrics(pair, disp, MYOCARDIUM)
    warped = warp_labels(pair.moving_mask, disp)
    for label in LABELS:
        present = np.any(pair.fixed_mask == label) or np.any(warped == label)
        row[f"dsc_{label}"] = dice(warped == label, pair.fixed_mask == label) if present else float("nan")
    row["logjac_std"] = log_jacobian_std(disp)
    return row


# --- making the fields -----------------------------------------------------------------------------------

def classical_fields(row: Row, pairs: Sequence[PairSample]) -> tuple[list[torch.Tensor], float]:
    from classical import CLASSICAL

    register, _ = CLASSICAL[row.name]
    start = time.perf_counter()
    fields = [register(p) for p in pairs]
    return fields, 1000 * (time.perf_counter() - start) / len(pairs)


def learned_fields(model_dir: Path, pairs: Sequence[PairSample], refine_steps: int) -> tuple[list, float]:
    """Fields of a model artifact on ``pairs`` (batched by grid), refined when asked; ms per pair."""
    from models.inference import predict_disp, stack_pairs

    model = load_artifact(model_dir)
    by_shape: dict[tuple, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_shape.setdefault(pair.shape, []).append(i)
    fields: list = [None] * len(pairs)
    seconds = 0.0
    for indices in by_shape.values():
        moving, fixed = stack_pairs([pairs[i] for i in indices], model.intensity)
        predict_disp(model.estimator, moving[:4], fixed[:4])  # warm-up
        start = time.perf_counter()
        out = refine_fields(model, moving, fixed, refine_steps) if refine_steps else predict_disp(
            model.estimator, moving, fixed)
        seconds += time.perf_counter() - start
        for i, disp in zip(indices, out):
            fields[i] = disp
    return fields, 1000 * seconds / len(pairs)


def refine_fields(model, moving: torch.Tensor, fixed: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The network's fields refined for ``steps`` steps, one pair per call as a registration does
    (``models.refine``, the model card's settings otherwise)."""
    from models.refine import estimate_and_refine, refine_config

    config = refine_config(model.card, steps=steps)
    return [estimate_and_refine(model.estimator, moving[i:i + 1], fixed[i:i + 1], config).disp[0].cpu()
            for i in range(moving.shape[0])]


def train_row(row: Row, seed: int, train_pairs, val_pairs, run_dir: Path) -> dict:
    """Train (or resume) the row's model; its run record (wall time, updates)."""
    from models.networks.estimator import EstimatorConfig
    from models.trainer import TrainConfig, train

    record_path = run_dir / "run.json"
    if record_path.is_file() and json.loads(record_path.read_text())["finished"]:
        return json.loads(record_path.read_text())
    cfg = TrainConfig(**(row.train | {"seed": seed}))
    cfg.estimator = EstimatorConfig(arch=row.arch, options=dict(row.arch_options))
    start = time.perf_counter()
    result = train(cfg, train_pairs, run_dir, val_pairs=val_pairs[:32])
    record = {"finished": True, "wall_s": round(time.perf_counter() - start, 1), "config": cfg.to_dict(),
              "updates": (cfg.warmup_epochs + cfg.epochs) * cfg.steps_per_epoch,
              "epochs_run": len(result.history)}
    write_json_atomic(record_path, record)
    return record


# --- running a row ---------------------------------------------------------------------------------------

def run_row(row: Row, seed: int, train_pairs, val_pairs, work: Path) -> dict:
    """Evaluate (training first where needed) one row and seed; cached in ``eval.json``."""
    run_dir = work / row.name / f"seed{seed}"
    cached = run_dir / "eval.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    record: dict = {"row": row.name, "seed": seed}
    if row.kind == "identity":
        fields, record["ms_per_pair"] = [torch.zeros(p.ndim, *p.shape) for p in val_pairs], 0.0
    elif row.kind == "classical":
        fields, record["ms_per_pair"] = classical_fields(row, val_pairs)
    else:
        model_dir = row.artifact
        if row.model_of is not None:  # the other row's run: trained (or resumed) there, reused here
            record |= train_row(ROWS[row.model_of], seed, train_pairs, val_pairs, work / row.model_of / f"seed{seed}")
            model_dir = work / row.model_of / f"seed{seed}" / "model"
        elif row.kind == "learned":
            record |= train_row(row, seed, train_pairs, val_pairs, run_dir)
            model_dir = run_dir / "model"
        fields, record["ms_per_pair"] = learned_fields(model_dir, val_pairs, row.refine_steps)
        if row.refine_steps:
            record["ms_per_pair_network"] = learned_fields(model_dir, val_pairs[:16], 0)[1]
    record["pairs"] = [metrics(p, d) for p, d in zip(val_pairs, fields)]
    write_json_atomic(cached, record)
    return record


# --- the table -------------------------------------------------------------------------------------------

def _seed_mean(records: list[dict], key: str) -> list[float]:
    """Per pair, the metric averaged over seeds (pairs are in the same order in every record)."""
    return [float(np.nanmean([r["pairs"][i].get(key, np.nan) for r in records]))
            for i in range(len(records[0]["pairs"]))]


def _cell(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(records: list[dict], reference: list[dict] | None) -> str:
    if not reference or records is reference:
        return "–"
    subjects = [p["subject_id"] for p in records[0]["pairs"]]
    test = paired_ttest_by_subject(_seed_mean(records, "dsc"), _seed_mean(reference, "dsc"), subjects)
    return f"{test.mean_diff:+.2f} (p={test.p:.1g})"


def render(results: dict[str, list[dict]], command: str) -> str:
    lines = [f"# Accuracy frontier on ACDC (train split → val split, {len(next(iter(results.values()))[0]['pairs'])} "
             "slice pairs, 10 patients)", "", f"Command: `{command}`", "",
             "Myocardium DSC % (strict: nearest-neighbour warp of the label map; paper: bilinear warp of the binary "
             "mask, > 0), DSC per label, HD95/ASD in pixels (no spacing in this copy), folding % and std of "
             "log|J|: mean ± std over pairs (seed-averaged). Δ: paired t-test of the myocardium DSC over the 10 "
             "patients' means.", "",
             "| Row | Seeds | MYO strict | MYO paper | RV | LV | HD95 | ASD | Folding % | std log|J| | Train s | "
             "Updates | ms/pair | Δ vs vanilla | Δ vs demons |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    vanilla, demons = results.get("vanilla"), results.get("demons")
    for name, records in results.items():
        row = ROWS[name]
        train_s = [r["wall_s"] for r in records if "wall_s" in r]
        ms = [r["ms_per_pair"] for r in records]
        ms_text = f"{np.mean(ms):.0f}" + (f" ({np.mean([r['ms_per_pair_network'] for r in records]):.0f} net)"
                                           if "ms_per_pair_network" in records[0] else "")
        lines.append(" | ".join([
            f"| {row.label}", str(len(records)), _cell(_seed_mean(records, "dsc")),
            _cell(_seed_mean(records, "dsc_paper")), _cell(_seed_mean(records, "dsc_1")),
            _cell(_seed_mean(records, "dsc_3")), _cell(_seed_mean(records, "hd95")),
            _cell(_seed_mean(records, "asd"), 2), _cell(_seed_mean(records, "folding_pct"), 3),
            _cell(_seed_mean(records, "logjac_std"), 3), f"{np.mean(train_s):.0f}" if train_s else "–",
            str(records[0].get("updates", "–")), ms_text, _p(records, vanilla), _p(records, demons)]) + " |")
    return "\n".join(lines) + "\n"


def finished(work: Path) -> dict[str, list[dict]]:
    """Every evaluated (row, seed) under ``work``, in the order of ``ROWS``: the table shows them all."""
    results = {}
    for name in ROWS:
        records = [json.loads(p.read_text()) for p in sorted((work / name).glob("seed*/eval.json"))]
        if records:
            results[name] = records
    return results


def reproduce_command(results: dict[str, list[dict]], acdc: str) -> str:
    """The one command that rebuilds every row shown (finished rows are skipped, so it is also how to resume)."""
    seeds = sorted({r["seed"] for name, records in results.items() if ROWS[name].kind == "learned" for r in records})
    return (f"python benchmarks/accuracy_frontier.py --acdc {acdc} --rows {','.join(results)}"
            + (f" --seeds {','.join(map(str, seeds))}" if seeds else ""))


def write_table(work: Path, out: Path, acdc: str) -> None:
    results = finished(work)
    if results:
        command = reproduce_command(results, acdc)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(results, command), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acdc", type=Path, required=True, help="the ACDC HDF5 folder (SOURCE.md layout)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the learned rows")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "frontier_runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy_frontier.md")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tables-only", action="store_true", help="render the finished rows, run nothing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    acdc = "../shared/data/acdc" if args.acdc.resolve() == (ROOT.parent / "shared" / "data" / "acdc").resolve() \
        else str(args.acdc)
    spec = f"acdc-h5:{args.acdc}"
    train_pairs = val_pairs = None
    if not args.tables_only:
        train_pairs, val_pairs = load_pairs(f"{spec}:train"), load_pairs(f"{spec}:val")
    for name in ([] if args.tables_only else names):
        for seed in seeds if ROWS[name].kind == "learned" else [0]:
            record = run_row(ROWS[name], seed, train_pairs, val_pairs, args.work)
            print(f"{name} seed {seed}: DSC {np.nanmean([p['dsc'] for p in record['pairs']]):.2f}", flush=True)
            write_table(args.work, args.out, acdc)
    write_table(args.work, args.out, acdc)
    print(args.out.read_text(encoding="utf-8") if args.out.is_file() else "nothing rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())

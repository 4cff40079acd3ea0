"""The paper's Tables 1-3: train architecture × method × seed on each dataset, evaluate held out, tabulate.

What is measured, per dataset (ACDC: train on the SSL4MIS train split, evaluate on val; phantom:
train on ``--synthetic``, evaluate on 64 phantoms of another seed), with the protocol of
``models.evaluate`` (SPEC "Evaluation protocol"):
- Table 1: myocardium DSC % (strict nearest-neighbour warp: the headline; and the paper-compatible
  lenient score), Hausdorff and average surface distance, folding %, endpoint error against the true
  field (phantom only), mean ± std over pairs, with each run's training wall time and number of
  displacement updates. The identity row (no registration) is the floor.
- Table 2: paired two-sided t-tests of every method against AdaCS, per pair and over per-subject
  means (slices of one patient are not independent), for DSC, HD and ASD.
- Table 3: the ablation of the scoring objective (``L_scs`` alone, ``+ α·L_reg``, ``+ L_tv`` = AdaCS),
  vanilla as the reference; the final mean score shows whether the map collapsed.
- Beside the paper's Table 1 (ACDC DSC %), the only numbers the SPEC gives; the paper scored leniently.

Every method gets the same seed and the same number of displacement updates (the trainer gives methods
without a scoring network ``W + E`` displacement epochs; AdaCS ``W`` + ``W`` scoring-only + ``E``
alternating). With several seeds, each pair's metric is averaged over seeds first; tables show the
spread over pairs, plus the spread of the DSC over seeds.

Each run lives in ``--work DIR/<dataset>/<arch>/<method>/seed<k>``: the trainer's checkpoints and
artifact, ``report.json`` (the evaluation) and ``run.json`` (config, wall times, finished), both
written atomically. A rerun skips finished runs, resumes unfinished ones from their checkpoint, and
rewrites the tables after every run, so a partial matrix renders ("–" where a run is missing).
``--dry-run`` lists the plan and each run's state; ``--estimate`` times a few updates of every
(arch, method) and projects the hours the budget would take. Prints the tables, then one JSON line.

    python benchmarks/paper_tables.py --acdc ../shared/data/acdc --estimate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from adacs_vs_vanilla import data_specs, fmt, seconds_per_update

from models.artifact import load_artifact, write_json_atomic
from models.data.pairs import PairSample
from models.data.spec import load_pairs
from models.evaluate import evaluate_disps, evaluate_model
from models.networks.estimator import EstimatorConfig
from models.networks.registry import ARCHITECTURES
from models.objectives import METHODS
from models.statistics import mean_std, paired_ttest, paired_ttest_by_subject
from models.trainer import PHASE_WARMUP_SCORING, TrainConfig, phase_of_epoch, total_epochs, train

DATASETS = ("acdc", "synthetic")
MAIN_METHODS = ("none", "adacs", "nll", "beta-nll", "adareg", "adaframe")
ABLATION_METHODS = ("adacs-scs-only", "adacs-no-tv")
FIRST = ("none", "adacs")  # trained first in every (dataset, arch): the headline comparison
# Table 3's rows: method and the scoring objective it trains (none: the vanilla reference).
ABLATION_ROWS = (("none", "vanilla (reference)"), ("adacs-scs-only", "L_scs"), ("adacs-no-tv", "L_scs + α·L_reg"),
                 ("adacs", "L_scs + α·L_reg + L_tv (AdaCS)"))
TESTED = ("dsc", "hd", "asd")  # Table 2's metrics (the paper's)
PAIR_KEYS = ("dsc", "dsc_paper", "hd", "asd", "folding_pct", "epe", "epe_myo")
PAPER_ACDC_DSC = {"voxelmorph": (79.48, 80.50), "transmorph": (76.94, 78.39), "diffusemorph": (67.38, 72.09)}
ESTIMATOR_FIELDS = ("enc", "dec", "int_steps", "int_downsize")  # --arch-option keys set on EstimatorConfig
UNCOMPARED = ("picture_every", "device", "val_max_pairs")  # settings that do not change the trained model


# --- command line --------------------------------------------------------------------------------------


def _names(allowed: tuple[str, ...] | dict):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))
    return parse


def _seeds(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _arch_option(text: str) -> tuple[str, str, object]:
    """``ARCH:KEY=VALUE`` with a JSON value (``transmorph:embed_dim=12``, ``voxelmorph:enc=[8,8]``)."""
    arch, _, setting = text.partition(":")
    key, sep, value = setting.partition("=")
    if arch not in ARCHITECTURES or not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected ARCH:KEY=VALUE with ARCH in {', '.join(ARCHITECTURES)}, "
                                         f"got {text!r}")
    try:
        return arch, key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return arch, key.strip(), value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", type=_names(DATASETS), default=list(DATASETS))
    p.add_argument("--acdc", type=Path, help="SSL4MIS ACDC folder (train split to train, val to evaluate)")
    p.add_argument("--synthetic", default="dims=2,size=96,n=256,noise=0.04,covisibility=0.5,inconsistency=0.3",
                   help="phantom options for training (evaluated on 64 phantoms of another seed)")
    p.add_argument("--archs", type=_names(ARCHITECTURES), default=list(ARCHITECTURES))
    p.add_argument("--methods", type=_names(MAIN_METHODS), default=list(MAIN_METHODS),
                   help="Tables 1-2 (AdaCS is the reference of Table 2)")
    p.add_argument("--ablation", type=_names(ABLATION_METHODS), default=list(ABLATION_METHODS),
                   help="Table 3's extra runs ('' for none); none and adacs are its other rows")
    p.add_argument("--ablation-archs", type=_names(ARCHITECTURES), default=["voxelmorph"],
                   help="architectures of Table 3 (those also in --archs)")
    p.add_argument("--seeds", type=_seeds, default=[0])
    p.add_argument("--epochs", type=int, default=20, help="main (alternating) epochs")
    p.add_argument("--warmup-epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=25, help="optimiser updates per epoch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, help="default: --batch-size (one micro-batch)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scoring-lr", type=float, help="scoring network lr (default: --lr)")
    p.add_argument("--alpha", type=float, default=0.02, help="AdaCS scoring regulariser weight α (SPEC: 0.02)")
    p.add_argument("--lam", type=float, default=TrainConfig.lam,
                   help=f"smoothness weight λ of every method (SPEC: {TrainConfig.lam})")
    p.add_argument("--arch-option", dest="arch_options", type=_arch_option, action="append", default=[],
                   help="ARCH:KEY=VALUE, repeatable: the architecture's options, or enc/dec/int_steps/int_downsize")
    p.add_argument("--val-max-pairs", type=int, default=32, help="pairs validated after every epoch (0: none)")
    p.add_argument("--eval-max-pairs", type=int, help="evaluate only the first N held-out pairs")
    p.add_argument("--no-pictures", action="store_true", help="skip the Fig. 4 panel of each run's last epoch")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 is faster on a shared machine")
    p.add_argument("--work", type=Path, default=Path("benchmarks/runs/paper_tables"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_tables.md"))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the planned runs and their state, train nothing")
    mode.add_argument("--tables-only", action="store_true",
                      help="write the tables from the finished runs, train nothing (e.g. after parallel processes)")
    mode.add_argument("--estimate", action="store_true",
                      help="time --estimate-updates updates of each (arch, method) and project the budget's hours")
    p.add_argument("--estimate-updates", type=int, default=5)
    args = p.parse_args(argv)
    _check(p, args)
    return args


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if "acdc" in args.datasets and args.acdc is None:
        p.error("--datasets includes acdc: give its folder with --acdc (or --datasets synthetic)")
    if not args.datasets or not args.archs or not args.seeds or not (args.methods or args.ablation):
        p.error("--datasets, --archs, --seeds and --methods (or --ablation) must name at least one each")
    if min(args.epochs, args.warmup_epochs) < 0 or min(args.steps_per_epoch, args.batch_size) < 1:
        p.error("--epochs and --warmup-epochs must be >= 0, --steps-per-epoch and --batch-size >= 1")
    if args.micro_batch_size is not None and (args.micro_batch_size < 1 or args.batch_size % args.micro_batch_size):
        p.error(f"--batch-size {args.batch_size} must be a multiple of --micro-batch-size {args.micro_batch_size}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.val_max_pairs < 0 or (args.eval_max_pairs is not None and args.eval_max_pairs < 2):
        p.error("--val-max-pairs must be >= 0 and --eval-max-pairs >= 2 (a paired test needs two pairs)")


# --- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    dataset: str
    arch: str
    method: str
    seed: int

    def folder(self, work: Path) -> Path:
        return work / self.dataset / self.arch / self.method / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.dataset}/{self.arch}/{self.method}/seed{self.seed}"


def ablation_archs(args) -> list[str]:
    return [a for a in args.archs if a in args.ablation_archs] if args.ablation else []


def arch_methods(args, arch: str) -> list[str]:
    """The methods trained for ``arch``, headline pair first, then the others, then the ablation."""
    methods = list(args.methods) + (["none", "adacs", *args.ablation] if arch in ablation_archs(args) else [])
    return list(dict.fromkeys([m for m in FIRST if m in methods] + methods))


def plan(args) -> list[Run]:
    """Every run, in an order that fills useful tables early: seed 0 of everything before seed 1."""
    return [Run(d, a, m, s) for s in args.seeds for d in args.datasets for a in args.archs
            for m in arch_methods(args, a)]


@dataclass
class Data:
    name: str
    train_spec: str
    eval_spec: str
    train: list[PairSample]
    eval: list[PairSample]

    @property
    def key(self) -> dict:
        """What a finished run must have been trained and evaluated on to count as finished."""
        return {"train": self.train_spec, "eval": self.eval_spec, "n_eval_pairs": len(self.eval)}


def load_data(args, name: str) -> Data:
    # The data do not depend on the training seed: every seed trains and is scored on the same pairs.
    fixed = argparse.Namespace(datasets=[name], acdc=args.acdc, synthetic=args.synthetic, seed=0)
    train_spec, eval_spec = data_specs(fixed)[name]
    eval_pairs = load_pairs(eval_spec)[: args.eval_max_pairs]
    return Data(name, train_spec, eval_spec, load_pairs(train_spec), eval_pairs)


def train_config(args, run: Run, ndim: int) -> TrainConfig:
    options = {key: value for arch, key, value in args.arch_options if arch == run.arch}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in ESTIMATOR_FIELDS}
    estimator = EstimatorConfig(arch=run.arch, ndim=ndim, **fields,
                                options={k: v for k, v in options.items() if k not in ESTIMATOR_FIELDS})
    scoring = METHODS[run.method].scoring is not None
    cfg = TrainConfig(method=run.method, alpha=args.alpha if scoring else TrainConfig.alpha, epochs=args.epochs,
                      warmup_epochs=args.warmup_epochs, steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch_size, micro_batch_size=args.micro_batch_size or args.batch_size,
                      lr=args.lr, scoring_lr=args.scoring_lr, seed=run.seed, val_max_pairs=args.val_max_pairs,
                      lam=args.lam, estimator=estimator)
    return replace(cfg, picture_every=0 if args.no_pictures else total_epochs(cfg))  # the last epoch's panel


# --- running -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _comparable(config: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in UNCOMPARED}


def is_finished(record: dict | None, cfg: TrainConfig, data: Data) -> bool:
    return bool(record and record.get("finished") and record.get("data") == data.key
                and _comparable(record["train_config"]) == _comparable(cfg.to_dict()))


def run_state(run: Run, cfg: TrainConfig, data: Data, work: Path) -> str:
    folder = run.folder(work)
    record = _read_json(folder / "run.json")
    if is_finished(record, cfg, data):
        return f"finished ({record['train_wall_s']:.0f} s training)"
    last = _read_json(folder / "checkpoints" / "last.json")
    if last is not None:
        return f"checkpoint at epoch {last['epoch']}/{total_epochs(cfg)}"
    return "stale: finished with other settings" if record else "to do"


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _progress(run: Run):
    def log(event) -> None:
        if event.kind == "epoch":
            val = f" val DSC {event.val['val_dice']:.1f}" if "val_dice" in event.val else ""
            print(f"    epoch {event.epoch + 1}/{event.total_epochs} {event.phase} m_t={event.m_t:.3f}"
                  f" {event.elapsed_s:.0f} s{val}", flush=True)
    return log


def run_one(run: Run, cfg: TrainConfig, data: Data, args) -> dict:
    """Train (resuming from the checkpoint), evaluate on the held-out pairs, write report and run.json."""
    folder = run.folder(args.work)
    last = _read_json(folder / "checkpoints" / "last.json")
    resumed_from = last["epoch"] if last else 0
    if resumed_from > total_epochs(cfg):
        raise ValueError(f"{folder}: its checkpoint holds {resumed_from} epochs, more than the {total_epochs(cfg)} "
                         "this budget asks for; use another --work")
    start = time.perf_counter()
    result = train(cfg, data.train, folder, val_pairs=data.eval if args.val_max_pairs else None,
                   callback=_progress(run))
    call_s, start = time.perf_counter() - start, time.perf_counter()
    report = evaluate_model(load_artifact(folder / "model"), data.eval)
    eval_s = time.perf_counter() - start
    write_json_atomic(folder / "report.json", report)
    history, final = result.history, result.history[-1]
    record = {"dataset": run.dataset, "arch": run.arch, "method": run.method, "seed": run.seed,
              "train_config": cfg.to_dict(), "data": data.key, "finished": True,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "train_wall_s": sum(h["time_s"] for h in history), "train_call_wall_s": call_s,
              "resumed_from_epoch": resumed_from, "eval_wall_s": eval_s,
              "inference_ms_per_pair": report["summary"]["inference_ms_per_pair"],
              "displacement_updates": sum(cfg.steps_per_epoch for h in history if h["phase"] != PHASE_WARMUP_SCORING),
              "updates": final["updates"], "seconds_per_update": seconds_per_update(history, cfg.steps_per_epoch),
              "final_m_t": final["m_t"], "final_score_mean": final.get("score_mean"), "machine": machine()}
    write_json_atomic(folder / "run.json", record)
    return record


def identity_report(data: Data, work: Path) -> dict:
    """The no-registration floor, cached beside the runs (it depends on the evaluation pairs only)."""
    path = work / data.name / "identity.json"
    cached = _read_json(path)
    if cached is not None and cached.get("data") == data.key:
        return cached["report"]
    report = evaluate_disps(data.eval, [torch.zeros(p.ndim, *p.shape) for p in data.eval])
    write_json_atomic(path, {"data": data.key, "report": report})
    return report


def collect(runs: list[Run], configs: dict[Run, TrainConfig], data: dict[str, Data], work: Path) -> dict:
    """``{run: (run.json, report.json)}`` of the finished runs of the plan."""
    out = {}
    for run in runs:
        record = _read_json(run.folder(work) / "run.json")
        if is_finished(record, configs[run], data[run.dataset]):
            out[run] = (record, _read_json(run.folder(work) / "report.json"))
    return out


# --- estimating ----------------------------------------------------------------------------------------


def probe_rates(cfg: TrainConfig, pairs: list[PairSample], folder: Path) -> dict[str, float]:
    """Median seconds of one update per phase, from a short run's step events (medians skip the burn-in)."""
    durations: dict[str, list[float]] = {}
    previous = [0.0]

    def on_event(event) -> None:
        if event.kind == "step":
            durations.setdefault(event.phase, []).append(event.elapsed_s - previous[0])
        previous[0] = event.elapsed_s  # an epoch event comes after its checkpoint: not counted as a step

    train(cfg, pairs, folder, callback=on_event)
    return {phase: statistics.median(values) for phase, values in durations.items()}


def estimate(runs: list[Run], configs: dict[Run, TrainConfig], data: dict[str, Data], n_updates: int) -> list[dict]:
    """Time ``n_updates`` updates of every phase of each (dataset, arch, method); project the budget."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.arch, run.method), []).append(run)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (dataset, arch, method), members in groups.items():
            full = configs[members[0]]
            probe = replace(full, warmup_epochs=1, epochs=1, steps_per_epoch=n_updates, picture_every=0)
            rates = probe_rates(probe, data[dataset].train[:64], Path(tmp) / dataset / arch / method)
            seconds = sum(rates[phase_of_epoch(e, full)] for e in range(total_epochs(full))) * full.steps_per_epoch
            rows.append({"dataset": dataset, "arch": arch, "method": method, "s_per_update": rates,
                         "hours_per_seed": seconds / 3600, "seeds": len(members)})
            print(f"  {dataset:10s} {arch:13s} {method:15s} "
                  + "  ".join(f"{phase} {rate:.3f} s" for phase, rate in rates.items())
                  + f"  -> {seconds / 3600:.2f} h per seed", flush=True)
    return rows


# --- tables --------------------------------------------------------------------------------------------

Found = list[tuple[dict, dict]]  # (run.json, report.json) of the finished seeds of one cell, by seed


def found(results: dict, dataset: str, arch: str, method: str) -> Found:
    return sorted((v for r, v in results.items() if (r.dataset, r.arch, r.method) == (dataset, arch, method)),
                  key=lambda pair: pair[0]["seed"])


def seed_averaged(reports: list[dict]) -> list[dict]:
    """Each pair's metrics averaged over the seeds' reports (pairs matched by ``pair_id``)."""
    by_id = [{p["pair_id"]: p for p in report["pairs"]} for report in reports]
    rows = []
    for pair in reports[0]["pairs"]:
        same = [ids[pair["pair_id"]] for ids in by_id if pair["pair_id"] in ids]
        if len(same) == len(reports):
            rows.append({"pair_id": pair["pair_id"], "subject_id": pair["subject_id"],
                         **{k: mean_std([p[k] for p in same])[0] for k in PAIR_KEYS if k in pair}})
    return rows


def cell(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if key in row]
    return fmt(*mean_std(values)) if values else "–"


def paired(a_rows: list[dict], b_rows: list[dict], key: str):
    """Tests of ``a`` against ``b`` on their common pairs: per pair, then over per-subject means."""
    b_by_id = {row["pair_id"]: row for row in b_rows}
    common = [row for row in a_rows if key in row and key in b_by_id.get(row["pair_id"], {})]
    x, y = [row[key] for row in common], [b_by_id[row["pair_id"]][key] for row in common]
    subjects = [row["subject_id"] for row in common]
    return paired_ttest(x, y), paired_ttest_by_subject(x, y, subjects)


def common_seed_rows(a: Found, b: Found) -> tuple[list[int], list[dict], list[dict]]:
    seeds = sorted({rec["seed"] for rec, _ in a} & {rec["seed"] for rec, _ in b})
    pick = lambda cell_runs: seed_averaged([rep for rec, rep in cell_runs if rec["seed"] in seeds])  # noqa: E731
    return seeds, (pick(a) if seeds else []), (pick(b) if seeds else [])


def _mean(values: list[float], spec: str) -> str:
    values = [v for v in values if v is not None]
    return format(statistics.fmean(values), spec) if values else "–"


def table1(name: str, results: dict, args, identity: dict) -> list[str]:
    epe = "epe_mean" in identity["summary"]
    keys = ("dsc", "dsc_paper", "hd", "asd", "folding_pct") + (("epe", "epe_myo") if epe else ())
    titles = ["DSC %", "DSC % (paper-compatible)", "HD", "ASD", "folding %"] + (["EPE", "EPE myocardium"] * epe)
    lines = ["| arch | method | seeds | " + " | ".join(titles) + " | DSC sd over seeds | train s | "
             "displacement updates | infer ms/pair |", "|---" * (len(titles) + 7) + "|",
             "| – | identity | – | " + " | ".join(cell(identity["pairs"], k) for k in keys) + " | – | 0 | 0 | – |"]
    for arch in args.archs:
        for method in args.methods:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {method} | 0 | " + " | ".join("–" for _ in keys) + " | – | – | – | – |")
                continue
            rows = seed_averaged([rep for _, rep in runs])
            seed_dsc = [rep["summary"]["dsc_mean"] for _, rep in runs]
            spread = f"{statistics.stdev(seed_dsc):.2f}" if len(seed_dsc) > 1 else "–"
            lines.append(f"| {arch} | {method} | {len(runs)} | " + " | ".join(cell(rows, k) for k in keys)
                         + f" | {spread} | {_mean([rec['train_wall_s'] for rec, _ in runs], '.1f')} | "
                         f"{runs[0][0]['displacement_updates']} | "
                         f"{_mean([rec['inference_ms_per_pair'] for rec, _ in runs], '.1f')} |")
    return lines


def table2(name: str, results: dict, args) -> list[str]:
    if "adacs" not in args.methods:
        return ["AdaCS is not in --methods: no tests against it."]
    header = "".join(f" Δ {k.upper()} | p {k.upper()} (pairs) | p {k.upper()} (subjects) |" for k in TESTED)
    lines = ["| arch | method | seeds | n pairs | n subjects |" + header, "|---" * (5 + 3 * len(TESTED)) + "|"]
    for arch in args.archs:
        adacs = found(results, name, arch, "adacs")
        for method in (m for m in args.methods if m != "adacs"):
            seeds, a_rows, b_rows = common_seed_rows(adacs, found(results, name, arch, method))
            if not seeds:
                lines.append(f"| {arch} | {method} | 0 | – | – |" + " – | – | – |" * len(TESTED))
                continue
            tests = [paired(a_rows, b_rows, key) for key in TESTED]
            lines.append(f"| {arch} | {method} | {len(seeds)} | {tests[0][0].n} | {tests[0][1].n} |" + "".join(
                f" {by_pair.mean_diff:+.2f} | {by_pair.p:.3g} | {by_subject.p:.3g} |" for by_pair, by_subject in tests))
    return lines


def table3(name: str, results: dict, args) -> list[str]:
    lines = ["| arch | scoring objective | method | seeds | DSC % | DSC % (paper-compatible) | HD | ASD | folding % | "
             "mean S (last epoch) | Δ DSC (AdaCS − row) | p (pairs) | p (subjects) |", "|---" * 13 + "|"]
    for arch in ablation_archs(args):
        adacs = found(results, name, arch, "adacs")
        for method, objective in ABLATION_ROWS:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {objective} | {method} | 0 |" + " – |" * 9)
                continue
            rows = seed_averaged([rep for _, rep in runs])
            cells = [cell(rows, k) for k in ("dsc", "dsc_paper", "hd", "asd", "folding_pct")]
            score = _mean([rec["final_score_mean"] for rec, _ in runs], ".3f")
            seeds, a_rows, b_rows = common_seed_rows(adacs, runs)
            test = "– | – | –"
            if seeds and method != "adacs":
                by_pair, by_subject = paired(a_rows, b_rows, "dsc")
                test = f"{by_pair.mean_diff:+.2f} | {by_pair.p:.3g} | {by_subject.p:.3g}"
            lines.append(f"| {arch} | {objective} | {method} | {len(runs)} | " + " | ".join(cells)
                         + f" | {score} | {test} |")
    return lines


def nuisance_groups(tags: dict[str, Sequence[str]]) -> dict[str, set[str]]:
    """Pair ids by known nuisance, from ``{pair_id: tags}`` (``PairSample.tags``, or a report row's
    ``tags``): ``clean``, each tag, and ``any nuisance``."""
    groups: dict[str, set[str]] = {"clean": {pair_id for pair_id, names in tags.items() if not names}}
    for tag in sorted({tag for names in tags.values() for tag in names}):
        groups[tag] = {pair_id for pair_id, names in tags.items() if tag in names}
    groups["any nuisance"] = {pair_id for pair_id, names in tags.items() if names}
    return groups


def nuisance_table(name: str, results: dict, args, pairs: list[PairSample], identity: dict) -> list[str]:
    """DSC split by the nuisances the evaluation pairs carry by construction, and AdaCS against each
    method on the pairs with one: where AdaCS should help, if anywhere."""
    groups = nuisance_groups({p.pair_id: p.tags for p in pairs})
    titles = [f"DSC % {group} (n = {len(ids)})" for group, ids in groups.items()]
    lines = ["| arch | method | seeds | " + " | ".join(titles) + " | Δ DSC any nuisance (AdaCS − row) | p (pairs) |",
             "|---" * (len(titles) + 5) + "|"]

    def split(rows: list[dict]) -> list[str]:
        return [cell([r for r in rows if r["pair_id"] in ids], "dsc") for ids in groups.values()]

    lines.append("| – | identity | – | " + " | ".join(split(identity["pairs"])) + " | – | – |")
    for arch in args.archs:
        adacs = found(results, name, arch, "adacs")
        for method in args.methods:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {method} | 0 |" + " – |" * (len(titles) + 2))
                continue
            test = "– | –"
            seeds, a_rows, b_rows = common_seed_rows(adacs, runs)
            if seeds and method != "adacs":
                hit = groups["any nuisance"]
                by_pair, _ = paired([r for r in a_rows if r["pair_id"] in hit],
                                    [r for r in b_rows if r["pair_id"] in hit], "dsc")
                test = f"{by_pair.mean_diff:+.2f} | {by_pair.p:.3g}"
            lines.append(f"| {arch} | {method} | {len(runs)} | "
                         + " | ".join(split(seed_averaged([rep for _, rep in runs]))) + f" | {test} |")
    return lines


def paper_table(name: str, results: dict, args) -> list[str]:
    lines = ["| arch | paper: vanilla | paper: AdaCS | paper: Δ | ours: vanilla | ours: AdaCS | ours: Δ | "
             "ours, paper-compatible: vanilla | ours, paper-compatible: AdaCS | ours, paper-compatible: Δ |",
             "|---" * 10 + "|"]
    for arch in args.archs:
        paper_vanilla, paper_adacs = PAPER_ACDC_DSC[arch]
        ours = []
        for key in ("dsc", "dsc_paper"):
            means = [_mean([rep["summary"].get(f"{key}_mean") for _, rep in found(results, name, arch, m)], ".2f")
                     for m in ("none", "adacs")]
            delta = f"{float(means[1]) - float(means[0]):+.2f}" if "–" not in means else "–"
            ours += [*means, delta]
        lines.append(f"| {arch} | {paper_vanilla:.2f} | {paper_adacs:.2f} | {paper_adacs - paper_vanilla:+.2f} | "
                     + " | ".join(ours) + " |")
    return lines


def dataset_section(data: Data, results: dict, args, identity: dict) -> list[str]:
    summary = identity["summary"]
    lines = [f"## {data.name}", "", f"Trained on `{data.train_spec}` ({len(data.train)} pairs); evaluated on "
             f"`{data.eval_spec}` ({summary['n_pairs']} pairs, {summary['n_subjects']} subjects). Distances (HD, "
             f"ASD, EPE) in {summary['distance_unit']}.", "",
             "### Table 1: registration accuracy (mean ± std over pairs)", "", *table1(data.name, results, args,
                                                                                        identity), "",
             "### Table 2: paired two-sided t-tests against AdaCS", "",
             "Δ = AdaCS − method (a positive Δ DSC, a negative Δ HD or ASD favours AdaCS); p per pair and over "
             "per-subject means; n from the DSC test.", "", *table2(data.name, results, args), ""]
    if ablation_archs(args):
        lines += ["### Table 3: ablation of the scoring objective", "",
                  "Mean S: the scoring map's mean over the last epoch (`L_scs` alone should collapse towards 0).",
                  "", *table3(data.name, results, args), ""]
    if any(p.tags for p in data.eval):
        lines += ["### By nuisance: DSC on clean pairs and on pairs with a known nuisance", "",
                  "The phantom knows which pairs lost signal in a blob of one frame (`dropout-moving`: the ED "
                  "frame, `dropout-fixed`: the ES frame), the correspondence failure AdaCS is meant to "
                  "down-weight. Mean ± std over pairs; the test is paired over the pairs with a nuisance.", "",
                  *nuisance_table(data.name, results, args, data.eval, identity), ""]
    if data.name == "acdc":
        lines += ["### Beside the paper's Table 1 (ACDC, DSC %)", "",
                  "The paper's numbers (its test set, its budget, lenient scoring) and ours (SSL4MIS val split).", "",
                  *paper_table(data.name, results, args), ""]
    return lines


def header(args, command: str, n_finished: int, n_planned: int) -> list[str]:
    w, e, s = args.warmup_epochs, args.epochs, args.steps_per_epoch
    host = machine()
    options = ", ".join(f"{arch}:{key}={json.dumps(value)}" for arch, key, value in args.arch_options)
    return ["# The paper's tables: architectures × methods", "", f"Command: `{command}`", "",
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {host['platform']}, "
            f"{host['cpus']} CPUs, torch {host['torch']} ({host['threads']} threads); each run's `run.json` records "
            "its own.", "",
            f"Budget per run: {(w + e) * s} displacement updates of batch {args.batch_size} (warm-up {w} epochs, "
            f"{e} main epochs, {s} updates per epoch); AdaCS and its ablations add {w * s} scoring-only updates "
            f"and one scoring update per alternating update. lr {args.lr} (scoring network "
            f"{args.scoring_lr or args.lr}), λ {args.lam}, α {args.alpha} (AdaCS and its ablations), network sizes: "
            + (f"the SPEC's except {options}." if options else "the SPEC's."),
            "", f"Seeds: {', '.join(map(str, args.seeds))}. With several seeds each pair's metric is averaged over "
            "the seeds first; \"DSC sd over seeds\" is the spread of the seeds' mean DSC.", "",
            "DSC % is the strict score (nearest-neighbour warp of the ED mask), the headline; the paper-compatible "
            "column warps the mask bilinearly and counts every value above 0, as the paper's test script did. "
            "Train s is the training wall time (sum over epochs, resumes included) on a machine shared with "
            "other jobs.", "", f"Finished runs: {n_finished} of {n_planned} planned; \"–\" marks a missing run.", ""]


def render(args, command: str, runs: list[Run], results: dict, data: dict[str, Data],
           identities: dict[str, dict]) -> str:
    lines = header(args, command, len(results), len(runs))
    for name in args.datasets:
        lines += dataset_section(data[name], results, args, identities[name])
    return "\n".join(lines)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- main ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    # The tables name the command that trains the matrix; --tables-only only re-renders it.
    shown = [a for a in (argv or sys.argv[1:]) if a != "--tables-only"]
    command = "python benchmarks/paper_tables.py " + " ".join(shlex.quote(a) for a in shown)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = plan(args)
    data = {name: load_data(args, name) for name in args.datasets}
    configs = {run: train_config(args, run, data[run.dataset].train[0].ndim) for run in runs}
    if args.dry_run:
        for i, run in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {run}: {run_state(run, configs[run], data[run.dataset], args.work)}")
        return 0
    if args.estimate:
        rows = estimate(runs, configs, data, args.estimate_updates)
        hours = sum(row["hours_per_seed"] * row["seeds"] for row in rows)
        print(f"Projected training time of the {len(runs)} planned runs: {hours:.2f} h (updates only; "
              "evaluation and per-epoch validation come on top)")
        print(json.dumps({"benchmark": "paper_tables", "estimate": rows, "hours": hours}))
        return 0
    identities = {name: identity_report(d, args.work) for name, d in data.items()}
    for i, run in enumerate([] if args.tables_only else runs, 1):
        if is_finished(_read_json(run.folder(args.work) / "run.json"), configs[run], data[run.dataset]):
            print(f"[{i}/{len(runs)}] {run}: finished, skipped", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {run}: {run_state(run, configs[run], data[run.dataset], args.work)}", flush=True)
        record = run_one(run, configs[run], data[run.dataset], args)
        print(f"  trained {record['train_call_wall_s']:.0f} s (this call), evaluated {record['eval_wall_s']:.0f} s",
              flush=True)
        results = collect(runs, configs, data, args.work)
        write_text_atomic(args.out, render(args, command, runs, results, data, identities))
    results = collect(runs, configs, data, args.work)
    text = render(args, command, runs, results, data, identities)
    write_text_atomic(args.out, text)
    print(text)
    summary = {str(run): round(report["summary"]["dsc_mean"], 3) for run, (_, report) in results.items()}
    print(json.dumps({"benchmark": "paper_tables", "finished": len(results), "planned": len(runs),
                      "dsc_mean": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
This file parses the command line and runs the plan; ``paper_tables_plan.py`` says what the runs are,
``paper_tables_render.py`` writes the tables.

    python benchmarks/paper_tables.py --acdc ../shared/data/acdc --estimate
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from adacs_vs_vanilla import seconds_per_update
from paper_tables_plan import (
    ABLATION_METHODS,
    DATASETS,
    MAIN_METHODS,
    Data,
    Run,
    load_data,
    machine,
    plan,
    train_config,
)
from paper_tables_render import Results, cell, nuisance_groups, paired, render, seed_averaged

from models.artifact import load_artifact
from models.data.pairs import PairSample
from models.evaluate import evaluate_disps, evaluate_model
from models.io.atomic import atomic_write, write_json_atomic
from models.networks.registry import ARCHITECTURES
from models.trainer import PHASE_WARMUP_SCORING, TrainConfig, phase_of_epoch, total_epochs, train

# The script's names other code uses; compare_runs.py and the tests reach the table helpers through here.
__all__ = ["Run", "cell", "main", "nuisance_groups", "paired", "parse_args", "plan", "seed_averaged", "train_config"]

UNCOMPARED = ("picture_every", "device", "val_max_pairs")  # settings that do not change the trained model


# --- command line --------------------------------------------------------------------------------------


def _names(allowed: tuple[str, ...] | dict) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names from ``allowed``, repeats dropped, order kept."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))
    return parse


def _seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``, repeats dropped (a seed twice would count one run twice)."""
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    """The refusals argparse cannot express, as usage errors before any data is loaded."""
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


# --- running -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    """The file's JSON, or None where a run has not written it yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _comparable(config: dict) -> dict:
    """A config as ``run.json`` holds it (tuples as lists), less what does not change the trained model."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in UNCOMPARED}


def is_finished(record: dict | None, cfg: TrainConfig, data: Data) -> bool:
    """Finished on these data with these settings: a rerun skips it; anything else is trained (again)."""
    return bool(record and record.get("finished") and record.get("data") == data.key
                and _comparable(record["train_config"]) == _comparable(cfg.to_dict()))


def run_state(run: Run, cfg: TrainConfig, data: Data, work: Path) -> str:
    """What a rerun would do with ``run``, in words, for ``--dry-run`` and the progress lines."""
    folder = run.folder(work)
    record = _read_json(folder / "run.json")
    if is_finished(record, cfg, data):
        return f"finished ({record['train_wall_s']:.0f} s training)"
    last = _read_json(folder / "checkpoints" / "last.json")
    if last is not None:
        return f"checkpoint at epoch {last['epoch']}/{total_epochs(cfg)}"
    return "stale: finished with other settings" if record else "to do"


def _progress(run: Run) -> Callable[[object], None]:
    """The trainer's callback: one line per epoch, so a long matrix's log shows where it is."""

    def log(event) -> None:
        if event.kind == "epoch":
            val = f" val DSC {event.val['val_dice']:.1f}" if "val_dice" in event.val else ""
            print(f"    epoch {event.epoch + 1}/{event.total_epochs} {event.phase} m_t={event.m_t:.3f}"
                  f" {event.elapsed_s:.0f} s{val}", flush=True)
    return log


def run_one(run: Run, cfg: TrainConfig, data: Data, args: argparse.Namespace) -> dict:
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


def collect(runs: list[Run], configs: dict[Run, TrainConfig], data: dict[str, Data], work: Path) -> Results:
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


# --- main ----------------------------------------------------------------------------------------------


def write_tables(path: Path, text: str) -> None:
    """Atomically, so a reader (or a crash between runs) never meets half a table; readable as any output."""
    with atomic_write(path, "w", private=False) as handle:
        handle.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, then dry-run, estimate, or train what is not finished, rewriting the tables after every run."""
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
        write_tables(args.out, render(args, command, runs, results, data, identities))
    results = collect(runs, configs, data, args.work)
    text = render(args, command, runs, results, data, identities)
    write_tables(args.out, text)
    print(text)
    summary = {str(run): round(report["summary"]["dsc_mean"], 3) for run, (_, report) in results.items()}
    print(json.dumps({"benchmark": "paper_tables", "finished": len(results), "planned": len(runs),
                      "dsc_mean": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

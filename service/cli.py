"""The ``adacs`` command line: ``train``, ``evaluate``, ``register``, ``register-cine``, ``demo`` and ``serve``.

Names of commands, flags and output files are a contract other tools call. Heavy libraries (torch,
SimpleITK) are imported inside the commands, so ``adacs --help`` is instant and this module stays
importable by the torch-free API process.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from models.defaults import LR_SCHEDULES, MAX_MICRO_BATCH, SUPERVISIONS, TRAIN_DEFAULTS, default_micro_batch_size
from service.cli_args import (
    LABELS_HELP,
    arch_option,
    device_name,
    ints_arg,
    label_names_arg,
    label_weight_arg,
    labels_arg,
    refine_steps_arg,
    seconds_arg,
)
from service.cli_cine import CINE_COMMANDS, add_cine_commands
from service.cli_remote import REMOTE_COMMANDS, add_remote_commands

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The whole ``adacs`` parser: the local commands here, the remote ones from :mod:`service.cli_remote`."""
    parser = argparse.ArgumentParser(prog="adacs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_register(sub)
    add_cine_commands(sub)  # register-cine
    _add_demo(sub)
    _add_serve(sub)
    add_remote_commands(sub)  # submit, wait, download, cancel, train-remote, datasets, models
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``adacs train``: data, network, budget and output; the objective's weights in :func:`_add_train_weights`."""
    t = sub.add_parser("train", help="train a displacement estimator (AdaCS or vanilla)")
    t.add_argument("--data", required=True, help="training data SPEC: synthetic[:k=v,...] or acdc-h5:PATH[:split]")
    t.add_argument("--val-data", help="validation data SPEC (default: the val split of acdc-h5 data, or "
                                      "a differently seeded phantom set for synthetic data; 'none' for none)")
    d = TRAIN_DEFAULTS  # every training default, shared with the trainer and the API (models/defaults.py)
    t.add_argument("--arch", default=d.arch, help="displacement estimator: pyramid (coarse-to-fine, LapIRN-like), "
                                                  "voxelmorph, transmorph or diffusemorph (default: %(default)s)")
    t.add_argument("--arch-option", dest="arch_options", type=arch_option, action="append", default=[],
                   metavar="KEY=VALUE", help="an architecture size, e.g. embed_dim=48 or depths=[2,2,4] (JSON "
                                             "values; repeatable; see models/networks/*.py for the options)")
    t.add_argument("--method", default=d.method, help="training method: none (vanilla); adacs; the baselines nll, "
                                                      "beta-nll, adareg, adaframe; the ablations adacs-scs-only "
                                                      "(Eq. 3 alone) and adacs-no-tv (Eqs. 3-4) (default: %(default)s)")
    t.add_argument("--epochs", type=int, default=d.epochs, help="epochs after the warm-up(s) (default: %(default)s)")
    t.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help="optimiser updates per epoch (default: %(default)s)")
    t.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                   help="epochs of each warm-up phase (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per optimiser update "
                                                                        "(default: %(default)s)")
    t.add_argument("--micro-batch-size", type=int, default=None,
                   help=f"pairs per forward pass; gradients accumulate to --batch-size "
                        f"(default min({MAX_MICRO_BATCH}, B))")
    t.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of the displacement estimator "
                                                          "(default: %(default)s)")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help="the estimator's learning rate over its updates: constant, or cosine decay to 0 "
                        "(default: %(default)s)")
    t.add_argument("--scoring-lr", type=float, default=d.scoring_lr, help="learning rate of the AdaCS scoring "
                                                                          "network (default: %(default)s)")
    _add_train_weights(t)
    t.add_argument("--no-bidir", action="store_true", help="train one direction only")
    t.add_argument("--int-steps", type=int, default=7, help="scaling-and-squaring steps (0: no integration)")
    t.add_argument("--enc", type=ints_arg, default=(16, 32, 32, 32),
                   help="U-Net encoder features of voxelmorph (and of the AdaCS scoring / NLL variance networks), "
                        "e.g. 16,32,32,32")
    t.add_argument("--dec", type=ints_arg, default=(32, 32, 32, 32, 32, 16, 16),
                   help="U-Net decoder features (as --enc)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--picture-every", type=int, default=0, help="write Fig. 4/5 PNGs every N epochs (0: never)")
    t.add_argument("--device", default="auto", help="cpu, cuda or auto")
    t.add_argument("--devices", type=int, default=1,
                   help="processes to train with under torch.distributed, one per GPU (on the CPU, gloo "
                        "processes); each takes batch-size/N pairs of every update. Under torchrun leave it at 1 "
                        "(README: Training across GPUs) (default: %(default)s)")
    t.add_argument("--out", required=True, type=Path, help="run directory (rerun with the same --out to resume)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train_weights(t: argparse.ArgumentParser) -> None:
    """The objective's weights and the optional label term of ``adacs train``, defaults from ``TRAIN_DEFAULTS``."""
    d = TRAIN_DEFAULTS
    t.add_argument("--lam", type=float, default=d.lam, help="smoothness weight λ (default: %(default)s)")
    t.add_argument("--alpha", type=float, default=d.alpha, help="scoring regulariser weight α (default: %(default)s)")
    t.add_argument("--beta", type=float, default=d.beta, help="TV momentum scale β (default: %(default)s)")
    t.add_argument("--kappa", type=float, default=d.kappa, help="momentum activation scale κ (default: %(default)s)")
    t.add_argument("--supervision", choices=SUPERVISIONS, default=d.supervision,
                   help="'labels': add a soft Dice of the training masks to the objective (every training pair "
                        "needs both masks; inference still needs images only) (default: %(default)s)")
    t.add_argument("--label-weight", type=label_weight_arg, default=d.label_weight,
                   help="weight of the label term, > 0 (default: %(default)s)")
    t.add_argument("--labels", type=labels_arg, default=d.labels,
                   help="labels the label term scores, e.g. 2 or 1,2,3 (default: every foreground label of the "
                        "training masks; on 2D cardiac slices the myocardium alone, 2, measured better)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """``adacs evaluate``: a model artifact on labelled pairs, refined as registration would."""
    e = sub.add_parser("evaluate", help="score a model on labelled pairs (DSC, HD, ASD, folding)")
    e.add_argument("--model", required=True, type=Path, help="model artifact directory")
    e.add_argument("--data", required=True, help="data SPEC")
    e.add_argument("--out", required=True, type=Path, help="report.json to write")
    e.add_argument("--device", default="auto")
    _add_refine_flags(e, "evaluation refines every pair as registration does")


def _add_register(sub: argparse._SubParsersAction) -> None:
    """``adacs register``: the service's pipeline on local files (the same flags as ``adacs submit``)."""
    r = sub.add_parser("register", help="register a moving image onto a fixed image (or every pair of a CSV)")
    r.add_argument("--model", required=True, type=Path, help="model artifact directory")
    r.add_argument("--fixed", type=Path, help="fixed image (with --moving; or give --pairs)")
    r.add_argument("--moving", type=Path)
    r.add_argument("--pairs", type=Path, help="a CSV of pairs (fixed,moving[,fixed_mask,moving_mask][,id], paths "
                                              "relative to it) registered in one process into OUT/<id>/, with "
                                              "OUT/summary.csv")
    r.add_argument("--moving-mask", type=Path, help="label map on the moving image, warped to the fixed grid")
    r.add_argument("--fixed-mask", type=Path, help="label map on the fixed image (Dice goes into the report)")
    r.add_argument("--out", required=True, type=Path, help="output directory")
    for role in ("fixed", "moving"):
        r.add_argument(f"--{role}-series", help=f"SeriesInstanceUID (or a unique prefix) when the {role} DICOM "
                                                 "folder/zip holds several series")
        r.add_argument(f"--{role}-frame", type=int, help=f"frame (0-based) of a 4D {role} image")
    r.add_argument("--labels", type=label_names_arg, help=LABELS_HELP)
    r.add_argument("--device", default="auto")
    _add_refine_flags(r, "a 2D stack is refined all slices at once, under one time limit")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    """``adacs demo``: a minute-long tour on phantoms, nothing to download."""
    d = sub.add_parser("demo", help="make a synthetic cardiac pair, train a small model, register the pair")
    d.add_argument("--out", type=Path, default=Path("runs/demo"))
    d.add_argument("--epochs", type=int, default=4)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """``adacs serve``: the API and a worker in one command, for a single machine."""
    s = sub.add_parser("serve", help="the embedded service: API and one Celery worker, SQLite and a filesystem "
                                     "broker under --data-dir (nothing else to install)")
    s.add_argument("--host", default="127.0.0.1", help="address the API listens on")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data-dir", type=Path, default=None,
                   help="database, artifacts and broker folder (default: $ADACS_DATA_DIR or ./adacs-data)")
    s.add_argument("--workers", type=int, default=1,
                   help="concurrent jobs: 1 runs the worker with --pool solo, more with a prefork pool")
    s.add_argument("--pool", choices=("solo", "prefork", "threads"), default=None,
                   help="the worker's pool (default: solo for one worker, prefork for more); threads runs the "
                        "jobs in one process, whose registrations share batched network forwards")


_device = device_name


def _default_val_spec(spec: str) -> str | None:
    """Validation data when none is named: the ``val`` split of ACDC training data, or phantom pairs
    from another seed (a quarter as many, at least 8) for synthetic data."""
    if spec.startswith("acdc-h5:") and spec.endswith(":train"):
        return spec[: -len(":train")] + ":val"
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from models.data.spec import describe_spec

        options = dict(describe_spec(spec)["config"])
        options["seed"] = int(options["seed"]) + 1_000_003
        options["n"] = max(8, int(options["n"]) // 4)
        return "synthetic:" + ",".join(f"{k}={v}" for k, v in options.items())
    return None


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from models.data.spec import describe_spec, load_pairs
    from models.networks.estimator import EstimatorConfig
    from models.trainer import TrainConfig
    from models.training.distributed import check_devices, launched_by_torchrun, train_on_devices

    micro = args.micro_batch_size or default_micro_batch_size(args.batch_size)
    cfg = TrainConfig(method=args.method, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                      steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, micro_batch_size=micro,
                      lr=args.lr, lr_schedule=args.lr_schedule, scoring_lr=args.scoring_lr, lam=args.lam,
                      alpha=args.alpha, beta=args.beta,
                      kappa=args.kappa, supervision=args.supervision, label_weight=args.label_weight,
                      labels=args.labels,
                      bidir=not args.no_bidir, seed=args.seed, picture_every=args.picture_every,
                      device=_device(args.device),
                      estimator=EstimatorConfig(arch=args.arch, enc=args.enc, dec=args.dec, int_steps=args.int_steps,
                                                options=dict(args.arch_options)))
    cfg.validate()
    if not launched_by_torchrun():
        check_devices(args.devices, cfg.batch_size, cfg.device)
    train_pairs = load_pairs(args.data)
    val_spec = args.val_data if args.val_data is not None else _default_val_spec(args.data)
    val_pairs = load_pairs(val_spec) if val_spec and val_spec != "none" else None
    print(f"training {args.arch}/{args.method} on {len(train_pairs)} pairs"
          f" (validation: {len(val_pairs) if val_pairs else 0} pairs) -> {args.out}", file=sys.stderr)
    progress = _ProgressBar(disable=args.quiet)
    data = {"train": describe_spec(args.data), "val": describe_spec(val_spec) if val_pairs else None}
    try:
        result = train_on_devices(args.devices, cfg, train_pairs, args.out, val_pairs=val_pairs, callback=progress,
                                  data_description=data)
    finally:
        progress.close()
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return 0
    last = result.history[-1] if result.history else {}
    print(json.dumps({"model": str(args.out / "model"), "epochs": len(result.history),
                      "val_dice": last.get("val_dice"), "m_t": last.get("m_t")}))
    return 0


class _ProgressBar:
    """Adapts trainer progress events to a tqdm bar over all optimiser updates."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event.total_steps, initial=event.global_step - 1, disable=self.disable,
                            unit="upd", dynamic_ncols=True)
        if event.kind == "step":
            self.bar.update(1)
            losses = {k: f"{v:.4g}" for k, v in event.losses.items() if k in ("loss_de", "loss_se")}
            self.bar.set_description(f"ep {event.epoch + 1}/{event.total_epochs} {event.phase}")
            self.bar.set_postfix(m_t=f"{event.m_t:.3f}", **losses)
        elif "val_dice" in event.val:
            self.bar.write(f"epoch {event.epoch + 1}: val Dice {event.val['val_dice']:.2f}%  m_t {event.m_t:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_refine_flags(parser: argparse.ArgumentParser, note: str) -> None:
    """``--refine-steps``/``--refine-time-limit``: unset, the model card's ``inference`` defaults apply."""
    parser.add_argument("--refine-steps", type=refine_steps_arg, default=None, metavar="N",
                        help="test-time refinement: N Adam steps on the pair's own image term + smoothness after the "
                             "network's forward pass, never worse by the image term than the network (0: the "
                             f"network's answer; default: the model card's, else 0); {note}")
    parser.add_argument("--refine-time-limit", type=seconds_arg, default=None, metavar="S",
                        help="stop refining after S seconds per registration (default: the model card's, else 30)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.artifact import load_artifact
    from models.data.spec import describe_spec, load_pairs
    from models.evaluate import evaluate_model
    from models.io.atomic import write_json_atomic
    from models.refine import refine_config

    model = load_artifact(args.model, device=_device(args.device))
    # The flags, the model card filling what they leave unset: exactly what `adacs register` does.
    refine_with = refine_config(model.card, steps=args.refine_steps, time_limit_s=args.refine_time_limit)
    pairs = load_pairs(args.data)
    report = evaluate_model(model, pairs, progress=lambda items, total: tqdm(items, total=total, unit="pair",
                                                                           desc="evaluating"),
                            refine_with=refine_with)
    report["model"] = str(args.model)
    report["data"] = describe_spec(args.data)
    write_json_atomic(args.out, report)
    print(json.dumps(report["summary"], indent=2))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """The service's pipeline (``models.register.register_files``) on local files, with a progress bar."""
    from tqdm import tqdm

    from models.artifact import load_artifact
    from models.register import register_files

    if (args.pairs is None) == (args.fixed is None or args.moving is None):
        raise ValueError("give either --fixed and --moving (one pair) or --pairs CSV (many)")
    if args.pairs is not None:
        from service.cli_batch import register_pairs

        return register_pairs(args, _device(args.device))
    inputs = {role: path for role, path in (("fixed", args.fixed), ("moving", args.moving),
                                            ("moving_mask", args.moving_mask), ("fixed_mask", args.fixed_mask))
              if path is not None}
    bar = lambda items, total: tqdm(items, total=total, unit="batch", desc="registering")  # noqa: E731
    done = register_files(lambda: load_artifact(args.model, device=_device(args.device)), inputs, args.out,
                          model_fields={"model": str(args.model)},
                          series={"fixed": args.fixed_series, "moving": args.moving_series},
                          frames={"fixed": args.fixed_frame, "moving": args.moving_frame},
                          refine_steps=args.refine_steps, refine_time_limit_s=args.refine_time_limit, progress=bar,
                          label_names=args.labels)
    print(json.dumps(done.report, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small model on phantom pairs and register a held-out phantom pair saved as NIfTI."""
    import SimpleITK as sitk

    from models.data.synthetic import PhantomConfig, make_phantom_pair

    pair = make_phantom_pair(PhantomConfig(size=64, seed=999), 0)
    inputs = args.out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, array in (("fixed", pair.fixed), ("moving", pair.moving), ("fixed_mask", pair.fixed_mask),
                        ("moving_mask", pair.moving_mask)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(pair.spacing_mm or (1.0, 1.0))
        sitk.WriteImage(image, str(inputs / f"{name}.nii.gz"))
    spec = "synthetic:dims=2,size=64,n=64,seed=0"
    rc = main(["train", "--data", spec, "--arch", "voxelmorph", "--method", "adacs", "--epochs", str(args.epochs),
               "--warmup-epochs", "2",
               "--steps-per-epoch", "10", "--batch-size", "8", "--enc", "16,32,32", "--dec", "32,32,32,16",
               "--lr", "1e-3",  # a demo budget of 80 updates: 1e-4 (the SPEC's) would barely move
               "--out", str(args.out / "run")])
    if rc:
        return rc
    return main(["register", "--model", str(args.out / "run" / "model"), "--fixed", str(inputs / "fixed.nii.gz"),
                 "--moving", str(inputs / "moving.nii.gz"), "--moving-mask", str(inputs / "moving_mask.nii.gz"),
                 "--fixed-mask", str(inputs / "fixed_mask.nii.gz"), "--out", str(args.out / "registration")])


def cmd_serve(args: argparse.Namespace) -> int:
    from service.serve import serve

    return serve(host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers, pool=args.pool)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "register": cmd_register, "demo": cmd_demo,
            "serve": cmd_serve, **CINE_COMMANDS, **REMOTE_COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"adacs {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

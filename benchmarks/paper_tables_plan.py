"""The matrix of ``paper_tables.py``: which runs, on which pairs, with which training settings.

Kept apart from the runner and from the tables so both can name a run, its data and the machine
without importing each other: the runner trains what :func:`plan` lists, the tables read what it
finished.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from adacs_vs_vanilla import data_specs

from models.data.pairs import PairSample
from models.data.spec import load_pairs
from models.networks.estimator import EstimatorConfig
from models.objectives import METHODS
from models.trainer import TrainConfig, total_epochs

DATASETS = ("acdc", "synthetic")
MAIN_METHODS = ("none", "adacs", "nll", "beta-nll", "adareg", "adaframe")
ABLATION_METHODS = ("adacs-scs-only", "adacs-no-tv")
FIRST = ("none", "adacs")  # trained first in every (dataset, arch): the headline comparison
ESTIMATOR_FIELDS = ("enc", "dec", "int_steps", "int_downsize")  # --arch-option keys set on EstimatorConfig


@dataclass(frozen=True)
class Run:
    """One cell of the matrix at one seed; its folder under ``--work`` holds everything it wrote."""

    dataset: str
    arch: str
    method: str
    seed: int

    def folder(self, work: Path) -> Path:
        return work / self.dataset / self.arch / self.method / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.dataset}/{self.arch}/{self.method}/seed{self.seed}"


def ablation_archs(args: argparse.Namespace) -> list[str]:
    """Architectures of Table 3: those of ``--ablation-archs`` also in ``--archs`` (none without ``--ablation``)."""
    return [a for a in args.archs if a in args.ablation_archs] if args.ablation else []


def arch_methods(args: argparse.Namespace, arch: str) -> list[str]:
    """The methods trained for ``arch``, headline pair first, then the others, then the ablation."""
    methods = list(args.methods) + (["none", "adacs", *args.ablation] if arch in ablation_archs(args) else [])
    return list(dict.fromkeys([m for m in FIRST if m in methods] + methods))


def plan(args: argparse.Namespace) -> list[Run]:
    """Every run, in an order that fills useful tables early: seed 0 of everything before seed 1."""
    return [Run(d, a, m, s) for s in args.seeds for d in args.datasets for a in args.archs
            for m in arch_methods(args, a)]


@dataclass
class Data:
    """A dataset's training and held-out pairs, with the specs that name them in the tables."""

    name: str
    train_spec: str
    eval_spec: str
    train: list[PairSample]
    eval: list[PairSample]

    @property
    def key(self) -> dict:
        """What a finished run must have been trained and evaluated on to count as finished."""
        return {"train": self.train_spec, "eval": self.eval_spec, "n_eval_pairs": len(self.eval)}


def load_data(args: argparse.Namespace, name: str) -> Data:
    """The pairs of dataset ``name``, capped at ``--eval-max-pairs`` held-out pairs."""
    # The data do not depend on the training seed: every seed trains and is scored on the same pairs.
    fixed = argparse.Namespace(datasets=[name], acdc=args.acdc, synthetic=args.synthetic, seed=0)
    train_spec, eval_spec = data_specs(fixed)[name]
    eval_pairs = load_pairs(eval_spec)[: args.eval_max_pairs]
    return Data(name, train_spec, eval_spec, load_pairs(train_spec), eval_pairs)


def train_config(args: argparse.Namespace, run: Run, ndim: int) -> TrainConfig:
    """The trainer's settings for ``run``: the same budget and seed for every method, α only where it applies."""
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


def machine() -> dict:
    """Where this process runs: recorded in every ``run.json`` and in the tables' header."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}

"""The hyperparameters of one training run, and which of them a checkpoint may resume under."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from models.defaults import (
    TRAIN_DEFAULTS,
    check_label_weight,
    check_labels,
    check_lr_schedule,
    check_supervision,
)
from models.intensity import IntensityConfig
from models.networks.estimator import EstimatorConfig
from models.objectives import METHODS, BaselineConstants

__all__ = ["TrainConfig", "check_resumable"]

_D = TRAIN_DEFAULTS


@dataclass
class TrainConfig:
    """Hyperparameters of one training run; the worker fills it from a job row.

    Every default a user can set comes from ``models.defaults.TRAIN_DEFAULTS`` (where the departures
    from the SPEC are explained), so the CLI and the API cannot drift from the trainer.
    """

    method: str = _D.method
    epochs: int = _D.epochs
    warmup_epochs: int = _D.warmup_epochs
    steps_per_epoch: int = _D.steps_per_epoch
    batch_size: int = _D.batch_size
    micro_batch_size: int = _D.micro_batch_size
    lr: float = _D.lr
    lr_schedule: str = _D.lr_schedule  # "constant", or "cosine" over the estimator's updates (lr_factor)
    scoring_lr: float | None = _D.scoring_lr  # None: the same as lr
    lam: float = _D.lam
    alpha: float = _D.alpha
    beta: float = _D.beta
    kappa: float = _D.kappa
    # The baselines' constants (SPEC "Baselines"; documented in models.defaults).
    beta_nll: float = _D.beta_nll
    adareg_sigma: float = _D.adareg_sigma
    adaframe_a: float = _D.adaframe_a
    adaframe_b: float = _D.adaframe_b
    auxiliary_lr: float | None = _D.auxiliary_lr  # None: the same as lr (it trains jointly with f_θ)
    bidir: bool = _D.bidir
    seed: int = _D.seed
    # Label-assisted training: "labels" adds label_weight × soft Dice of the warped training masks over
    # `labels` (None: every foreground label in the training masks) to the displacement objective.
    supervision: str = _D.supervision
    label_weight: float = _D.label_weight
    labels: tuple[int, ...] | None = _D.labels
    val_max_pairs: int = 64
    picture_every: int = 0
    device: str = "cpu"
    estimator: EstimatorConfig = field(default_factory=lambda: EstimatorConfig(arch=_D.arch))
    intensity: IntensityConfig = field(default_factory=IntensityConfig)

    def __post_init__(self) -> None:
        # A job row's JSON brings a list: the same labels, compared and stored as one type.
        if self.labels is not None and not isinstance(self.labels, tuple):
            self.labels = tuple(self.labels)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["estimator"] = self.estimator.to_dict()
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @property
    def constants(self) -> BaselineConstants:
        return BaselineConstants(beta_nll=self.beta_nll, adareg_sigma=self.adareg_sigma,
                                 adaframe_a=self.adaframe_a, adaframe_b=self.adaframe_b)

    @property
    def accum_steps(self) -> int:
        return self.batch_size // self.micro_batch_size

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {sorted(METHODS)}")
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        if min(self.epochs, self.warmup_epochs) < 0 or self.steps_per_epoch < 1:
            raise ValueError("epochs and warmup_epochs must be >= 0 and steps_per_epoch >= 1")
        if self.adareg_sigma <= 0:
            raise ValueError(f"adareg_sigma must be > 0, got {self.adareg_sigma}")
        check_supervision(self.supervision)
        check_lr_schedule(self.lr_schedule)
        check_label_weight(self.label_weight)
        check_labels(self.labels)
        if self.labels is not None and self.supervision != "labels":
            raise ValueError(f"labels {list(self.labels)} are used only with supervision 'labels', "
                             f"not {self.supervision!r}")


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """A checkpoint resumes only the same run; only the number of main epochs may grow.

    A setting missing from the checkpoint was added after it was written, when the run behaved as
    the setting's default does: it counts as the default.
    """
    current, defaults = cfg.to_dict(), TrainConfig().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    differ = [k for k in current if k not in ("epochs", "picture_every", "device", "val_max_pairs")
              and saved.get(k) != current[k]]
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in differ)
        raise ValueError(f"cannot resume: the checkpoint was made with different settings ({details}); "
                         "use another --out or the same settings")

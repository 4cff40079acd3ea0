"""Test-time refinement ("estimate, then refine"): a few Adam steps on one pair's field.

The network's forward pass gives a good field fast; a per-pair optimisation of that field on the
pair's own objective makes it better where the network generalised imperfectly. We optimise exactly
what the network predicts: for a diffeomorphic estimator (``int_steps > 0``) the stationary velocity
at the estimator's ``1/int_downsize`` resolution, integrated by the estimator's own scaling and
squaring; with ``int_steps == 0`` the displacement itself. The objective is training's Eq. 1 for
that pair alone, ``image term + λ·R(u)`` (SPEC; ``models.losses``), so refinement pulls in the
direction the network was trained in. The scoring network is never involved: it is a training
device and is not even loaded at inference.

Guarantees, whatever the learning rate or the pair:
- 0 steps returns the network's field bit for bit;
- the result is never worse, by its own image term, than the network's field: every step's field
  is a candidate, the best objective among candidates no worse by the image term is kept, and a
  sample that no step improved gets the network's field back unchanged;
- the loop stops after ``steps`` updates or once ``time_limit_s`` has passed (checked before every
  update, so it overruns by at most one update and the final evaluation).

A batch is a set of independent problems: the objective is a sum over samples and Adam works
element-wise, so the slices of a 2D stack refined as one batch get the fields each would get alone,
and "best" and "never worse" are decided per sample. Images are ``(B, 1, *spatial)`` in the model's
normalised intensity space on the model grid; fields ``(B, ndim, *spatial)`` in model voxels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from models.inference import predict_deformation
from models.losses import background_mask, squared_residual
from models.networks.estimator import Deformation, DisplacementEstimator
from models.warp import warp

__all__ = ["SIMILARITIES", "RefineConfig", "RefineResult", "refine_config", "refine", "estimate_and_refine",
           "image_term", "local_ncc", "sample_smoothness"]

#: Image terms refinement can optimise: ``mse`` is training's Eq. 1 data term ``mean(B·r)``;
#: ``ncc`` is ``mean(B·(1 − cc²))`` with ``cc`` the local correlation in a cubic window.
SIMILARITIES = ("mse", "ncc")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RefineConfig:
    """How to refine one registration.

    Defaults, measured with the starter model on ACDC val (``benchmarks/LOG.md``, 2026-12-02): MSE,
    i.e. training's own data term, beat local NCC (+9.1 vs +7.3 DSC at 100 steps; NCC costs twice as
    much per step and folds a little); a constant learning rate of 0.3 on the half-resolution
    velocity improved every pair within 25 steps and was at its plateau by 50, where 0.03 (the
    issue's naive trial) gained less in 100 steps, and 1.0 gained more at 50+ steps but left some
    pairs unimproved at 25; a cosine decay did not help. ``steps`` is 0 here: a model refines only
    when its card or its user asks (``refine_config``). ``lam`` is training's smoothness weight λ,
    which ``refine_config`` takes from the card, so that refinement optimises the objective the
    network was trained on.
    """

    steps: int = 0
    time_limit_s: float = 30.0
    lr: float = 0.3
    similarity: str = "mse"
    lam: float = 0.01
    ncc_window: int = 9

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field (these come from users and model cards)."""
        if not _is_int(self.steps) or self.steps < 0:
            raise ValueError(f"refine steps must be an integer >= 0, got {self.steps!r}")
        for name in ("time_limit_s", "lr"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"refine {name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"refine similarity must be one of {list(SIMILARITIES)}, got {self.similarity!r}")
        if not _is_number(self.lam) or self.lam < 0:
            raise ValueError(f"refine lam must be a finite number >= 0, got {self.lam!r}")
        if not _is_int(self.ncc_window) or self.ncc_window < 3 or self.ncc_window % 2 == 0:
            raise ValueError(f"refine ncc_window must be an odd integer >= 3, got {self.ncc_window!r}")


#: Model-card keys under ``card["inference"]`` -> ``RefineConfig`` fields (see ``models.artifact``).
CARD_KEYS = {f"refine_{f.name}": f.name for f in fields(RefineConfig) if f.name != "lam"}


def refine_config(card: Mapping[str, Any] | None, steps: int | None = None,
                  time_limit_s: float | None = None, similarity: str | None = None) -> RefineConfig:
    """The refinement a model runs: the user's ``steps``/``time_limit_s``/``similarity`` where given, else
    the card's.

    The card may hold ``card["inference"]["refine_steps"]``, ``refine_time_limit_s``, ``refine_lr``,
    ``refine_similarity`` and ``refine_ncc_window``; ``λ`` is the card's training
    ``hyperparameters.lam``. A card without them refines 0 steps (the network's answer). A bad card
    value is a ``ValueError`` naming its key, not a silent default.
    """
    card = card or {}
    inference = card.get("inference") or {}
    if not isinstance(inference, Mapping):
        raise ValueError(f"model card: 'inference' must be an object, got {inference!r}")
    unknown = sorted(k for k in inference if k.startswith("refine_") and k not in CARD_KEYS)
    if unknown:
        raise ValueError(f"model card: unknown inference keys {unknown}; known: {sorted(CARD_KEYS)}")
    chosen = {name: inference[key] for key, name in CARD_KEYS.items() if key in inference}
    lam = (card.get("hyperparameters") or {}).get("lam")
    if lam is not None:
        chosen["lam"] = lam
    try:
        config = replace(RefineConfig(), **chosen)
        config.validate()
    except ValueError as error:
        raise ValueError(f"model card: {error}") from None
    user = {k: v for k, v in (("steps", steps), ("time_limit_s", time_limit_s), ("similarity", similarity))
            if v is not None}
    config = replace(config, **user)
    config.validate()
    return config


# --- the objective, per sample ---------------------------------------------------------------------------

def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def local_ncc(a: torch.Tensor, b: torch.Tensor, window: int, eps: float = 1e-8) -> torch.Tensor:
    """Squared local correlation coefficient ``cc² ∈ [0, 1]`` of ``(B, 1, *spatial)`` images, per voxel.

    Local means over a ``window``-wide cube (edges average only the voxels inside the image). It is
    blind to local gain and offset, which a per-pair min-max normalisation does not remove.
    """
    pool = F.avg_pool2d if a.dim() == 4 else F.avg_pool3d

    def mean(x: torch.Tensor) -> torch.Tensor:
        return pool(x, window, stride=1, padding=window // 2, count_include_pad=False)

    mean_a, mean_b = mean(a), mean(b)
    cov = mean(a * b) - mean_a * mean_b
    var_a = (mean(a * a) - mean_a**2).clamp_min(0.0)
    var_b = (mean(b * b) - mean_b**2).clamp_min(0.0)
    return cov**2 / (var_a * var_b + eps)


def image_term(warped: torch.Tensor, fixed: torch.Tensor, bg: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """Per-sample image term ``(B,)``: ``mean(B·r)`` (Eq. 1) or ``mean(B·(1 − cc²))``."""
    if config.similarity == "mse":
        return _per_sample_mean(bg * squared_residual(warped, fixed))
    return _per_sample_mean(bg * (1.0 - local_ncc(warped, fixed, config.ncc_window)))


def sample_smoothness(field: torch.Tensor, downsize: int) -> torch.Tensor:
    """``R(u)`` of each sample ``(B,)``; its batch mean is ``models.losses.smoothness``."""
    axes = range(2, field.dim())
    return torch.stack([_per_sample_mean(torch.diff(field, dim=a).pow(2)) for a in axes]).mean(0) * downsize


# --- the optimisation ---------------------------------------------------------------------------------------

@dataclass
class RefineResult:
    """The refined displacement ``(B, ndim, *spatial)``, the record that goes into reports, and the
    inverse displacement when the field is a velocity's exponential (``exp(−v)``, exact up to the
    integration's own error; ``None`` for a displacement-parametrised estimator, which has no
    inverse of its own)."""

    disp: torch.Tensor
    record: dict[str, Any]
    disp_inv: torch.Tensor | None = None


@dataclass
class _Parametrisation:
    """What is optimised (``start``) and how it becomes a displacement; ``downsize`` scales ``R``."""

    start: torch.Tensor
    to_disp: Callable[[torch.Tensor], torch.Tensor]
    downsize: int
    name: str

    def inverse(self, value: torch.Tensor) -> torch.Tensor | None:
        """``exp(−v)`` for a velocity; a displacement has no inverse of its own."""
        if self.name != "velocity":
            return None
        with torch.no_grad():
            return self.to_disp(-value)


def _parametrise(estimator: DisplacementEstimator, start: Deformation) -> _Parametrisation:
    """The velocity through the estimator's integrator, or the displacement when it integrates nothing.

    An architecture whose ``disp`` is not its integrator applied to ``vel`` (a design that composes
    several fields) is refined on the displacement, so that the first iterate is the network's answer.
    """
    shape = tuple(start.disp.shape[2:])
    if estimator.int_steps > 0:
        integrator = estimator.integrator
        with torch.no_grad():
            same = torch.allclose(integrator(start.vel, shape), start.disp, rtol=1e-4, atol=1e-4)
        if same:
            return _Parametrisation(start.vel.detach().clone(), lambda v: integrator(v, shape),
                                    integrator.downsize, "velocity")
    return _Parametrisation(start.disp.detach().clone(), lambda d: d, 1, "displacement")


class _Best:
    """Per-sample best-so-far: the lowest objective among fields no worse by the image term."""

    def __init__(self, disp: torch.Tensor, value: torch.Tensor, image: torch.Tensor, objective: torch.Tensor) -> None:
        self.disp = disp.detach().clone()
        self.value = value.detach().clone()  # the parameter that gave ``disp`` (velocity or displacement)
        self.image_before = image
        self.image = image.clone()
        self.objective = objective.clone()
        self.changed = torch.zeros_like(image, dtype=torch.bool)

    def offer(self, disp: torch.Tensor, value: torch.Tensor, image: torch.Tensor, objective: torch.Tensor) -> None:
        # NaN compares False: a diverged sample never replaces its best.
        better = (objective < self.objective) & (image <= self.image_before)
        if bool(better.any()):
            self.disp[better] = disp.detach()[better]
            self.value[better] = value.detach()[better]
            self.image = torch.where(better, image, self.image)
            self.objective = torch.where(better, objective, self.objective)
            self.changed |= better


def _terms(param: _Parametrisation, value: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor,
           bg: torch.Tensor, config: RefineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(disp, image term, objective)`` of one iterate, per sample."""
    disp = param.to_disp(value)
    image = image_term(warp(moving, disp), fixed, bg, config)
    return disp, image, image + config.lam * sample_smoothness(value, param.downsize)


def _optimise(param: _Parametrisation, moving: torch.Tensor, fixed: torch.Tensor, bg: torch.Tensor,
              config: RefineConfig, best: _Best, clock: float) -> tuple[int, str]:
    """Adam on ``param`` from its start, offering every iterate to ``best``; ``(steps done, stopped by)``.

    The time limit is checked before every update, so the loop overruns it by one update at most.
    A non-finite objective is never taken as best (NaN compares False), so no check is needed here.
    """
    value = param.start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([value], lr=config.lr)
    steps_done, stopped_by = config.steps, "steps"
    for step in range(config.steps):
        if time.perf_counter() - clock >= config.time_limit_s:
            steps_done, stopped_by = step, "time"
            break
        optimiser.zero_grad(set_to_none=True)
        disp, image, objective = _terms(param, value, moving, fixed, bg, config)
        if step > 0:  # the first iterate is the network's own field, already the best
            best.offer(disp, value, image.detach(), objective.detach())
        objective.sum().backward()
        optimiser.step()
    if steps_done:  # the iterate after the last update is a candidate too
        with torch.no_grad():
            disp, image, objective = _terms(param, value, moving, fixed, bg, config)
            best.offer(disp, value, image, objective)
    return steps_done, stopped_by


def refine(estimator: DisplacementEstimator, moving: torch.Tensor, fixed: torch.Tensor, start: Deformation,
           config: RefineConfig) -> RefineResult:
    """Refine the network's ``start`` for the normalised pair(s) ``moving``/``fixed`` ``(B, 1, *spatial)``.

    ``record``: ``steps_requested``, ``steps_done``, ``time_limit_s``, ``image_term_before`` and
    ``image_term_after`` (batch means of the chosen similarity), ``seconds``, ``stopped_by``
    (``"steps"`` or ``"time"``), ``improved`` (how many of the ``samples`` got a new field),
    ``similarity``, ``lr``, ``lam`` and ``parametrisation`` (``"velocity"`` or ``"displacement"``).
    """
    config.validate()
    clock = time.perf_counter()
    param = _parametrise(estimator, start)
    bg = background_mask(moving, fixed)
    with torch.no_grad():  # "never worse" is judged against the network's own field, exactly
        image0 = image_term(warp(moving, start.disp), fixed, bg, config)
        objective0 = image0 + config.lam * sample_smoothness(param.start, param.downsize)
    best = _Best(start.disp, param.start, image0, objective0)
    steps_done, stopped_by = _optimise(param, moving, fixed, bg, config, best, clock)
    improved = int(best.changed.sum())
    record = {"steps_requested": config.steps, "steps_done": steps_done, "time_limit_s": config.time_limit_s,
              "image_term_before": float(best.image_before.mean()), "image_term_after": float(best.image.mean()),
              "seconds": round(time.perf_counter() - clock, 4), "stopped_by": stopped_by,
              "improved": improved, "samples": int(moving.shape[0]), "similarity": config.similarity,
              "lr": config.lr, "lam": config.lam, "parametrisation": param.name}
    # A sample no step improved keeps the network's field bit for bit (a clone inside best.disp).
    if not improved:
        return RefineResult(start.disp, record, start.disp_inv if param.name == "velocity" else None)
    return RefineResult(best.disp, record, param.inverse(best.value))


def estimate_and_refine(estimator: DisplacementEstimator, moving: torch.Tensor, fixed: torch.Tensor,
                        config: RefineConfig, batch_size: int = 16) -> RefineResult:
    """Forward pass, then :func:`refine` of all samples as one batch (on the estimator's device)."""
    device = next(estimator.parameters()).device
    moving, fixed = moving.to(device), fixed.to(device)
    return refine(estimator, moving, fixed, predict_deformation(estimator, moving, fixed, batch_size), config)

"""Batched forward passes of a displacement estimator, shared by validation, evaluation and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from models.data.pairs import PairSample
from models.intensity import IntensityConfig, normalize_intensity
from models.networks.estimator import Deformation, DisplacementEstimator
from models.warp import warp

__all__ = ["for_inference", "eval_mode", "stack_pairs", "predict_disp", "predict_deformation", "warp_labels"]


def stack_pairs(pairs: Sequence[PairSample], intensity: IntensityConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each image with the model's function and stack to ``(N, 1, *spatial)`` moving, fixed."""
    shapes = {p.shape for p in pairs}
    if len(shapes) != 1:
        raise ValueError(f"pairs must share one grid to be batched, got shapes {sorted(shapes)}")
    moving = np.stack([normalize_intensity(p.moving, intensity) for p in pairs])[:, None]
    fixed = np.stack([normalize_intensity(p.fixed, intensity) for p in pairs])[:, None]
    return torch.from_numpy(moving), torch.from_numpy(fixed)


def for_inference(estimator: DisplacementEstimator, ndim: int) -> DisplacementEstimator:
    """A 2-D estimator's convolution weights in channels-last layout, in place (idempotent); returned.

    Why: the registration forward is 1.2–1.7× faster on CPU this way (``benchmarks/results/forward.md``;
    converting the inputs too gains nothing more), with fields equal to ~1e-5 voxel. Only where the
    network registers (``adacs register``, the worker): training keeps the layout its exact-resume
    references were made with, and 3-D (channels_last_3d) is not measured.
    """
    if ndim == 2:
        estimator.to(memory_format=torch.channels_last)
    return estimator


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``module`` as it runs at inference, then restore its mode.

    Estimators whose training forward is stochastic (DiffuseMorph noises its target) must be read
    in eval mode wherever the result stands for "what this model registers": validation, pictures,
    and the residuals the scoring network learns from.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def predict_disp(estimator: DisplacementEstimator, moving: torch.Tensor, fixed: torch.Tensor,
                 batch_size: int = 16) -> torch.Tensor:
    """``(N, 1, *spatial)`` normalised pairs -> ``disp`` ``(N, ndim, *spatial)`` in voxels, on CPU."""
    device = next(estimator.parameters()).device
    out = []
    with eval_mode(estimator):
        for start in range(0, moving.shape[0], batch_size):
            m = moving[start:start + batch_size].to(device)
            f = fixed[start:start + batch_size].to(device)
            out.append(estimator(m, f).disp.cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_deformation(estimator: DisplacementEstimator, moving: torch.Tensor, fixed: torch.Tensor,
                        batch_size: int = 16,
                        progress: Callable[[Iterable, int], Iterable] | None = None) -> Deformation:
    """``(N, 1, *spatial)`` pairs on the estimator's device -> every field of :class:`Deformation`, there.

    What test-time refinement starts from: the velocity as well as the displacement. ``progress``
    may wrap the loop over batches (the CLI's progress bar).
    """
    starts: Iterable = range(0, moving.shape[0], batch_size)
    if progress is not None:
        starts = progress(starts, len(starts))
    with eval_mode(estimator):
        outs = [estimator(moving[start:start + batch_size], fixed[start:start + batch_size]) for start in starts]
    return Deformation(*(torch.cat([getattr(out, name) for out in outs]) for name in ("vel", "disp", "disp_inv")))


def warp_labels(labels: np.ndarray, disp: torch.Tensor) -> np.ndarray:
    """Warp an integer label map ``(*spatial)`` with one ``disp`` ``(ndim, *spatial)``: nearest, same dtype.

    Nearest-neighbour sampling can only return labels that exist, so no label is ever invented.
    """
    source = torch.from_numpy(labels.astype(np.float32))[None, None]
    warped = warp(source, disp[None].to(source.dtype), mode="nearest")[0, 0]
    return warped.round().numpy().astype(labels.dtype)

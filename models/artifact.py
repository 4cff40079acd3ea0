"""The inference artifact: what a trained model is, on disk and in the registry.

A directory with
- ``config.json``: format version, the estimator's architecture config, the intensity
  normalisation and the grid the model was trained on;
- ``model.safetensors``: the displacement estimator's weights, and nothing else;
- ``card.json``: architecture, method, hyperparameters, data, validation metrics, intended use;
  optionally ``inference``, how the model registers when its user does not say: test-time
  refinement (``models.refine``) with ``refine_steps`` (int, default 0: the network's answer),
  ``refine_time_limit_s`` (default 30), and rarely ``refine_lr``, ``refine_similarity``
  (``"mse"``/``"ncc"``), ``refine_ncc_window``; the smoothness weight is the card's training
  ``hyperparameters.lam``. ``adacs register``, ``adacs evaluate`` and the worker read it alike;
  an unknown ``refine_*`` key or a bad value is an error, never silently ignored.

Loading builds the displacement estimator alone: the scoring network is a training-time device and
never appears on the inference path (SPEC, Algorithm 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from models.intensity import IntensityConfig
from models.io.atomic import atomic_write, write_json_atomic
from models.networks.estimator import DisplacementEstimator, EstimatorConfig
from models.networks.registry import build_estimator, resolve_options

__all__ = ["ARTIFACT_FORMAT", "LoadedModel", "save_artifact", "load_artifact"]

ARTIFACT_FORMAT = 1
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "card.json"


@dataclass
class LoadedModel:
    estimator: DisplacementEstimator
    config: EstimatorConfig
    intensity: IntensityConfig
    train_shape: tuple[int, ...] | None
    card: dict
    train_spacing_mm: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        return self.config.ndim


def save_artifact(directory: str | Path, estimator: DisplacementEstimator, config: EstimatorConfig,
                  intensity: IntensityConfig, card: dict, train_shape: tuple[int, ...] | None = None,
                  train_spacing_mm: tuple[float, ...] | None = None) -> Path:
    """Write the three files into ``directory`` (created; existing files are replaced atomically).

    ``train_shape`` and ``train_spacing_mm`` (array axis order; None when the data had no spacing)
    describe the crops the model was trained on, so inference can show it the same field of view.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in estimator.state_dict().items()}
    with atomic_write(directory / WEIGHTS) as handle:
        handle.write(save(state, metadata={"format": str(ARTIFACT_FORMAT), "arch": config.arch}))
    write_json_atomic(directory / CONFIG, {
        "format": ARTIFACT_FORMAT,
        # Every option spelled out: the artifact rebuilds the same network if a default changes later.
        "estimator": resolve_options(config).to_dict(),
        "intensity": intensity.to_dict(),
        "train_shape": list(train_shape) if train_shape else None,
        "train_spacing_mm": list(train_spacing_mm) if train_spacing_mm else None,
    })
    write_json_atomic(directory / CARD, card)
    return directory


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the displacement estimator from ``config.json`` and load its weights (strictly)."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a model artifact: {name} is missing")
    meta = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{directory}: artifact format {meta.get('format')!r}, expected {ARTIFACT_FORMAT}")
    config = EstimatorConfig.from_dict(meta["estimator"])
    estimator = build_estimator(config)
    estimator.load_state_dict(load_file(directory / WEIGHTS, device="cpu"), strict=True)
    estimator.to(device).eval()
    card_path = directory / CARD
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    shape = tuple(meta["train_shape"]) if meta.get("train_shape") else None
    spacing = tuple(meta["train_spacing_mm"]) if meta.get("train_spacing_mm") else None
    return LoadedModel(estimator, config, IntensityConfig(**meta["intensity"]), shape, card, spacing)

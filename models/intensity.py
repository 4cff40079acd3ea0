"""Intensity normalisation: a property of a model, recorded in its ``config.json``.

One function is used in training and at inference, so a model never sees intensities on a scale it
was not trained on. The SPEC default is per-crop min-max after clipping at the 0.5 and 99.5
percentiles: κ (the AdaCS momentum scale) was tuned on min-max crops, and the clipping keeps one
bright outlier voxel (common in real DICOM) from squashing the rest of the image towards 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["IntensityConfig", "normalize_intensity"]


@dataclass(frozen=True)
class IntensityConfig:
    method: str = "percentile-minmax"
    low_percentile: float = 0.5
    high_percentile: float = 99.5

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_intensity(image: np.ndarray, config: IntensityConfig = IntensityConfig()) -> np.ndarray:
    """Map ``image`` (any shape) to float32 in [0, 1]; a constant image maps to all zeros."""
    if config.method != "percentile-minmax":
        raise ValueError(f"unknown intensity normalisation {config.method!r}; known: 'percentile-minmax'")
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, [config.low_percentile, config.high_percentile])
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("image contains NaN or Inf values")
    if high <= low:
        return np.zeros_like(image)
    return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)

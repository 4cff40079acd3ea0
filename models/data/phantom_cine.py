"""A synthetic short-axis cine with a known volume curve: the test bed of whole-cine tracking.

Each slice is one 2-D phantom heart (:mod:`models.data.synthetic`, a different anatomy per slice, as
from base to apex); frame ``t`` of every slice is that heart contracted by
``motion · (1 − cos(2πt/T)) / 2``, so frame 0 is end-diastole, the middle frame end-systole, and the
cycle closes. The phantom renders each frame's labels exactly, so the true volume of every label in
every frame, and the true ejection fraction, are known without any registration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.data.synthetic import BLOOD_POOL, SPACING_MM, PhantomConfig, make_phantom_pair

__all__ = ["PhantomCine", "make_phantom_cine", "contraction"]


@dataclass
class PhantomCine:
    """``images`` ``(T, Z, Y, X)`` float32 in [0, 1], ``masks`` ``(T, Z, Y, X)`` uint8 (1 blood pool,
    2 myocardium), ``spacing_mm`` in array order ``(z, y, x)``."""

    images: np.ndarray
    masks: np.ndarray
    spacing_mm: tuple[float, float, float]

    def volumes_ml(self, label: int = BLOOD_POOL) -> np.ndarray:
        """The true volume of ``label`` in every frame (mL)."""
        voxel = float(np.prod(self.spacing_mm))
        return np.count_nonzero(self.masks == label, axis=(1, 2, 3)) * voxel / 1000.0

    def ejection_fraction(self) -> float:
        """``100 · (EDV − ESV) / EDV`` of the blood pool, from the rendered masks."""
        volumes = self.volumes_ml()
        return float(100.0 * (volumes.max() - volumes.min()) / volumes.max())


def contraction(frames: int) -> np.ndarray:
    """The motion scale of each frame: 0 at ED (frame 0), 1 at ES (frame ``frames // 2``)."""
    t = np.arange(frames)
    return (1.0 - np.cos(2.0 * np.pi * t / frames)) / 2.0


def make_phantom_cine(frames: int = 8, slices: int = 3, size: int = 64, seed: int = 0, motion: float = 1.0,
                      slice_mm: float = 8.0, noise: float = 0.0) -> PhantomCine:
    """A ``frames``-frame cine of ``slices`` short-axis slices of ``size``² voxels (1.5 mm, ``slice_mm`` apart)."""
    if frames < 2 or slices < 1:
        raise ValueError(f"need at least 2 frames and 1 slice, got {frames} and {slices}")
    base = PhantomConfig(dims=2, size=size, seed=seed, noise=noise)
    images = np.zeros((frames, slices, size, size), np.float32)
    masks = np.zeros((frames, slices, size, size), np.uint8)
    for t, scale in enumerate(contraction(frames)):
        config = replace(base, motion=motion * float(scale))
        for z in range(slices):
            pair = make_phantom_pair(config, z)
            images[t, z], masks[t, z] = pair.fixed, pair.fixed_mask
    return PhantomCine(images, masks, (slice_mm, SPACING_MM, SPACING_MM))

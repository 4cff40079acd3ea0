"""Physical-space operations on :class:`models.io.image.Image`: resampling onto another grid.

Resampling goes through physical (LPS) space with SimpleITK, so grids that differ in size, spacing,
origin or orientation line up where the anatomy is. Label images are resampled nearest-neighbour
and keep their dtype, so a mask never gains a label it did not have.
"""

from __future__ import annotations

import SimpleITK as sitk

from models.io.image import LABEL, Image

__all__ = ["resample_to"]


def resample_to(image: Image, reference: Image, default: float = 0.0) -> Image:
    """``image`` sampled on ``reference``'s grid (identity transform in physical space)."""
    if image.ndim != reference.ndim:
        raise ValueError(f"{image.source} is {image.ndim}-D but {reference.source} is {reference.ndim}-D")
    if image.same_grid(reference):
        return image
    interpolator = sitk.sitkNearestNeighbor if image.kind == LABEL else sitk.sitkLinear
    source = image.to_sitk()
    out = sitk.Resample(source, reference.to_sitk(), sitk.Transform(), interpolator, default,
                        source.GetPixelID())
    return Image(sitk.GetArrayFromImage(out), reference.geometry, image.kind, image.source, dict(image.metadata))

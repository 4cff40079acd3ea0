"""Physical-space operations on :class:`models.io.image.Image`: resampling onto another grid.

Resampling goes through physical (LPS) space with SimpleITK, so grids that differ in size, spacing,
origin or orientation line up where the anatomy is. Label images are resampled nearest-neighbour
and keep their dtype, so a mask never gains a label it did not have.
"""

from __future__ import annotations

import SimpleITK as sitk

from models.io.image import LABEL, Image

__all__ = ["resample_to", "warp_physical"]


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


def warp_physical(image: Image, field_mm: sitk.Image, reference: Image, default: float = 0.0) -> Image:
    """Sample ``image`` at ``p + u(p)`` for every point ``p`` of ``reference``'s grid.

    ``field_mm`` is an ITK displacement field (physical mm, LPS) on the reference grid. This is the
    very operation ITK, ANTs and 3D Slicer perform with our displacement file, done by ITK itself,
    so our warped outputs and theirs agree; the moving image is read on its own grid, never
    resampled twice. Labels are sampled nearest-neighbour and keep their dtype.
    """
    # DisplacementFieldTransform takes its field over (the image passed in is emptied): give it a copy.
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field_mm, sitk.sitkVectorFloat64))
    interpolator = sitk.sitkNearestNeighbor if image.kind == LABEL else sitk.sitkLinear
    source = image.to_sitk()
    if image.kind != LABEL:  # interpolated intensities need a float type (an int16 scan would round)
        source = sitk.Cast(source, sitk.sitkFloat32)
    out = sitk.Resample(source, reference.to_sitk(), transform, interpolator, default, source.GetPixelID())
    return Image(sitk.GetArrayFromImage(out), reference.geometry, image.kind, image.source, dict(image.metadata))

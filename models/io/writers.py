"""Write images and displacement fields that ITK, ANTs, 3D Slicer and nibabel read as intended.

Reading lives in ``models.io.readers``. Arrays are in reversed (NumPy) axis order ``(z, y, x)``
for an image indexed ``(x, y, z)`` by ITK; helpers here say which order they use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["write_image", "displacement_image", "displacement_voxels"]


def write_image(image: sitk.Image, path: str | Path) -> None:
    """Write ``image`` gzip-compressed (the format follows the suffix); ITK's writer releases the GIL,
    so several files can be written from threads at once (``models.outputs``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def displacement_image(disp_vox: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A voxel displacement on ``reference``'s grid -> ITK displacement field in physical mm.

    ``disp_vox`` is ``(ndim, *array_shape)`` with channel ``k`` along array axis ``k`` (reversed
    ITK index order, as ``models.warp`` uses). ITK wants, per voxel, the physical vector
    ``D · diag(spacing) · u_index`` with ``u_index`` in ITK index order (x, y[, z]), so the
    channels are reversed first. The result maps fixed point ``p`` to moving point ``p + u(p)``:
    ITK's DisplacementFieldTransform convention. The vectors are float32, as ANTs writes its
    fields: float64 doubled the files (a 64³ field: 5.9 → 2.8 MB gzipped) and the time to compress
    them, for digits below a micrometre; everything downstream (warps, Jacobian, inverse) reads this
    image, so what is written is what was used.
    """
    ndim = reference.GetDimension()
    if disp_vox.shape != (ndim, *_array_shape(reference)):
        raise ValueError(f"displacement {disp_vox.shape} does not match a {ndim}-D reference of array shape "
                         f"{_array_shape(reference)}")
    u_index = disp_vox[::-1].reshape(ndim, -1).astype(np.float64)  # channels now in ITK (x, y, z) order
    direction = np.asarray(reference.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    spacing = np.asarray(reference.GetSpacing(), dtype=np.float64)
    u_mm = direction @ (spacing[:, None] * u_index)
    vectors = np.moveaxis(u_mm.reshape(ndim, *disp_vox.shape[1:]), 0, -1).astype(np.float32)
    field = sitk.GetImageFromArray(vectors, isVector=True)
    field.CopyInformation(reference)
    return field


def displacement_voxels(field_mm: sitk.Image) -> np.ndarray:
    """The inverse of :func:`displacement_image`: an ITK displacement field in mm -> ``(ndim, *array_shape)``
    voxels along the array axes (what a registration's ``disp_vox`` holds), for files read back."""
    ndim = field_mm.GetDimension()
    vectors = sitk.GetArrayFromImage(field_mm).astype(np.float64)  # (*array_shape, ndim), ITK (x, y, z) order
    direction = np.asarray(field_mm.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    spacing = np.asarray(field_mm.GetSpacing(), dtype=np.float64)
    u_index = np.linalg.solve(direction, vectors.reshape(-1, ndim).T) / spacing[:, None]
    return u_index[::-1].reshape(ndim, *vectors.shape[:-1]).astype(np.float32)


def _array_shape(image: sitk.Image) -> tuple[int, ...]:
    return tuple(reversed(image.GetSize()))

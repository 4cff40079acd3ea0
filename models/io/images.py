"""Read and write medical images with their physical geometry.

SimpleITK reads NIfTI, MetaImage and NRRD into images that carry spacing, origin and direction in
ITK's LPS physical space. Arrays from ``sitk.GetArrayFromImage`` are in reversed axis order
(``(z, y, x)`` for an image indexed ``(x, y, z)``); helpers here say which order they use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["ImageReadError", "read_image", "write_image", "to_array", "displacement_image"]


class ImageReadError(ValueError):
    """An input file could not be read as an image; the message names the file and the reason."""


def read_image(path: str | Path) -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise ImageReadError(f"{path}: not a readable image ({reason})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} "
                             "components per voxel")
    return image


def write_image(image: sitk.Image, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def to_array(image: sitk.Image) -> np.ndarray:
    """Voxel array in reversed axis order (``(z, y, x)`` or ``(y, x)``), a copy."""
    return sitk.GetArrayFromImage(image)


def displacement_image(disp_vox: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A voxel displacement on ``reference``'s grid -> ITK displacement field in physical mm.

    ``disp_vox`` is ``(ndim, *array_shape)`` with channel ``k`` along array axis ``k`` (reversed
    ITK index order, as ``models.warp`` uses). ITK wants, per voxel, the physical vector
    ``D · diag(spacing) · u_index`` with ``u_index`` in ITK index order (x, y[, z]), so the
    channels are reversed first. The result maps fixed point ``p`` to moving point ``p + u(p)``:
    ITK's DisplacementFieldTransform convention.
    """
    ndim = reference.GetDimension()
    if disp_vox.shape != (ndim, *to_array_shape(reference)):
        raise ValueError(f"displacement {disp_vox.shape} does not match a {ndim}-D reference of array shape "
                         f"{to_array_shape(reference)}")
    u_index = disp_vox[::-1].reshape(ndim, -1).astype(np.float64)  # channels now in ITK (x, y, z) order
    direction = np.asarray(reference.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    spacing = np.asarray(reference.GetSpacing(), dtype=np.float64)
    u_mm = direction @ (spacing[:, None] * u_index)
    vectors = np.moveaxis(u_mm.reshape(ndim, *disp_vox.shape[1:]), 0, -1)
    field = sitk.GetImageFromArray(vectors, isVector=True)
    field.CopyInformation(reference)
    return field


def to_array_shape(image: sitk.Image) -> tuple[int, ...]:
    return tuple(reversed(image.GetSize()))

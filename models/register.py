"""Register one image pair with a trained model and return outputs on the fixed image's grid.

The pair is first brought onto the fixed grid (the moving image resampled through physical space
when its grid differs), the model predicts a voxel displacement there, and the displacement is
written in physical millimetres in ITK's convention (``models.io.images.displacement_image``).
A 2D model applied to a 3D image registers it slice by slice along the first array axis, in batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from models.artifact import LoadedModel
from models.intensity import normalize_intensity
from models.io.images import to_array
from models.metrics import dice, folding_percent
from models.warp import warp

__all__ = ["RegistrationResult", "register_images", "same_grid"]


@dataclass
class RegistrationResult:
    """Arrays in reversed ITK axis order on the fixed grid; ``disp_vox`` is ``(ndim, *shape)``."""

    disp_vox: np.ndarray
    warped: np.ndarray
    warped_mask: np.ndarray | None
    report: dict = field(default_factory=dict)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def _on_grid(image: sitk.Image | None, reference: sitk.Image, labels: bool) -> sitk.Image | None:
    """Resample ``image`` onto ``reference`` through physical space (identity transform)."""
    if image is None or same_grid(image, reference):
        return image
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def _predict(model: LoadedModel, fixed: np.ndarray, moving: np.ndarray, batch_size: int) -> np.ndarray:
    """Voxel displacement ``(fixed.ndim, *fixed.shape)``; slice-wise for a 2D model on a 3D image."""
    if model.ndim == fixed.ndim:
        fixed_b, moving_b = fixed[None], moving[None]
    elif model.ndim == 2 and fixed.ndim == 3:
        fixed_b, moving_b = fixed, moving
    else:
        raise ValueError(f"a {model.ndim}-D model cannot register {fixed.ndim}-D images")
    levels = len(model.config.enc)
    if min(fixed_b.shape[1:]) < 2**levels:
        raise ValueError(f"image grid {fixed_b.shape[1:]} is too small for this model: every in-plane side must "
                         f"be at least {2**levels} voxels")
    norm = model.intensity
    f = torch.from_numpy(np.stack([normalize_intensity(x, norm) for x in fixed_b]))[:, None]
    m = torch.from_numpy(np.stack([normalize_intensity(x, norm) for x in moving_b]))[:, None]
    device = next(model.estimator.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in range(0, f.shape[0], batch_size):
            out = model.estimator(m[start:start + batch_size].to(device), f[start:start + batch_size].to(device))
            chunks.append(out.disp.cpu())
    disp = torch.cat(chunks).numpy()  # (N, model.ndim, *plane)
    if model.ndim == fixed.ndim:
        return disp[0]
    # Slice-wise: no displacement across slices (channel 0 = the slice axis), slices stacked back.
    return np.concatenate([np.zeros_like(disp[:, :1]), disp], axis=1).transpose(1, 0, 2, 3)


def _warp_array(array: np.ndarray, disp_vox: np.ndarray, mode: str) -> np.ndarray:
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    out = warp(source, torch.from_numpy(np.ascontiguousarray(disp_vox, dtype=np.float32))[None], mode=mode)
    return out[0, 0].numpy()


def register_images(model: LoadedModel, fixed: sitk.Image, moving: sitk.Image,
                    moving_mask: sitk.Image | None = None, fixed_mask: sitk.Image | None = None,
                    batch_size: int = 16) -> RegistrationResult:
    """Predict the field, warp the moving image (linear) and mask (nearest, labels kept)."""
    if fixed.GetDimension() != moving.GetDimension():
        raise ValueError(f"fixed is {fixed.GetDimension()}-D but moving is {moving.GetDimension()}-D")
    start = time.perf_counter()
    moving = _on_grid(moving, fixed, labels=False)
    moving_mask = _on_grid(moving_mask, fixed, labels=True)
    fixed_mask = _on_grid(fixed_mask, fixed, labels=True)
    fixed_arr = to_array(fixed).astype(np.float32)
    moving_arr = to_array(moving).astype(np.float32)
    t_predict = time.perf_counter()
    disp = _predict(model, fixed_arr, moving_arr, batch_size)
    predict_s = time.perf_counter() - t_predict
    warped = _warp_array(moving_arr, disp, "linear")
    warped_mask = None
    report: dict = {"predict_s": round(predict_s, 4), "grid": list(fixed_arr.shape),
                    "folding_pct": _folding(disp, model.ndim)}
    if moving_mask is not None:
        labels = to_array(moving_mask)
        warped_mask = np.rint(_warp_array(labels, disp, "nearest")).astype(labels.dtype)
        if fixed_mask is not None:
            target = to_array(fixed_mask)
            present = [lab for lab in np.union1d(np.unique(labels), np.unique(target)) if lab != 0]
            report["dice"] = {str(int(lab)): dice(warped_mask == lab, target == lab) for lab in present}
            # The same score without registration: what the field has gained.
            report["dice_before"] = {str(int(lab)): dice(labels == lab, target == lab) for lab in present}
    report["total_s"] = round(time.perf_counter() - start, 4)
    return RegistrationResult(disp_vox=disp, warped=warped, warped_mask=warped_mask, report=report)


def _folding(disp: np.ndarray, model_ndim: int) -> float:
    if model_ndim == disp.shape[0]:
        return folding_percent(disp)
    return float(np.mean([folding_percent(disp[1:, z]) for z in range(disp.shape[1])]))

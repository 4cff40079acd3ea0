"""Register one image pair with a trained model; every output lives on the fixed image's grid.

1. The moving image and mask are resampled onto the fixed grid through physical space (they may
   differ in size, spacing and orientation); a 2D model applied to a 3D image works slice by slice.
2. ``models.model_grid`` cuts the model's window around the moving mask's centroid (else the
   image centre), resizes it to the model's input and normalises intensities with the model's own
   function; the estimator predicts; the field goes back to native voxels.
3. Optionally, "estimate, then refine" (``models.refine``): a few Adam steps on this pair's own
   objective, in the model's normalised intensities on the model grid, with every slice of a 2D
   stack in one batch; never worse by the image term than the network's field.
4. The field is expressed in millimetres in ITK's convention, and the moving image (linear) and
   mask (nearest, labels and dtype kept) are warped *through that field* on their own grids, by
   ITK: exactly what any ITK-based tool does with our displacement file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from models.artifact import LoadedModel
from models.data.crop import mask_centroid
from models.geometry import resample_to, warp_physical
from models.inference import predict_deformation
from models.intensity import normalize_intensity
from models.io.image import Image
from models.io.writers import displacement_image
from models.metrics import dice, folding_percent
from models.model_grid import field_to_native, plan_model_grid, to_model_grid
from models.refine import RefineConfig, refine, refine_config

__all__ = ["RegistrationResult", "register_images"]


@dataclass
class RegistrationResult:
    """Outputs on the fixed grid: the field in voxels ``(ndim, *shape)`` (NumPy axis order) and in
    millimetres (an ITK displacement field image), the warped image and the warped mask."""

    disp_vox: np.ndarray
    field_mm: sitk.Image
    warped: Image
    warped_mask: Image | None
    report: dict = field(default_factory=dict)


def _center(moving_mask: np.ndarray | None, slicewise: bool) -> tuple[float, ...] | None:
    """Centroid of the moving mask's foreground (in-plane only when registering slice by slice)."""
    if moving_mask is None or not np.any(moving_mask):
        return None
    centroid = mask_centroid((moving_mask != 0).astype(np.uint8), 1)
    return centroid[1:] if slicewise else centroid


Progress = Callable[[Iterable, int], Iterable]


def _predict(model: LoadedModel, fixed: np.ndarray, moving: np.ndarray, spacing_mm: tuple[float, ...],
             center: tuple[float, ...] | None, batch_size: int, refine_with: RefineConfig,
             progress: Progress | None = None) -> tuple[np.ndarray, dict]:
    """Voxel displacement ``(fixed.ndim, *fixed.shape)`` on the native grid, and the refinement record.

    Refinement sees every slice of a 2D stack at once (one time limit for the whole registration);
    with 0 steps it returns the network's field itself and only records its image term.
    """
    slicewise = model.ndim == 2 and fixed.ndim == 3
    if model.ndim != fixed.ndim and not slicewise:
        raise ValueError(f"a {model.ndim}-D model cannot register {fixed.ndim}-D images")
    planes_f, planes_m = (fixed, moving) if slicewise else (fixed[None], moving[None])
    plane_spacing = spacing_mm[1:] if slicewise else spacing_mm
    grid = plan_model_grid(planes_f.shape[1:], plane_spacing, model.train_shape, model.train_spacing_mm, center)
    levels = len(model.config.enc)
    if min(grid.model_shape) < 2**levels:
        raise ValueError(f"grid {grid.model_shape} is too small for this model: every side must be at least "
                         f"{2**levels} voxels")
    norm = lambda t: torch.stack([torch.from_numpy(normalize_intensity(x.numpy(), model.intensity))  # noqa: E731
                                  for x in t])
    device = next(model.estimator.parameters()).device
    f_model = norm(to_model_grid(planes_f, grid)).to(device)
    m_model = norm(to_model_grid(planes_m, grid)).to(device)
    network = predict_deformation(model.estimator, m_model, f_model, batch_size, progress)
    refined = refine(model.estimator, m_model, f_model, network, refine_with)
    disp = field_to_native(refined.disp.cpu(), grid, planes_f.shape[1:])  # (N, model.ndim, *plane)
    if not slicewise:
        return disp[0], refined.record
    # Slice-wise: no displacement across slices (channel 0 = the slice axis); slices stacked back.
    return np.concatenate([np.zeros_like(disp[:, :1]), disp], axis=1).transpose(1, 0, 2, 3), refined.record


def register_images(model: LoadedModel, fixed: Image, moving: Image, moving_mask: Image | None = None,
                    fixed_mask: Image | None = None, batch_size: int = 16,
                    progress: Progress | None = None, refine_with: RefineConfig | None = None) -> RegistrationResult:
    """Predict the field, optionally refine it, warp the moving image (linear) and mask (nearest, labels kept).

    ``progress(iterable, total)`` may wrap the loop over prediction batches (slices of a 3D stack
    registered by a 2D model); the CLI passes a progress bar. ``refine_with=None`` refines as the
    model card says (``models.refine.refine_config``: 0 steps for a card without the key), so every
    caller registers alike; the report's ``refine`` records what refinement did.
    """
    if fixed.ndim != moving.ndim:
        raise ValueError(f"fixed is {fixed.ndim}-D but moving is {moving.ndim}-D")
    start = time.perf_counter()
    on_fixed = resample_to(moving, fixed)  # the network's input only; outputs sample `moving` itself
    mask_on_fixed = resample_to(moving_mask, fixed) if moving_mask is not None else None
    fixed_arr, moving_arr = fixed.array.astype(np.float32), on_fixed.array.astype(np.float32)
    spacing = tuple(reversed(fixed.geometry.spacing))  # ITK (x, y, z) -> array order (z, y, x)
    slicewise = model.ndim == 2 and fixed.ndim == 3
    center = _center(mask_on_fixed.array if mask_on_fixed is not None else None, slicewise)
    refine_with = refine_config(model.card) if refine_with is None else refine_with
    t_predict = time.perf_counter()
    disp, refine_record = _predict(model, fixed_arr, moving_arr, spacing, center, batch_size, refine_with, progress)
    predict_s = time.perf_counter() - t_predict
    field_mm = displacement_image(disp, fixed.to_sitk())
    warped = warp_physical(moving, field_mm, fixed)
    # predict_s is the forward pass and the refinement; refine["seconds"] is the latter alone.
    report: dict = {"predict_s": round(predict_s, 4), "grid": list(fixed_arr.shape),
                    "folding_pct": _folding(disp, slicewise), "refine": refine_record}
    warped_mask = None
    if moving_mask is not None:
        warped_mask = warp_physical(moving_mask, field_mm, fixed)
        if fixed_mask is not None:
            labels, target, out = mask_on_fixed.array, resample_to(fixed_mask, fixed).array, warped_mask.array
            present = [lab for lab in np.union1d(np.unique(labels), np.unique(target)) if lab != 0]
            report["dice"] = {str(int(lab)): dice(out == lab, target == lab) for lab in present}
            # The same score without registration: what the field has gained.
            report["dice_before"] = {str(int(lab)): dice(labels == lab, target == lab) for lab in present}
    report["total_s"] = round(time.perf_counter() - start, 4)
    return RegistrationResult(disp, field_mm, warped, warped_mask, report)


def _folding(disp: np.ndarray, slicewise: bool) -> float:
    if not slicewise:
        return folding_percent(disp)
    return float(np.mean([folding_percent(disp[1:, z]) for z in range(disp.shape[1])]))

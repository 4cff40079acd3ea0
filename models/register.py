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

:func:`register_images` does this on images in memory; :func:`register_files` is the whole
pipeline from files to files (read and check, register, write the outputs and ``report.json``),
the one that ``adacs register`` and the service's worker both call, so that the two cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from models.artifact import LoadedModel
from models.data.crop import mask_centroid
from models.field_maps import invert_field, jacobian_image, jacobian_summary
from models.inference import for_inference, predict_deformation
from models.intensity import normalize_intensity
from models.io.atomic import write_json_atomic
from models.io.image import Image
from models.io.readers.header import DEFAULT_MAX_VOXELS
from models.io.readers.inputs import read_registration_inputs
from models.io.writers import displacement_image
from models.metrics import dice
from models.model_grid import field_to_native, plan_model_grid, to_model_grid
from models.networks.estimator import Deformation, DisplacementEstimator
from models.outputs import DISPLACEMENT_UNITS, REPORT, write_registration_outputs, write_warped_mask_seg
from models.refine import RefineConfig, refine, refine_config
from models.report import grid_section, label_section
from models.report import label_names as label_names_of
from models.resample import resample_to, warp_physical

__all__ = ["RegistrationResult", "RegisteredFiles", "Forward", "PHASES", "mask_center", "predict_native",
           "register_images", "register_files"]

PHASES = ("loading_model", "reading_inputs", "registering", "writing_outputs")
"""The steps of :func:`register_files`, in order, as its ``on_phase`` hook announces them."""


@dataclass
class RegistrationResult:
    """Outputs on the fixed grid: the field in voxels ``(ndim, *shape)`` (NumPy axis order) and in
    millimetres (an ITK displacement field image), its Jacobian determinant map, the warped image and
    the warped mask; and on the moving grid, the inverse field (``models.field_maps``)."""

    disp_vox: np.ndarray
    field_mm: sitk.Image
    warped: Image
    warped_mask: Image | None
    jacobian: sitk.Image
    inverse_mm: sitk.Image
    report: dict = field(default_factory=dict)


def mask_center(moving_mask: np.ndarray | None, slicewise: bool) -> tuple[float, ...] | None:
    """Centroid of the moving mask's foreground (in-plane only when registering slice by slice)."""
    if moving_mask is None or not np.any(moving_mask):
        return None
    centroid = mask_centroid((moving_mask != 0).astype(np.uint8), 1)
    return centroid[1:] if slicewise else centroid


Progress = Callable[[Iterable, int], Iterable]
#: How the network's forward is run: :func:`models.inference.predict_deformation`'s signature. The
#: worker passes its batcher (``worker.batching``), which runs concurrent registrations' forwards as one.
Forward = Callable[[DisplacementEstimator, torch.Tensor, torch.Tensor, int, "Progress | None"], Deformation]


def predict_native(model: LoadedModel, fixed: np.ndarray, moving: np.ndarray, spacing_mm: tuple[float, ...],
                   center: tuple[float, ...] | None, batch_size: int, refine_with: RefineConfig,
                   progress: Progress | None = None,
                   forward: Forward = predict_deformation) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Voxel displacement ``(fixed.ndim, *fixed.shape)`` on the native grid, its inverse there when the
    estimator integrates a velocity (``exp(−v)``: a point ``q`` maps to ``q + w(q)``; else None), and
    the refinement record.

    ``fixed`` and ``moving`` are arrays on one grid (the moving image already resampled onto it); a
    2D model registers a 3D array slice by slice, which is how a cine's frames are batched too
    (``models.cine`` stacks them along the slice axis). Refinement sees every slice of a 2D stack at
    once (one time limit for the whole registration); with 0 steps it returns the network's field
    itself and only records its image term.
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
    network = forward(model.estimator, m_model, f_model, batch_size, progress)
    refined = refine(model.estimator, m_model, f_model, network, refine_with)
    fields = [field_to_native(d.cpu(), grid, planes_f.shape[1:])  # (N, model.ndim, *plane)
              for d in (refined.disp, refined.disp_inv) if d is not None]
    if not slicewise:
        fields = [f[0] for f in fields]
    else:  # no displacement across slices (channel 0 = the slice axis); slices stacked back
        fields = [np.concatenate([np.zeros_like(f[:, :1]), f], axis=1).transpose(1, 0, 2, 3) for f in fields]
    return fields[0], fields[1] if len(fields) > 1 else None, refined.record


def register_images(model: LoadedModel, fixed: Image, moving: Image, moving_mask: Image | None = None,
                    fixed_mask: Image | None = None, batch_size: int = 16,
                    progress: Progress | None = None, refine_with: RefineConfig | None = None,
                    label_names: Mapping[str, str] | None = None,
                    forward: Forward = predict_deformation) -> RegistrationResult:
    """Predict the field, optionally refine it, warp the moving image (linear) and mask (nearest, labels kept).

    ``progress(iterable, total)`` may wrap the loop over prediction batches (slices of a 3D stack
    registered by a 2D model); the CLI passes a progress bar. ``refine_with=None`` refines as the
    model card says (``models.refine.refine_config``: 0 steps for a card without the key), so every
    caller registers alike; the report's ``refine`` records what refinement did. ``label_names``
    (``{"2": "myocardium"}``) name the labels in the report (``models.report``); ``forward`` runs the
    network (:data:`Forward`).
    """
    if fixed.ndim != moving.ndim:
        raise ValueError(f"fixed is {fixed.ndim}-D but moving is {moving.ndim}-D")
    start = time.perf_counter()
    on_fixed = resample_to(moving, fixed)  # the network's input only; outputs sample `moving` itself
    mask_on_fixed = resample_to(moving_mask, fixed) if moving_mask is not None else None
    fixed_arr, moving_arr = fixed.array.astype(np.float32), on_fixed.array.astype(np.float32)
    spacing = tuple(reversed(fixed.geometry.spacing))  # ITK (x, y, z) -> array order (z, y, x)
    slicewise = model.ndim == 2 and fixed.ndim == 3
    center = mask_center(mask_on_fixed.array if mask_on_fixed is not None else None, slicewise)
    refine_with = refine_config(model.card) if refine_with is None else refine_with
    t_predict = time.perf_counter()
    disp, disp_inv, refine_record = predict_native(model, fixed_arr, moving_arr, spacing, center, batch_size,
                                                   refine_with, progress, forward)
    predict_s = time.perf_counter() - t_predict
    field_mm = displacement_image(disp, fixed.to_sitk())
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The inverse is the largest step after the forward (a 64³ field: about a third of a CPU
        # forward); ITK's resampling and NumPy's array loops release the GIL, so it runs beside them.
        inverse_job = pool.submit(invert_field, field_mm, moving.to_sitk(),
                                  displacement_image(disp_inv, fixed.to_sitk()) if disp_inv is not None else None)
        warped = warp_physical(moving, field_mm, fixed)
        jacobian = jacobian_image(field_mm)
        regularity = jacobian_summary(sitk.GetArrayViewFromImage(jacobian))
        warped_mask = warp_physical(moving_mask, field_mm, fixed) if moving_mask is not None else None
        labels: dict = {}
        if warped_mask is not None:
            fixed_labels = resample_to(fixed_mask, fixed).array if fixed_mask is not None else None
            labels = _mask_report(warped_mask, mask_on_fixed.array, fixed_labels, label_names, model.card)
        inverse = inverse_job.result()
    # predict_s is the forward pass and the refinement; refine["seconds"] is the latter alone.
    report: dict = {"predict_s": round(predict_s, 4), "grid": grid_section(fixed),
                    "folding_pct": regularity["folding_pct"], "jacobian": regularity, "inverse": inverse.report(),
                    "refine": refine_record} | labels
    report["total_s"] = round(time.perf_counter() - start, 4)
    return RegistrationResult(disp, field_mm, warped, warped_mask, jacobian, inverse.field, report)


def _mask_report(warped_mask: Image, moving_labels: np.ndarray, fixed_labels: np.ndarray | None,
                 label_names: Mapping[str, str] | None, card: Mapping[str, Any]) -> dict:
    """``labels`` (names, volumes, scores: ``models.report``) and, with a fixed mask, the quick view
    ``dice`` / ``dice_before`` (%, by label value): what the field gained over no registration."""
    seen = [moving_labels] if fixed_labels is None else [moving_labels, fixed_labels]
    present = sorted(int(k) for k in np.unique(np.concatenate([np.unique(a) for a in seen])) if k != 0)
    report: dict = {"labels": label_section(warped_mask, moving_labels, fixed_labels,
                                            label_names_of(present, label_names, card))}
    if fixed_labels is not None:
        report["dice"] = {str(k): dice(warped_mask.array == k, fixed_labels == k) for k in present}
        report["dice_before"] = {str(k): dice(moving_labels == k, fixed_labels == k) for k in present}
    return report


@dataclass
class RegisteredFiles:
    """What :func:`register_files` made: the registration, the images it read by role (absent masks
    None), the files it wrote by role (``report`` included) and the report."""

    result: RegistrationResult
    images: dict[str, Image | None]
    paths: dict[str, Path]
    report: dict[str, Any]


def _no_phase(phase: str) -> None:
    """The default ``on_phase``: nobody is told."""


def register_files(load_model: Callable[[], LoadedModel], inputs: Mapping[str, Path], out_dir: str | Path, *,
                   model_fields: Mapping[str, Any], series: Mapping[str, str | None] | None = None,
                   frames: Mapping[str, int | None] | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
                   refine_steps: int | None = None, refine_time_limit_s: float | None = None,
                   on_phase: Callable[[str], None] = _no_phase, progress: Progress | None = None,
                   label_names: Mapping[str, str] | None = None,
                   forward: Forward = predict_deformation) -> RegisteredFiles:
    """Load the model, read and check ``inputs``, register, write the outputs and ``report.json`` into ``out_dir``.

    ``inputs`` maps ``fixed``, ``moving`` and optionally ``moving_mask``/``fixed_mask`` to files;
    ``series``/``frames`` pick a DICOM series or a 4-D image's frame per role, as
    :func:`~models.io.readers.inputs.read_registration_inputs` does. ``load_model`` is called inside
    the ``loading_model`` phase (the CLI reads a folder, the worker asks its cache);
    ``model_fields`` is how the report names the model (the CLI: its folder; the worker: its registry
    reference and sha256). The refinement flags left None take the model card's defaults.
    ``on_phase`` is told each of :data:`PHASES` as it starts (the worker's progress and timings);
    ``progress`` wraps the prediction batches (the CLI's bar); ``label_names`` name the labels in the
    report; ``forward`` runs the network (:data:`Forward`: the worker's batcher). A DICOM fixed image
    with a moving mask adds ``warped_mask_seg`` (a DICOM SEG named by
    ``model_fields["model"]``; ``models.outputs.write_warped_mask_seg``) and the report's ``dicom_seg``.
    Nothing is written unless every input reads and checks; raises ``ImageError`` (bad input) or
    ``ValueError`` (a model that cannot register these images).
    """
    start = time.perf_counter()
    on_phase("loading_model")
    model = load_model()
    for_inference(model.estimator, model.ndim)
    load_s = time.perf_counter() - start
    on_phase("reading_inputs")
    images = read_registration_inputs(inputs, series=series, frames=frames, max_voxels=max_voxels)
    on_phase("registering")
    refine_with = refine_config(model.card, steps=refine_steps, time_limit_s=refine_time_limit_s)
    result = register_images(model, images["fixed"], images["moving"], images["moving_mask"], images["fixed_mask"],
                             progress=progress, refine_with=refine_with, label_names=label_names, forward=forward)
    on_phase("writing_outputs")
    out_dir = Path(out_dir)
    paths = write_registration_outputs(out_dir, result)
    seg, seg_report = write_warped_mask_seg(out_dir, result, images["fixed"], inputs["fixed"],
                                            (series or {}).get("fixed"), str(model_fields.get("model", "unknown")))
    paths |= {"warped_mask_seg": seg} if seg is not None else {}
    report = result.report | dict(model_fields) | {
        "model_load_s": round(load_s, 4), "wall_s": round(time.perf_counter() - start, 4),
        "displacement_units": DISPLACEMENT_UNITS} | ({"dicom_seg": seg_report} if seg_report is not None else {})
    write_json_atomic(out_dir / REPORT, report)
    return RegisteredFiles(result, images, paths | {"report": out_dir / REPORT}, report)

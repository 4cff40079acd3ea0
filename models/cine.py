"""Whole-cine tracking: the reference frame's mask carried to every frame, and the volume curves.

A cine MRI is a series of frames over one cardiac cycle on one grid. The user draws (or has) the
mask of one reference frame, usually end-diastole (ED, frame 0); every other frame ``t`` is
registered *to* it in the convention of a single registration: frame ``t`` is the fixed image, the
reference the moving one, so the field ``u_t`` lives on frame ``t``'s grid and the reference mask
warped through it is the mask of frame ``t`` (``models.register``). The reference frame itself gets
the zero field and its own mask, exactly.

Frames are batched: a 2D model sees the slices of several frames as one batch
(:func:`models.register.predict_native` registers a stack slice by slice), as many frames at a time
as ``batch_size`` slices allow, and ``on_frames`` is told after each batch how many frames are done.
A 3D model registers one frame at a time.

From the carried masks come the volume curves (mL per label per frame; mm² for 2D frames) and, when
one label is the left ventricle (named so, or chosen with ``lv_label``), the end-diastolic and
end-systolic frames (largest and smallest LV volume) and the ejection fraction
``EF = (EDV − ESV) / EDV``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from models.artifact import LoadedModel
from models.field_maps import jacobian_image, jacobian_summary
from models.io.errors import FrameOutOfRangeError
from models.io.image import LABEL, Image
from models.io.readers.checks import check_mask
from models.io.writers import displacement_image
from models.refine import RefineConfig, refine_config
from models.register import mask_center, predict_native
from models.report import grid_section, label_names
from models.resample import warp_physical

__all__ = ["CineResult", "register_cine", "volume_curves", "find_lv_label", "ejection_fraction", "LV_NAMES"]

LV_NAMES = ("lv", "left ventricle", "lv cavity", "left ventricular cavity", "lv blood pool",
            "left ventricle cavity", "left ventricular blood pool")
"""Label names (lower case) taken to mean the left-ventricular cavity when ``lv_label`` is not given."""


@dataclass
class CineResult:
    """Per frame (in the series' order): the field in mm on that frame's grid, its voxel field
    ``(ndim, *shape)``, and the reference mask carried there; and the report (volumes, LV, timings)."""

    fields_mm: list[sitk.Image]
    disp_vox: list[np.ndarray]
    warped_masks: list[Image]
    report: dict = field(default_factory=dict)


def _frames_per_batch(model: LoadedModel, frame: Image, batch_size: int) -> int:
    """A 2D model takes several frames' slices in one batch; a 3D model one frame at a time."""
    if model.ndim == 3:
        return 1
    slices = frame.array.shape[0] if frame.ndim == 3 else 1
    return max(1, batch_size // slices)


def _predict_frames(model: LoadedModel, frames: Sequence[Image], reference: Image, center: tuple[float, ...] | None,
                    batch_size: int, refine_with: RefineConfig) -> tuple[list[np.ndarray], dict]:
    """Voxel fields ``(ndim, *shape)`` of ``frames`` (fixed) against ``reference`` (moving), in one batch."""
    spacing = tuple(reversed(reference.geometry.spacing))
    ref = reference.array.astype(np.float32)
    if model.ndim == 2:  # slices of every frame in one stack: (k·Z, Y, X), or (k, Y, X) for 2D frames
        per_frame = ref.shape[0] if reference.ndim == 3 else 1
        fixed = np.concatenate([f.array.astype(np.float32).reshape(-1, *ref.shape[-2:]) for f in frames])
        moving = np.tile(ref.reshape(-1, *ref.shape[-2:]), (len(frames), 1, 1))
        stack_spacing = spacing if reference.ndim == 3 else (1.0, *spacing)
        disp, _, record = predict_native(model, fixed, moving, stack_spacing, center, batch_size, refine_with)
        disp = disp if reference.ndim == 3 else disp[1:]  # 2D frames: drop the stack axis' zero channel
        return [disp[:, k * per_frame:(k + 1) * per_frame].reshape(-1, *ref.shape)
                for k in range(len(frames))], record
    disp, _, record = predict_native(model, frames[0].array.astype(np.float32), ref, spacing, center, batch_size,
                                     refine_with)
    return [disp], record


def _merge_records(records: list[dict]) -> dict:
    """One refinement record for the whole cine: sums of samples, improvements and seconds; sample-weighted
    image terms; the settings of the first batch (they are the same for all)."""
    if not records:
        return {}
    merged = dict(records[0])
    samples = [r.get("samples", 0) for r in records]
    total = sum(samples) or 1
    for key in ("image_term_before", "image_term_after"):
        if key in merged:
            merged[key] = sum(r[key] * n for r, n in zip(records, samples)) / total
    for key in ("samples", "improved", "seconds"):
        if key in merged:
            merged[key] = round(sum(r[key] for r in records), 4)
    merged["steps_done"] = max(r.get("steps_done", 0) for r in records)
    merged["batches"] = len(records)
    return merged


def register_cine(model: LoadedModel, frames: Sequence[Image], reference_mask: Image, reference: int = 0, *,
                  batch_size: int = 16, refine_with: RefineConfig | None = None,
                  label_names_given: Mapping[str, str] | None = None, lv_label: int | None = None,
                  on_frames: Callable[[int, int], None] | None = None) -> CineResult:
    """Register every frame of ``frames`` to frame ``reference`` and carry ``reference_mask`` to each.

    ``on_frames(done, total)`` is called after each batch. ``refine_with=None`` refines as the model
    card says. Raises :class:`~models.io.errors.FrameOutOfRangeError` for a reference outside the
    series and :class:`~models.io.errors.MaskGeometryError` for a mask off the frames' grid.
    """
    start = time.perf_counter()
    total = len(frames)
    if not 0 <= reference < total:
        raise FrameOutOfRangeError(f"reference_frame={reference} is out of range: the cine has {total} frames",
                                   path="reference_frame", hint=f"choose a frame from 0 to {total - 1}")
    check_mask(reference_mask, frames[reference])
    refine_with = refine_config(model.card) if refine_with is None else refine_with
    center = mask_center(reference_mask.array, model.ndim == 2 and reference_mask.ndim == 3)
    others = [t for t in range(total) if t != reference]
    chunk = _frames_per_batch(model, frames[reference], batch_size)
    disp: dict[int, np.ndarray] = {reference: np.zeros((frames[reference].ndim, *frames[reference].array.shape),
                                                       np.float32)}
    records = []
    if on_frames:
        on_frames(1, total)
    for first in range(0, len(others), chunk):
        batch = others[first:first + chunk]
        fields, record = _predict_frames(model, [frames[t] for t in batch], frames[reference], center, batch_size,
                                         refine_with)
        disp.update(zip(batch, fields))
        records.append(record)
        if on_frames:
            on_frames(1 + first + len(batch), total)
    predict_s = time.perf_counter() - start
    fields_mm = [displacement_image(disp[t], frames[t].to_sitk()) for t in range(total)]
    # The reference keeps its mask, on the frame's own grid (the mask's header may differ by rounding:
    # NIfTI stores geometry in float32), so that every frame of the 4-D outputs shares one grid.
    given = Image(reference_mask.array, frames[reference].geometry, LABEL, reference_mask.source)
    warped = [given if t == reference else warp_physical(reference_mask, fields_mm[t], frames[t])
              for t in range(total)]
    report = _report(frames, warped, fields_mm, reference, label_names_given, lv_label, model.card)
    report |= {"refine": _merge_records(records), "predict_s": round(predict_s, 4),
               "total_s": round(time.perf_counter() - start, 4)}
    return CineResult(fields_mm, [disp[t] for t in range(total)], warped, report)


def volume_curves(masks: Sequence[Image], labels: Sequence[int]) -> dict[int, list[float]]:
    """Per label, its volume in every mask (mL for 3D masks, mm² for 2D ones)."""
    voxel = float(np.prod(masks[0].geometry.spacing))
    scale = voxel / 1000.0 if masks[0].ndim == 3 else voxel
    return {k: [round(float(np.count_nonzero(m.array == k)) * scale, 4) for m in masks] for k in labels}


def find_lv_label(names: Mapping[int, str], lv_label: int | None) -> int | None:
    """The left ventricle's label: the one asked for, else the one whose name says so, else None."""
    if lv_label is not None:
        return lv_label if lv_label in names else None
    matches = [k for k, name in names.items() if name.strip().lower() in LV_NAMES]
    return matches[0] if len(matches) == 1 else None


def ejection_fraction(curve: Sequence[float]) -> dict:
    """ED (largest) and ES (smallest) frames of an LV volume curve, their volumes and ``EF`` in %."""
    values = np.asarray(curve, np.float64)
    ed, es = int(values.argmax()), int(values.argmin())
    ef = float(100.0 * (values[ed] - values[es]) / values[ed]) if values[ed] > 0 else None
    return {"ed_frame": ed, "es_frame": es, "edv": float(values[ed]), "esv": float(values[es]),
            "ef_pct": None if ef is None else round(ef, 2)}


def _report(frames: Sequence[Image], warped: Sequence[Image], fields_mm: Sequence[sitk.Image], reference: int,
            given: Mapping[str, str] | None, lv_label: int | None, card: Mapping | None) -> dict:
    present = sorted(int(k) for k in np.unique(warped[reference].array) if k != 0)
    names = label_names(present, given, card)
    unit = "volume_ml" if frames[reference].ndim == 3 else "area_mm2"
    curves = volume_curves(warped, present)
    lv = find_lv_label(names, lv_label)
    report: dict = {"frames": len(frames), "reference_frame": reference, "grid": grid_section(frames[reference]),
                    "unit": unit, "labels": {str(k): {"name": names[k], unit: curves[k]} for k in present},
                    "folding_pct": [jacobian_summary(sitk.GetArrayViewFromImage(jacobian_image(f)))["folding_pct"]
                                    for f in fields_mm]}
    if lv is None:
        report["lv"] = None
        report["lv_note"] = ("no label is the left ventricle: name one 'LV' or 'left ventricle' in labels, or "
                             "choose it with lv_label" if lv_label is None else
                             f"lv_label={lv_label} is not a label of the reference mask (labels: {present})")
    else:
        ef = ejection_fraction(curves[lv])
        suffix = "ml" if unit == "volume_ml" else "mm2"
        report["lv"] = {"label": str(lv), "name": names[lv], "ed_frame": ef["ed_frame"], "es_frame": ef["es_frame"],
                        f"edv_{suffix}": ef["edv"], f"esv_{suffix}": ef["esv"], "ef_pct": ef["ef_pct"]}
    return report

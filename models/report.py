"""The parts of ``report.json`` a person reads: the grid in ITK order, and per label its name, volumes
and scores.

Users read this file next to ITK, NIfTI, Slicer and ANTs, which all list sizes and spacings as
``(x, y, z)``; NumPy arrays read from the same files are ``(z, y, x)``. So every size here is in ITK
order and says so. Labels are keyed by their value (``"2"``) and carry a name: the one the request
gave, else the model card's, else ``"label 2"``. Surface distances are in millimetres on the fixed
grid; a slice's scores are listed when the images are 3-D (short-axis cine stacks are read slice by
slice). Imports no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from models.io.image import Image
from models.metrics import mask_metrics

__all__ = ["grid_section", "label_names", "label_section", "parse_label_names", "slice_dice", "AXIS_ORDER"]

AXIS_ORDER = "ITK/NIfTI order (x, y[, z]); NumPy arrays read from the files are (z, y, x)"


def grid_section(image: Image) -> dict:
    """Size, spacing and the axis order they are listed in."""
    return {"size": list(image.size), "spacing_mm": [round(float(s), 6) for s in image.geometry.spacing],
            "axis_order": AXIS_ORDER}


def label_names(present: list[int], requested: Mapping[str, str] | None, card: Mapping | None) -> dict[int, str]:
    """Each label's name: the request's, else the model card's ``label_names``, else ``label k``."""
    card_names = (card or {}).get("label_names") or {}
    requested = requested or {}
    return {k: str(requested.get(str(k)) or card_names.get(str(k)) or f"label {k}") for k in present}


def _volume(mask: np.ndarray, voxel_mm: float, ndim: int) -> dict[str, float]:
    """mL for a 3-D label, mm² for a 2-D one."""
    count = float(np.count_nonzero(mask))
    return {"volume_ml": round(count * voxel_mm / 1000.0, 4)} if ndim == 3 else {"area_mm2": round(count * voxel_mm, 3)}


def _scores(pred: np.ndarray, target: np.ndarray, label: int, spacing_zyx: tuple[float, ...]) -> dict:
    """Dice (%) and surface distances (mm); a distance is None where one mask lacks the label (JSON has no NaN)."""
    scores = mask_metrics(pred, target, label, spacing_zyx)
    finite = {key: None if math.isnan(value) else round(value, 3) for key, value in scores.items()}
    return {"dice": finite["dsc"], "hd95_mm": finite["hd95"], "asd_mm": finite["asd"]}


def label_section(warped_mask: Image, moving_mask: np.ndarray, fixed_mask: np.ndarray | None,
                  names: dict[int, str]) -> dict[str, dict]:
    """Per label: name, volumes (moving mask on the fixed grid, warped, fixed), and when a fixed mask
    is given Dice / HD95 / ASD after and before registration, overall and per slice (3-D)."""
    spacing_zyx = tuple(reversed(warped_mask.geometry.spacing))
    voxel_mm = float(np.prod(warped_mask.geometry.spacing))
    ndim, warped = warped_mask.ndim, warped_mask.array
    section = {}
    for label, name in names.items():
        entry: dict = {"name": name,
                       "moving": _volume(moving_mask == label, voxel_mm, ndim),
                       "warped": _volume(warped == label, voxel_mm, ndim)}
        if fixed_mask is not None:
            entry["fixed"] = _volume(fixed_mask == label, voxel_mm, ndim)
            entry["after"] = _scores(warped, fixed_mask, label, spacing_zyx)
            entry["before"] = _scores(moving_mask, fixed_mask, label, spacing_zyx)
            if ndim == 3:
                entry["per_slice_dice"] = [_rounded(slice_dice(warped[z], fixed_mask[z], label))
                                          for z in range(warped.shape[0])]
                entry["per_slice"] = [_slice_scores(warped[z], fixed_mask[z], label, spacing_zyx[1:])
                                      for z in range(warped.shape[0])]
        section[str(label)] = entry
    return section


def _slice_scores(pred: np.ndarray, target: np.ndarray, label: int, spacing_yx: tuple[float, ...]) -> dict | None:
    """A slice's Dice, HD95 and ASD (in-plane mm), or None where the label is in neither mask."""
    if not (np.any(pred == label) or np.any(target == label)):
        return None
    return _scores(pred, target, label, spacing_yx)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def slice_dice(pred: np.ndarray, target: np.ndarray, label: int) -> float | None:
    """A slice's Dice (%), or None where the label is in neither (nothing to score); the preview shows it too."""
    a, b = pred == label, target == label
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return float(200.0 * np.count_nonzero(a & b) / total) if total else None


MAX_LABEL_NAMES = 255
MAX_LABEL_NAME = 64


def parse_label_names(text: str) -> dict[str, str]:
    """``'{"1": "RV", "2": "myocardium"}'`` -> ``{"1": "RV", "2": "myocardium"}``, or ValueError saying why.

    Keys are label values (whole numbers > 0), names are short printable text: they are echoed into the
    report and its pictures, so their size is bounded here, before any job exists.
    """
    try:
        names = json.loads(text)
    except ValueError:
        raise ValueError('labels must be a JSON object such as {"1": "RV", "2": "myocardium"}') from None
    if not isinstance(names, dict) or len(names) > MAX_LABEL_NAMES:
        raise ValueError(f"labels must be a JSON object of at most {MAX_LABEL_NAMES} label values -> names")
    parsed = {}
    for key, name in names.items():
        if not (isinstance(key, str) and key.isdigit() and 0 < int(key) < 2**31):
            raise ValueError("each key of labels is a label value, a whole number > 0 written as a string")
        if not (isinstance(name, str) and 0 < len(name) <= MAX_LABEL_NAME and name.isprintable()):
            raise ValueError(f"each name in labels is printable text of 1 to {MAX_LABEL_NAME} characters")
        parsed[str(int(key))] = name
    return parsed

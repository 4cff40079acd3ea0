"""A cine registration from files to files, the same for ``adacs register-cine`` and the service's worker.

Inputs: the cine (a 4-D image: every frame on one grid) and the mask of its reference frame. Outputs,
in ``out_dir`` (names are a contract, README "Cine"):

- ``displacements.nii.gz``: every frame's field as one 4-D vector image ``(x, y, z, t)`` with ``ndim``
  components, frame ``t``'s in the convention of ``displacement.nii.gz`` (mm, LPS, frame point ``p``
  maps to ``p + u_t(p)`` in the reference frame); 2-D frames are stored as ``(x, y, 1, t)``;
- ``warped_masks.nii.gz``: the reference mask carried to every frame, ``(x, y, z, t)``, labels kept;
- ``volumes.csv``: one row per frame, one column per label (mL; mm² for 2-D frames);
- ``volume_curve.png``: the curves, with the reference, ED and ES frames and the ejection fraction;
- ``report.json``: ``models.cine``'s report plus the model and timings.

Nothing is written unless the inputs read and check.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from models.artifact import LoadedModel
from models.cine import CineResult, register_cine
from models.inference import for_inference
from models.io.atomic import write_json_atomic
from models.io.readers.header import DEFAULT_MAX_VOXELS
from models.io.readers.inputs import read_cine_inputs
from models.io.readers.read import DEFAULT_MAX_FRAMES
from models.io.writers import write_image
from models.outputs import DISPLACEMENT_UNITS, REPORT
from models.refine import refine_config

__all__ = ["CINE_OUTPUTS", "CineFiles", "register_cine_files",
           "write_cine_outputs", "draw_volume_curves"]

CINE_OUTPUTS = {"displacements": "displacements.nii.gz", "warped_masks": "warped_masks.nii.gz",
                "volumes": "volumes.csv", "volume_curve": "volume_curve.png", "report": REPORT}
"""Role -> file name of every output of a cine registration."""


@dataclass
class CineFiles:
    """What :func:`register_cine_files` made: the registration, the files by role and the report."""

    result: CineResult
    paths: dict[str, Path]
    report: dict[str, Any]


def _series_image(images: list[sitk.Image]) -> sitk.Image:
    """Frames joined along a 4th axis; 2-D frames first get a z axis of one slice (so t is always axis 4).

    The frames share one grid (``read_frames``); the first's geometry is copied to all, so that a
    rounding difference in the last digit (a header read as float32) cannot stop ITK joining them.
    """
    for image in images[1:]:
        image.CopyInformation(images[0])
    if images[0].GetDimension() == 2:
        images = [sitk.JoinSeries([image]) for image in images]
    return sitk.JoinSeries(images)


def draw_volume_curves(path: Path, report: Mapping[str, Any]) -> Path:
    """The volume (or area) of every label over the frames, the reference, ED and ES frames marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = report["unit"]
    frames = list(range(report["frames"]))
    lv = report.get("lv")
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]  # Okabe-Ito
    for i, (label, entry) in enumerate(report["labels"].items()):
        ax.plot(frames, entry[unit], marker="o", markersize=3, lw=1.8, color=colours[i % len(colours)],
                label=f"{entry['name']} ({label})")
    ax.axvline(report["reference_frame"], color="grey", ls=":", lw=1.2, label="reference frame (mask given)")
    title = "Volume per label over the cycle"
    if lv:
        ax.axvline(lv["ed_frame"], color="black", ls="--", lw=1, label=f"ED (frame {lv['ed_frame']})")
        ax.axvline(lv["es_frame"], color="black", ls="-.", lw=1, label=f"ES (frame {lv['es_frame']})")
        title += f": {lv['name']} EF {lv['ef_pct']:.1f} %" if lv["ef_pct"] is not None else ""
    ax.set(xlabel="frame", ylabel="volume (mL)" if unit == "volume_ml" else "area (mm²)", title=title)
    ax.title.set_fontsize(11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _write_csv(path: Path, report: Mapping[str, Any]) -> Path:
    unit = report["unit"]
    labels = report["labels"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", *[f"{entry['name']} ({label}) [{unit}]" for label, entry in labels.items()]])
        for t in range(report["frames"]):
            writer.writerow([t, *[entry[unit][t] for entry in labels.values()]])
    return path


def write_cine_outputs(out_dir: Path, result: CineResult) -> dict[str, Path]:
    """The 4-D field and masks, the CSV and the picture (not the report) into ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {role: out_dir / name for role, name in CINE_OUTPUTS.items() if role != "report"}
    write_image(_series_image(result.fields_mm), paths["displacements"])
    write_image(_series_image([m.to_sitk() for m in result.warped_masks]), paths["warped_masks"])
    _write_csv(paths["volumes"], result.report)
    draw_volume_curves(paths["volume_curve"], result.report)
    return paths


def _no_phase(phase: str) -> None:
    """The default ``on_phase``: nobody is told."""


def register_cine_files(load_model: Callable[[], LoadedModel], cine: Path, reference_mask: Path, out_dir: str | Path,
                        *, model_fields: Mapping[str, Any], reference: int = 0, series: str | None = None,
                        max_voxels: int = DEFAULT_MAX_VOXELS, max_frames: int = DEFAULT_MAX_FRAMES,
                        refine_steps: int | None = None, refine_time_limit_s: float | None = None,
                        refine_similarity: str | None = None, label_names: Mapping[str, str] | None = None,
                        lv_label: int | None = None, on_phase: Callable[[str], None] = _no_phase,
                        on_frames: Callable[[int, int], None] | None = None) -> CineFiles:
    """Load the model, read and check the inputs, register every frame, write the outputs and ``report.json``.

    As :func:`models.register.register_files` for one pair: ``load_model`` runs in the ``loading_model``
    phase, ``model_fields`` name the model in the report, refinement left None takes the card's
    defaults, ``on_phase`` is told each of :data:`models.register.PHASES` (a pair's four, the same);
    ``on_frames(done, total)`` follows the frames. Raises ``ImageError`` (bad input) or ``ValueError``
    (a model that cannot register them).
    """
    start = time.perf_counter()
    on_phase("loading_model")
    model = load_model()
    for_inference(model.estimator, model.ndim)
    load_s = time.perf_counter() - start
    on_phase("reading_inputs")
    frames, mask = read_cine_inputs(Path(cine), Path(reference_mask), series=series, max_voxels=max_voxels,
                                    max_frames=max_frames)
    on_phase("registering")
    refine_with = refine_config(model.card, steps=refine_steps, time_limit_s=refine_time_limit_s,
                                similarity=refine_similarity)
    result = register_cine(model, frames, mask, reference, refine_with=refine_with, label_names_given=label_names,
                           lv_label=lv_label, on_frames=on_frames)
    on_phase("writing_outputs")
    out_dir = Path(out_dir)
    paths = write_cine_outputs(out_dir, result)
    report = result.report | dict(model_fields) | {
        "model_load_s": round(load_s, 4), "wall_s": round(time.perf_counter() - start, 4),
        "displacement_units": DISPLACEMENT_UNITS + ", per frame t (4th axis)"}
    write_json_atomic(out_dir / REPORT, report)
    return CineFiles(result, paths | {"report": out_dir / REPORT}, report)

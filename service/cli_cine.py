"""``adacs register-cine``: whole-cine tracking on local files, the pipeline the service's worker runs.

Every frame of a 4-D image (or DICOM cine series) is registered to the reference frame, whose mask
is carried to all of them (``models.cine_files.register_cine_files``); the volume curves, ED/ES and
the ejection fraction go into ``report.json``, ``volumes.csv`` and ``volume_curve.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.cli_args import LABELS_HELP, device_name, label_names_arg, refine_steps_arg, seconds_arg

__all__ = ["add_cine_commands", "CINE_COMMANDS"]


def _add_register_cine(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("register-cine", help="carry one frame's mask through a whole cine: volume curves, ED/ES, EF")
    c.add_argument("--model", required=True, type=Path, help="model artifact directory")
    c.add_argument("--cine", required=True, type=Path, help="4-D image (x, y, z, t), or a DICOM cine series "
                                                              "(folder or zip)")
    c.add_argument("--reference-mask", required=True, type=Path, help="label map of the reference frame")
    c.add_argument("--reference-frame", type=int, default=0, help="frame the mask was drawn on (0-based; default 0, "
                                                                  "end-diastole)")
    c.add_argument("--cine-series", help="SeriesInstanceUID (or a unique prefix) when the DICOM holds several series")
    c.add_argument("--out", required=True, type=Path, help="output directory")
    c.add_argument("--labels", type=label_names_arg, help=LABELS_HELP + "; a label named LV or 'left ventricle' "
                                                                         "gives ED, ES and the ejection fraction")
    c.add_argument("--lv-label", type=int, help="the left ventricle's label, if no label is named so")
    c.add_argument("--max-frames", type=int, default=None, help="refuse a cine with more frames (default 64)")
    c.add_argument("--device", default="auto")
    c.add_argument("--refine-steps", type=refine_steps_arg, default=None, metavar="N",
                   help="test-time refinement steps per batch of frames (default: the model card's, else 0)")
    c.add_argument("--refine-time-limit", type=seconds_arg, default=None, metavar="S",
                   help="stop refining a batch of frames after S seconds (default: the model card's, else 30)")
    c.add_argument("--refine-similarity", choices=("mse", "ncc"), default=None,
                   help="image term refinement optimises (default: the model card's, else mse)")


def cmd_register_cine(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.artifact import load_artifact
    from models.cine_files import register_cine_files
    from models.io.readers.read import DEFAULT_MAX_FRAMES

    bar = tqdm(total=None, unit="frame", desc="registering frames")

    def on_frames(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        done = register_cine_files(
            lambda: load_artifact(args.model, device=device_name(args.device)), args.cine, args.reference_mask,
            args.out, model_fields={"model": str(args.model)}, reference=args.reference_frame,
            series=args.cine_series, max_frames=args.max_frames or DEFAULT_MAX_FRAMES,
            refine_steps=args.refine_steps, refine_time_limit_s=args.refine_time_limit,
            refine_similarity=args.refine_similarity, label_names=args.labels, lv_label=args.lv_label,
            on_frames=on_frames)
    finally:
        bar.close()
    report = done.report
    summary = {"frames": report["frames"], "reference_frame": report["reference_frame"], "lv": report["lv"],
               "outputs": {role: str(path) for role, path in done.paths.items()}}
    if report["lv"] is None:
        summary["lv_note"] = report["lv_note"]
    print(json.dumps(summary, indent=2))
    return 0


def add_cine_commands(sub: argparse._SubParsersAction) -> None:
    _add_register_cine(sub)


CINE_COMMANDS = {"register-cine": cmd_register_cine}

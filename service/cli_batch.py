"""``adacs register --pairs study.csv``: a study's pairs registered in one process.

Starting ``adacs register`` costs about 1.8 s, nearly all imports (torch, SimpleITK, the model), for a
registration of 0.1 s: a user with a study of a hundred pairs should pay it once. The manifest is the
datasets' format (``models.data.manifest``: ``fixed,moving[,fixed_mask,moving_mask][,id]``, paths
relative to the CSV); every file is checked to exist before the first pair runs. Each pair's outputs
go to ``OUT/<id>/`` exactly as a single ``adacs register`` writes them (``models.register.register_files``),
and ``OUT/summary.csv`` lists per pair its status, Dice per label, folding and seconds. A pair the
readers refuse fails alone (its row says why); the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["register_pairs", "SUMMARY"]

SUMMARY = "summary.csv"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _row(pair_id: str, report: dict[str, Any] | None, error: str | None, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"id": pair_id, "status": "failed" if error else "succeeded", "error": error or "",
                           "seconds": round(seconds, 3)}
    if report:
        row["folding_pct"] = report.get("folding_pct")
        for label, value in (report.get("dice") or {}).items():
            row[f"dice_{label}"] = round(value, 2)
    return row


def _write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["id", "status", "seconds", "folding_pct"]
    columns += sorted({key for row in rows for key in row if key.startswith("dice_")}) + ["error"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def register_pairs(args: argparse.Namespace, device: str) -> int:
    """Every row of ``args.pairs`` registered with one model load; ``OUT/summary.csv`` written as it goes."""
    from tqdm import tqdm

    from models.artifact import load_artifact
    from models.data.manifest import list_manifest
    from models.register import register_files

    pairs = list_manifest(args.pairs)
    unsafe = [pair_id for pair_id, _ in pairs if not _SAFE_ID.fullmatch(pair_id) or set(pair_id) == {"."}]
    if unsafe:
        raise ValueError(f"{args.pairs}: ids name output folders, so they are letters, digits, '.', '_' and '-' "
                         f"only; got {unsafe[:3]}")
    model = load_artifact(args.model, device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for pair_id, files in tqdm(pairs, unit="pair", desc="registering"):
        start, report, error = time.perf_counter(), None, None
        try:
            done = register_files(lambda: model, files, args.out / pair_id, model_fields={"model": str(args.model)},
                                  refine_steps=args.refine_steps, refine_time_limit_s=args.refine_time_limit,
                                  label_names=args.labels)
            report = done.report
        except ValueError as failure:  # ImageError included: this pair's files, refused; the others go on
            error = f"{getattr(failure, 'code', type(failure).__name__)}: {failure}"
        rows.append(_row(pair_id, report, error, time.perf_counter() - start))
        _write_summary(args.out / SUMMARY, rows)
    failed = [row["id"] for row in rows if row["status"] == "failed"]
    print(json.dumps({"pairs": len(rows), "succeeded": len(rows) - len(failed), "failed": failed,
                      "summary": str(args.out / SUMMARY)}, indent=2))
    return 1 if failed else 0

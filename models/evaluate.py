"""Evaluate displacement fields on labelled pairs with the paper's protocol (SPEC, Evaluation).

The headline score warps the source (ED) mask nearest-neighbour and compares the myocardium with
the target (ES) mask: DSC (%), Hausdorff and average surface distance (mm when the spacing is known,
voxels otherwise), folding %, and the endpoint error where a ground-truth field exists. The paper's
own, more lenient score (bilinear warp of the binary mask, every value above 0 counted) is reported
beside it as ``dsc_paper`` so our numbers can be set next to published ones.

A model whose card asks for test-time refinement (``models.refine``) is evaluated refined, pair by
pair with the same function and settings as ``models.register``: an evaluation measures what users
get, not the network alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from models.data.pairs import MYOCARDIUM, PairSample
from models.inference import predict_deformation, predict_disp, stack_pairs, warp_labels
from models.metrics import dice, endpoint_error, folding_percent, mask_metrics
from models.networks.estimator import Deformation
from models.refine import RefineConfig, refine, refine_config
from models.statistics import mean_std, per_subject_means
from models.warp import warp

__all__ = ["evaluate_model", "evaluate_disps", "summarize"]


def _paper_dice(moving_mask: np.ndarray, fixed_mask: np.ndarray, disp: torch.Tensor, label: int) -> float:
    source = torch.from_numpy((moving_mask == label).astype(np.float32))[None, None]
    warped = warp(source, disp[None], mode="linear")[0, 0].numpy()
    return dice(warped > 0, fixed_mask == label)


def pair_metrics(pair: PairSample, disp: torch.Tensor, label: int = MYOCARDIUM) -> dict:
    """Metrics of one pair; ``disp`` is ``(ndim, *spatial)`` in voxels on the fixed grid."""
    out: dict = {"pair_id": pair.pair_id, "subject_id": pair.subject_id,
                 "folding_pct": folding_percent(disp.numpy())}
    if pair.tags:
        out["tags"] = list(pair.tags)
    if pair.moving_mask is not None and pair.fixed_mask is not None:
        warped_mask = warp_labels(pair.moving_mask, disp)
        out.update(mask_metrics(warped_mask, pair.fixed_mask, label, pair.spacing_mm))
        out["dsc_paper"] = _paper_dice(pair.moving_mask, pair.fixed_mask, disp, label)
    if pair.disp_gt is not None:
        out["epe"] = endpoint_error(disp.numpy(), pair.disp_gt, pair.spacing_mm)
        if pair.fixed_mask is not None and np.any(pair.fixed_mask == label):
            # On the structure itself: a field can be right on the heart and wrong in the background.
            out["epe_myo"] = endpoint_error(disp.numpy(), pair.disp_gt, pair.spacing_mm, mask=pair.fixed_mask == label)
    return out


def summarize(pairs: list[dict], spacing_known: bool) -> dict:
    """Mean/std of every metric, per-subject means of the DSC, and the distance unit."""
    summary: dict = {"n_pairs": len(pairs), "n_subjects": len({p["subject_id"] for p in pairs}),
                     "distance_unit": "mm" if spacing_known else "voxels"}
    for key in ("dsc", "hd", "hd95", "asd", "folding_pct", "dsc_paper", "epe", "epe_myo"):
        values = [p[key] for p in pairs if key in p]
        if values:
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std(values)
    if any("dsc" in p for p in pairs):
        subjects = per_subject_means([p["dsc"] for p in pairs], [p["subject_id"] for p in pairs])
        summary["dsc_subject_mean"], summary["dsc_subject_std"] = mean_std(list(subjects.values()))
    return summary


Progress = Callable[[Iterable, int], Iterable]


def evaluate_disps(pairs: Sequence[PairSample], disps: Sequence[torch.Tensor], label: int = MYOCARDIUM,
                   progress: Progress | None = None) -> dict:
    """Report for given fields (the identity row of a benchmark passes zeros).

    ``progress(iterable, total)`` may wrap the per-pair loop (the CLI passes a progress bar).
    """
    items: Iterable = zip(pairs, disps)
    if progress is not None:
        items = progress(items, len(pairs))
    rows = [pair_metrics(p, d, label) for p, d in items]
    spacing_known = all(p.spacing_mm is not None for p in pairs)
    return {"summary": summarize(rows, spacing_known), "pairs": rows}


def _group_by_shape(pairs: Sequence[PairSample]) -> list[list[int]]:
    by_shape: dict[tuple, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_shape.setdefault(pair.shape, []).append(i)
    return list(by_shape.values())


def _refine_each(model, moving: torch.Tensor, fixed: torch.Tensor, network: Deformation,
                 config: RefineConfig) -> tuple[list[torch.Tensor], list[dict]]:
    """Refine every pair of a batch alone, as ``models.register`` refines one registration.

    One pair per call, so the time limit is per pair exactly as a user's registration has it.
    """
    disps, records = [], []
    for k in range(moving.shape[0]):
        one = Deformation(*(getattr(network, name)[k:k + 1] for name in ("vel", "disp", "disp_inv")))
        result = refine(model.estimator, moving[k:k + 1], fixed[k:k + 1], one, config)
        disps.append(result.disp[0].cpu())
        records.append(result.record)
    return disps, records


def _refine_summary(config: RefineConfig, records: list[dict], seconds: float) -> dict:
    """What refinement did over the evaluation (means over pairs)."""
    n = max(len(records), 1)
    mean = lambda key: sum(r[key] for r in records) / n  # noqa: E731
    return {"steps_requested": config.steps, "time_limit_s": config.time_limit_s, "lr": config.lr,
            "similarity": config.similarity, "lam": config.lam, "steps_done_mean": mean("steps_done"),
            "image_term_before_mean": mean("image_term_before"), "image_term_after_mean": mean("image_term_after"),
            "improved_pairs": sum(r["improved"] for r in records),
            "stopped_by_time": sum(r["stopped_by"] == "time" for r in records), "ms_per_pair": 1000.0 * seconds / n}


def _fields_of_group(model, moving: torch.Tensor, fixed: torch.Tensor, batch_size: int,
                     config: RefineConfig) -> tuple[list[torch.Tensor], list[dict | None], float, float]:
    """Fields of one same-shape group: ``(disps, refine records, forward seconds, refine seconds)``.

    Without refinement this is the plain batched forward pass, bit for bit what it always was.
    """
    predict_disp(model.estimator, moving[:batch_size], fixed[:batch_size])  # warm-up: first-call allocations
    start = time.perf_counter()
    if not config.steps:
        out = list(predict_disp(model.estimator, moving, fixed, batch_size))
        return out, [None] * len(out), time.perf_counter() - start, 0.0
    device = next(model.estimator.parameters()).device
    moving, fixed = moving.to(device), fixed.to(device)
    network = predict_deformation(model.estimator, moving, fixed, batch_size)
    network.disp.cpu()  # waits for an accelerator, so the time is the forward pass's
    forward_s, start = time.perf_counter() - start, time.perf_counter()
    disps, records = _refine_each(model, moving, fixed, network, config)
    return disps, records, forward_s, time.perf_counter() - start


def evaluate_model(model, pairs: Sequence[PairSample], label: int = MYOCARDIUM, batch_size: int = 16,
                   progress: Progress | None = None, refine_with: RefineConfig | None = None) -> dict:
    """Predict every pair with a :class:`models.artifact.LoadedModel` and score it.

    Pairs are grouped by grid shape so that each group is batched; the inference time per pair
    (forward pass only, after one warm-up batch) goes into the summary. ``refine_with=None``
    refines as the model card says (0 steps without the key); with steps, each pair's row holds
    its ``refine`` record and the summary a ``refine`` digest with its ``ms_per_pair``.
    """
    refine_with = refine_config(model.card) if refine_with is None else refine_with
    disps: list[torch.Tensor | None] = [None] * len(pairs)
    records: list[dict | None] = [None] * len(pairs)
    forward_s = refine_s = 0.0
    for indices in _group_by_shape(pairs):
        moving, fixed = stack_pairs([pairs[i] for i in indices], model.intensity)
        out, group_records, group_forward_s, group_refine_s = _fields_of_group(model, moving, fixed, batch_size,
                                                                               refine_with)
        forward_s, refine_s = forward_s + group_forward_s, refine_s + group_refine_s
        for i, d, record in zip(indices, out, group_records):
            disps[i], records[i] = d, record
    report = evaluate_disps(pairs, disps, label, progress)
    report["summary"]["inference_ms_per_pair"] = 1000.0 * forward_s / max(len(pairs), 1)
    if refine_with.steps:
        for row, record in zip(report["pairs"], records):
            row["refine"] = record
        report["summary"]["refine"] = _refine_summary(refine_with, records, refine_s)
    return report

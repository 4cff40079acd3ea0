"""Summary statistics and paired significance tests for comparing registration methods.

Metrics arrive as one value per evaluated case (usually a 2D slice or a frame pair), with ``nan``
where a metric is undefined (see ``models.metrics``: e.g. a Hausdorff distance with one empty mask).
Everything here is nan-aware. The per-subject variant of the paired test exists because slices of
one patient are not independent samples: testing over slices overstates ``n`` and the significance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "paired_ttest", "mean_std", "per_subject_means", "paired_ttest_by_subject"]


@dataclass(frozen=True)
class PairedTest:
    """Result of a two-sided paired t-test.

    Attributes:
        n: number of pairs actually tested (after dropping pairs with a ``nan``).
        mean_diff: ``mean(a - b)`` over those pairs (``nan`` if ``n == 0``).
        t: the t statistic (``nan`` if ``n < 2``).
        p: the two-sided p-value (``nan`` if ``n < 2``).
    """

    n: int
    mean_diff: float
    t: float
    p: float


def _as_float_array(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def _check_lengths(**named: Sequence[object]) -> None:
    lengths = {name: len(values) for name, values in named.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"sequences must have the same length, but {described}")


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``).

    Pairs in which either value is ``nan`` are dropped before testing (the metric was undefined for
    that case in at least one method, so the pair carries no paired information); ``n`` reports how
    many pairs remained. With fewer than two pairs there is no variance estimate, so ``t`` and ``p``
    are ``nan``. When all differences are exactly equal (zero variance) the limit is returned:
    ``t = ±inf, p = 0`` for a non-zero constant difference, ``t = p = nan`` when all are zero.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
    """
    _check_lengths(a=a, b=b)
    x, y = _as_float_array(a, "a"), _as_float_array(b, "b")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    mean_diff = float(np.mean(x - y)) if n else math.nan
    if n < 2:
        return PairedTest(n=n, mean_diff=mean_diff, t=math.nan, p=math.nan)
    diff = x - y
    if np.all(diff == diff[0]):
        # Zero variance: the limit scipy also returns, without its cancellation warning.
        t = math.copysign(math.inf, diff[0]) if diff[0] else math.nan
        return PairedTest(n=n, mean_diff=mean_diff, t=t, p=0.0 if diff[0] else math.nan)
    result = stats.ttest_rel(x, y)
    return PairedTest(n=n, mean_diff=mean_diff, t=float(result.statistic), p=float(result.pvalue))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """nan-aware mean and sample standard deviation (``ddof=1``) of ``values``.

    ``nan`` entries are ignored. A single remaining value has std ``0.0`` (rather than the
    undefined ``ddof=1`` estimate); no remaining value gives ``(nan, nan)``.
    """
    arr = _as_float_array(values, "values")
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1))


def per_subject_means(values: Sequence[float], subject_ids: Sequence[str]) -> dict[str, float]:
    """nan-aware mean of ``values`` per subject, as ``{subject_id: mean}`` with keys sorted.

    A subject whose values are all ``nan`` maps to ``nan``.

    Raises:
        ValueError: if ``values`` and ``subject_ids`` differ in length.
    """
    _check_lengths(values=values, subject_ids=subject_ids)
    arr = _as_float_array(values, "values")
    ids = np.asarray(subject_ids, dtype=object)
    means: dict[str, float] = {}
    for subject in sorted(set(subject_ids)):
        mine = arr[ids == subject]
        mine = mine[~np.isnan(mine)]
        means[subject] = float(mine.mean()) if mine.size else math.nan
    return means


def paired_ttest_by_subject(
    a: Sequence[float], b: Sequence[float], subject_ids: Sequence[str]
) -> PairedTest:
    """Paired t-test over subjects: average each method per subject first, then test the means.

    Slices (or frames) of one patient are correlated, so treating them as independent pairs
    inflates ``n`` and makes small differences look significant; the subject is the independent
    unit. Case pairs in which either value is ``nan`` are dropped *before* averaging, so both
    methods are averaged over the same cases; a subject left with no case is dropped from the test.
    ``n`` of the result is the number of subjects tested.

    Raises:
        ValueError: if ``a``, ``b`` and ``subject_ids`` differ in length.
    """
    _check_lengths(a=a, b=b, subject_ids=subject_ids)
    x, y = _as_float_array(a, "a"), _as_float_array(b, "b")
    undefined = np.isnan(x) | np.isnan(y)
    x, y = np.where(undefined, np.nan, x), np.where(undefined, np.nan, y)
    mean_a = per_subject_means(x.tolist(), subject_ids)
    mean_b = per_subject_means(y.tolist(), subject_ids)
    subjects = list(mean_a)
    return paired_ttest([mean_a[s] for s in subjects], [mean_b[s] for s in subjects])

"""Hand-computed answers for ``models.statistics``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.statistics import (
    mean_std,
    paired_ttest,
    paired_ttest_by_subject,
    per_subject_means,
)

NAN = float("nan")


def test_paired_ttest_matches_hand_computation() -> None:
    a = [2.0, 4.0, 7.0, 5.0, 9.0]
    b = [1.0, 3.5, 5.0, 5.5, 6.0]
    diff = [1.0, 0.5, 2.0, -0.5, 3.0]  # mean 1.2
    mean = sum(diff) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diff) / 4)
    t = mean / (sd / math.sqrt(5))
    p = 2 * stats.t.sf(abs(t), df=4)
    result = paired_ttest(a, b)
    assert result.n == 5
    assert result.mean_diff == pytest.approx(1.2)
    assert result.t == pytest.approx(t)
    assert result.p == pytest.approx(p)
    swapped = paired_ttest(b, a)
    assert swapped.t == pytest.approx(-t) and swapped.p == pytest.approx(p)


def test_paired_ttest_drops_pairs_with_nan() -> None:
    a = [2.0, NAN, 4.0, 7.0, 5.0, 9.0, 1.0]
    b = [1.0, 0.0, 3.5, 5.0, 5.5, 6.0, NAN]
    result = paired_ttest(a, b)
    assert result == paired_ttest([2.0, 4.0, 7.0, 5.0, 9.0], [1.0, 3.5, 5.0, 5.5, 6.0])
    assert result.n == 5


def test_paired_ttest_with_too_few_pairs() -> None:
    one = paired_ttest([3.0, NAN], [1.0, 2.0])
    assert one.n == 1 and one.mean_diff == 2.0 and math.isnan(one.t) and math.isnan(one.p)
    none = paired_ttest([NAN], [1.0])
    assert none.n == 0 and math.isnan(none.mean_diff) and math.isnan(none.p)
    empty = paired_ttest([], [])
    assert empty.n == 0 and math.isnan(empty.p)


def test_paired_ttest_zero_variance() -> None:
    shifted = paired_ttest([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert shifted.t == math.inf and shifted.p == 0.0 and shifted.mean_diff == 1.0
    assert paired_ttest([1.0, 2.0], [2.0, 3.0]).t == -math.inf
    same = paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.mean_diff == 0.0 and math.isnan(same.t) and math.isnan(same.p)


def test_mean_std() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))  # sum of squares 5, ddof=1
    assert mean_std([1.0, NAN, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([4.0]) == (4.0, 0.0)
    assert mean_std([4.0, NAN]) == (4.0, 0.0)
    mean, std = mean_std([NAN, NAN])
    assert math.isnan(mean) and math.isnan(std)
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)


def test_per_subject_means() -> None:
    values = [1.0, 10.0, 3.0, NAN, 20.0, NAN]
    ids = ["p2", "p1", "p2", "p2", "p1", "p3"]
    means = per_subject_means(values, ids)
    assert list(means) == ["p1", "p2", "p3"]  # sorted
    assert means["p1"] == 15.0 and means["p2"] == 2.0
    assert math.isnan(means["p3"])


def test_subject_level_test_counts_subjects_not_slices() -> None:
    # Three patients, 20 slices each. Method A beats B by a patient-specific amount with little
    # slice noise: over 60 slices that looks highly significant, over 3 patients it is not.
    rng = np.random.default_rng(0)
    effects = {"pat_a": 1.0, "pat_b": 1.2, "pat_c": -0.5}
    ids = [s for s in effects for _ in range(20)]
    b = rng.normal(80.0, 5.0, size=len(ids))
    a = b + np.array([effects[s] for s in ids]) + rng.normal(0.0, 0.05, size=len(ids))
    per_slice = paired_ttest(a.tolist(), b.tolist())
    assert per_slice.n == 60 and per_slice.p < 1e-3
    by_subject = paired_ttest_by_subject(a.tolist(), b.tolist(), ids)
    assert by_subject.n == 3
    assert by_subject.p > 0.05
    means_a, means_b = per_subject_means(a.tolist(), ids), per_subject_means(b.tolist(), ids)
    expected = paired_ttest(list(means_a.values()), list(means_b.values()))
    assert by_subject == expected
    assert by_subject.mean_diff == pytest.approx(np.mean(list(effects.values())), abs=0.05)


def test_subject_level_test_drops_nan_pairs_before_averaging() -> None:
    # s1's second slice is nan in A only: B must be averaged without that slice too.
    a = [1.0, NAN, 5.0, 6.0, 2.0, 3.0]
    b = [0.0, 100.0, 4.0, 4.0, 2.0, 2.5]
    ids = ["s1", "s1", "s2", "s2", "s3", "s3"]
    result = paired_ttest_by_subject(a, b, ids)
    assert result == paired_ttest([1.0, 5.5, 2.5], [0.0, 4.0, 2.25])
    # a subject without any complete pair disappears from the test
    gone = paired_ttest_by_subject([NAN, 1.0, 2.0, 4.0], [1.0, 0.0, 1.0, 1.0], ["x", "y", "y", "z"])
    assert gone.n == 2


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: paired_ttest([1.0, 2.0], [1.0]), ["a has 2", "b has 1"]),
        (lambda: per_subject_means([1.0, 2.0], ["s"]), ["values has 2", "subject_ids has 1"]),
        (
            lambda: paired_ttest_by_subject([1.0, 2.0], [1.0, 2.0], ["s", "s", "t"]),
            ["a has 2", "b has 2", "subject_ids has 3"],
        ),
        (lambda: paired_ttest_by_subject([1.0], [1.0, 2.0], ["s", "s"]), ["a has 1", "b has 2"]),
    ],
)
def test_length_mismatch_is_rejected(call, names: list[str]) -> None:
    with pytest.raises(ValueError, match="same length") as info:
        call()
    for name in names:
        assert name in str(info.value)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
            st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
        ),
        min_size=0,
        max_size=12,
    )
)
def test_paired_ttest_agrees_with_scipy_after_nan_dropping(pairs: list[tuple[float, float]]) -> None:
    a = [x for x, _ in pairs] + [NAN]
    b = [y for _, y in pairs] + [1.0]
    result = paired_ttest(a, b)
    assert result.n == len(pairs)
    diffs = np.array([x - y for x, y in pairs])
    if len(pairs) >= 2 and np.ptp(diffs) > 1e-6 * max(1.0, float(np.abs(diffs).max())):
        ref = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
        assert result.t == pytest.approx(float(ref.statistic), rel=1e-9)
        assert result.p == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)

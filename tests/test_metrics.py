"""Known answers and independent cross-checks for ``models.metrics``.

Surface-distance metrics are checked three ways: hand-computed answers on tiny masks, geometric
answers (shifted squares and cubes, concentric discs), and agreement with two independent
implementations on random blobby masks -- MONAI (same boundary definition: the mask minus its
scipy erosion with the default face-connected structure) and SimpleITK's
``HausdorffDistanceImageFilter`` (which measures between *all* foreground voxels, so it is fed the
boundary images; on solid masks it measures something else, shown by the annulus test).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage

from models.metrics import (
    average_surface_distance,
    dice,
    endpoint_error,
    folding_percent,
    hausdorff,
    hausdorff95,
    jacobian_determinant,
    mask_metrics,
    surface_distances,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _box(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _disc(shape: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    centre = [(n - 1) / 2 for n in shape]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _blob(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random mask of several lumps: thresholded Gaussian-filtered noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=3.0)
    return field > np.quantile(field, 0.6)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The documented boundary, written out independently for the SimpleITK comparison."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _monai(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, float, float]:
    pred = torch.as_tensor(a[None, None].astype(np.float32))
    gt = torch.as_tensor(b[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation notice about an internal argument
        hd = compute_hausdorff_distance(pred, gt, spacing=spacing).item()
        hd95 = compute_hausdorff_distance(pred, gt, spacing=spacing, percentile=95).item()
        asd = compute_average_surface_distance(pred, gt, spacing=spacing, symmetric=True).item()
    return hd, hd95, asd


def _sitk_hausdorff(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """SimpleITK (HD, AverageHausdorffDistance) between all foreground voxels of ``a`` and ``b``."""
    images = []
    for mask in (a, b):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK indexes (x, y[, z])
        images.append(image)
    flt = sitk.HausdorffDistanceImageFilter()
    flt.Execute(*images)
    return flt.GetHausdorffDistance(), flt.GetAverageHausdorffDistance()


# --------------------------------------------------------------------------------------------------
# dice
# --------------------------------------------------------------------------------------------------


def test_dice_known_answers() -> None:
    a = _box((8, 8), (0, 0), 4)
    assert dice(a, a) == 100.0
    assert dice(a, _box((8, 8), (4, 4), 4)) == 0.0
    assert dice(a, _box((8, 8), (0, 2), 4)) == pytest.approx(50.0)  # overlap 8 of 16 + 16
    empty = np.zeros((8, 8), dtype=bool)
    assert dice(empty, empty) == 100.0
    assert dice(a, empty) == 0.0


def test_dice_accepts_integer_masks_and_3d() -> None:
    a = _box((6, 6, 6), (0, 0, 0), 2).astype(np.uint8)  # 8 voxels
    b = _box((6, 6, 6), (1, 0, 0), 2).astype(np.int64)  # overlap 4
    assert dice(a, b) == pytest.approx(50.0)


@st.composite
def _mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6))
    return draw(arrays(np.bool_, shape)), draw(arrays(np.bool_, shape))


@settings(max_examples=60, deadline=None)
@given(pair=_mask_pairs())
def test_dice_is_symmetric_and_bounded(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    value = dice(a, b)
    assert value == dice(b, a)
    assert 0.0 <= value <= 100.0


# --------------------------------------------------------------------------------------------------
# surface distances: hand-computed answers
# --------------------------------------------------------------------------------------------------


def test_single_pixels() -> None:
    a, b = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    a[2, 2], b[2, 5] = True, True
    assert hausdorff(a, b, None) == 3.0
    assert hausdorff95(a, b, None) == 3.0
    assert average_surface_distance(a, b, None) == 3.0
    assert hausdorff(a, b, (2.0, 0.5)) == pytest.approx(1.5)


def test_pixel_in_square_distinguishes_pooled_from_averaged_means() -> None:
    # A: the centre pixel; B: the 3x3 square around it, whose boundary is its 8-pixel ring.
    a = np.zeros((7, 7), bool)
    a[3, 3] = True
    b = _box((7, 7), (2, 2), 3)
    d_ab, d_ba = surface_distances(a, b, None)
    np.testing.assert_allclose(d_ab, [1.0])
    np.testing.assert_allclose(np.sort(d_ba), [1.0] * 4 + [math.sqrt(2)] * 4)
    assert hausdorff(a, b) == pytest.approx(math.sqrt(2))
    assert hausdorff95(a, b) == pytest.approx(math.sqrt(2))
    # pooled over all 9 boundary pixels, not (1 + mean(d_ba)) / 2
    assert average_surface_distance(a, b) == pytest.approx((1 + 4 + 4 * math.sqrt(2)) / 9)


def test_boundary_is_face_connected_and_image_edge_is_background() -> None:
    # 5x5 square without its corner pixel: (1, 1) only touches background diagonally -> interior.
    a = _box((7, 7), (0, 0), 5)
    a[0, 0] = False
    d_aa, _ = surface_distances(a, a, None)
    assert d_aa.size == 15  # the 16-pixel ring of the square minus the removed corner
    full = np.ones((4, 4), bool)
    d_full, _ = surface_distances(full, full, None)
    assert d_full.size == 12  # the outer ring: outside the array counts as background


def test_surface_distances_to_empty_mask() -> None:
    a, empty = _box((6, 6), (1, 1), 3), np.zeros((6, 6), bool)
    d_ab, d_ba = surface_distances(a, empty)
    assert d_ab.size == 8 and np.all(np.isinf(d_ab))
    assert d_ba.size == 0


# --------------------------------------------------------------------------------------------------
# surface distances: geometric answers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_shifted_square(k: int) -> None:
    a = _box((24, 20), (4, 6), 6)
    b = _box((24, 20), (4 + k, 6), 6)
    assert hausdorff(a, b, None) == pytest.approx(k)
    assert hausdorff(a, b, (2.0, 1.0)) == pytest.approx(2 * k)  # shift along the 2 mm axis
    assert hausdorff(a, b, (1.0, 3.0)) == pytest.approx(k)  # the 3 mm axis is not involved
    assert 0 < average_surface_distance(a, b) <= hausdorff95(a, b) <= hausdorff(a, b)


@pytest.mark.parametrize("k", [1, 3])
def test_shifted_cube(k: int) -> None:
    a = _box((16, 16, 16), (4, 4, 4), 6)
    b = np.roll(a, k, axis=1)
    assert hausdorff(a, b, None) == pytest.approx(k)
    assert hausdorff(a, b, (1.0, 1.5, 0.7)) == pytest.approx(1.5 * k)


@pytest.mark.parametrize(("radius", "d"), [(6.0, 2.0), (8.0, 4.0), (10.0, 3.0)])
def test_concentric_discs(radius: float, d: float) -> None:
    shape = (41, 41)
    hd = hausdorff(_disc(shape, radius), _disc(shape, radius + d))
    assert abs(hd - d) <= 1.0


def test_identical_and_empty_masks() -> None:
    a = _box((10, 10), (2, 2), 5)
    empty = np.zeros_like(a)
    for metric in (hausdorff, hausdorff95, average_surface_distance):
        assert metric(a, a, None) == 0.0
        assert metric(empty, empty, (1.0, 2.0)) == 0.0
        assert math.isnan(metric(a, empty, None))
        assert math.isnan(metric(empty, a, None))


def test_mask_metrics_of_label_maps() -> None:
    pred = np.zeros((12, 12), np.int64)
    target = np.zeros((12, 12), np.int64)
    pred[2:6, 2:6] = 2
    target[2:6, 3:7] = 2
    pred[8:10, 8:10] = 1  # label 1 only in the prediction
    out = mask_metrics(pred, target, label=2, spacing_mm=(1.0, 2.0))
    assert set(out) == {"dsc", "hd", "hd95", "asd"}
    assert out["dsc"] == pytest.approx(75.0)
    assert out["hd"] == pytest.approx(2.0)  # one pixel along the 2 mm axis
    assert out["hd"] == hausdorff(pred == 2, target == 2, (1.0, 2.0))
    assert out["hd95"] == hausdorff95(pred == 2, target == 2, (1.0, 2.0))
    assert out["asd"] == average_surface_distance(pred == 2, target == 2, (1.0, 2.0))
    one_empty = mask_metrics(pred, target, label=1, spacing_mm=None)
    assert one_empty["dsc"] == 0.0 and all(math.isnan(one_empty[k]) for k in ("hd", "hd95", "asd"))
    both_empty = mask_metrics(pred, target, label=7, spacing_mm=None)
    assert both_empty == {"dsc": 100.0, "hd": 0.0, "hd95": 0.0, "asd": 0.0}


# --------------------------------------------------------------------------------------------------
# surface distances: independent implementations
# --------------------------------------------------------------------------------------------------

_RANDOM_CASES = [
    ((48, 40), (2.0, 1.0), 0),
    ((48, 40), None, 1),
    ((40, 44), (0.7, 1.3), 2),
    ((20, 24, 22), (2.5, 1.0, 0.8), 3),
    ((18, 18, 18), None, 4),
]


@pytest.mark.parametrize(("shape", "spacing", "seed"), _RANDOM_CASES)
def test_matches_monai(shape: tuple[int, ...], spacing: tuple[float, ...] | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = _blob(shape, rng), _blob(shape, rng)
    ref_hd, ref_hd95, ref_asd = _monai(a, b, spacing)  # MONAI computes in float32
    out = mask_metrics(a.astype(np.int64), b.astype(np.int64), label=1, spacing_mm=spacing)
    assert out["hd"] == pytest.approx(ref_hd, rel=1e-5)
    assert out["hd95"] == pytest.approx(ref_hd95, rel=1e-5)
    assert out["asd"] == pytest.approx(ref_asd, rel=1e-5)


@pytest.mark.parametrize(("shape", "spacing", "seed"), _RANDOM_CASES)
def test_matches_simpleitk_on_boundaries(
    shape: tuple[int, ...], spacing: tuple[float, ...] | None, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = _blob(shape, rng), _blob(shape, rng)
    spacing_or_unit = spacing or (1.0,) * len(shape)
    ref_hd, ref_mean_of_means = _sitk_hausdorff(_boundary(a), _boundary(b), spacing_or_unit)
    d_ab, d_ba = surface_distances(a, b, spacing)
    assert hausdorff(a, b, spacing) == pytest.approx(ref_hd, rel=1e-9)
    # SimpleITK's "average Hausdorff distance" averages the two directed means ...
    assert (d_ab.mean() + d_ba.mean()) / 2 == pytest.approx(ref_mean_of_means, rel=1e-9)
    # ... which is not our ASD (both directions pooled) unless the boundaries are equally long.
    pooled = average_surface_distance(a, b, spacing)
    assert pooled == pytest.approx(np.concatenate([d_ab, d_ba]).mean())


def test_solid_mask_hausdorff_differs_when_a_mask_has_a_hole() -> None:
    # A: filled disc of radius 15. B: the same disc with a hole of radius 12 (a 3-pixel annulus).
    # Boundary HD: the hole's rim is ~3 px from A's rim. Solid-voxel HD (what SimpleITK measures on
    # the raw masks): the hole's centre lies in A and is ~12 px from any voxel of B.
    shape = (41, 41)
    a = _disc(shape, 15.0)
    b = a & ~_disc(shape, 12.0)
    ours = hausdorff(a, b)
    solid, _ = _sitk_hausdorff(a, b, (1.0, 1.0))
    assert ours < 5.0 < 11.0 < solid
    assert ours == pytest.approx(_sitk_hausdorff(_boundary(a), _boundary(b), (1.0, 1.0))[0])


def test_solid_and_boundary_hausdorff_agree_for_nested_discs() -> None:
    # Without holes and with A inside B, every voxel of B outside A has its farthest-from-A
    # representative on B's rim, so both definitions give the same value here.
    shape = (41, 41)
    a, b = _disc(shape, 7.0), _disc(shape, 11.0)
    assert hausdorff(a, b) == pytest.approx(_sitk_hausdorff(a, b, (1.0, 1.0))[0])


# --------------------------------------------------------------------------------------------------
# Jacobian determinant and folding
# --------------------------------------------------------------------------------------------------


def _linear_disp(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    coords = np.indices(shape, dtype=np.float64)  # (ndim, *shape)
    return np.einsum("ij,j...->i...", matrix, coords)


@pytest.mark.parametrize("shape", [(9, 7), (5, 6, 7)])
def test_zero_displacement_has_unit_determinant(shape: tuple[int, ...]) -> None:
    disp = np.zeros((len(shape), *shape))
    det = jacobian_determinant(disp)
    assert det.shape == shape
    np.testing.assert_allclose(det, 1.0)
    assert folding_percent(disp) == 0.0


@pytest.mark.parametrize(
    "matrix",
    [
        np.array([[0.3, -0.2], [0.1, -0.4]]),
        np.array([[0.2, 0.1, -0.3], [0.0, -0.5, 0.2], [0.4, 0.1, 0.1]]),
    ],
)
def test_linear_displacement_gives_exact_determinant(matrix: np.ndarray) -> None:
    shape = (8, 9) if len(matrix) == 2 else (6, 7, 5)
    det = jacobian_determinant(_linear_disp(matrix, shape))
    np.testing.assert_allclose(det, np.linalg.det(np.eye(len(matrix)) + matrix), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(10, 8), (6, 5, 4)])
def test_reflection_folds_everywhere(shape: tuple[int, ...]) -> None:
    matrix = np.zeros((len(shape), len(shape)))
    matrix[0, 0] = -2.0  # x0 -> x0 - 2 x0 = -x0: a reflection
    disp = _linear_disp(matrix, shape)
    np.testing.assert_allclose(jacobian_determinant(disp), -1.0)
    assert folding_percent(disp) == 100.0


def test_partial_folding_percentage() -> None:
    disp = np.zeros((2, 10, 10))
    disp[0] = -2.0 * np.indices((10, 10))[0] * (np.arange(10) < 5)  # fold only columns 0..4
    assert folding_percent(disp) == pytest.approx(50.0)


# --------------------------------------------------------------------------------------------------
# endpoint error
# --------------------------------------------------------------------------------------------------


def test_endpoint_error_constant_offset_and_spacing() -> None:
    gt = np.zeros((2, 6, 7))
    disp = np.zeros((2, 6, 7))
    disp[0], disp[1] = 3.0, 4.0
    assert endpoint_error(disp, gt) == pytest.approx(5.0)
    assert endpoint_error(disp, gt, spacing_mm=(2.0, 1.0)) == pytest.approx(math.hypot(6.0, 4.0))
    disp3 = np.zeros((3, 4, 4, 4))
    disp3[2] = 2.0
    assert endpoint_error(disp3, np.zeros_like(disp3), spacing_mm=(9.0, 9.0, 0.5)) == pytest.approx(1.0)


def test_endpoint_error_mask() -> None:
    gt = np.zeros((2, 4, 4))
    disp = np.zeros((2, 4, 4))
    disp[1, :2] = 1.0  # error 1 in the top half, 0 in the bottom half
    assert endpoint_error(disp, gt) == pytest.approx(0.5)
    top = np.zeros((4, 4), bool)
    top[:2] = True
    assert endpoint_error(disp, gt, mask=top) == pytest.approx(1.0)
    assert endpoint_error(disp, gt, mask=~top) == 0.0
    assert math.isnan(endpoint_error(disp, gt, mask=np.zeros((4, 4), bool)))


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def test_mask_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(4, 5\)"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(4, 5\)"):
        hausdorff(np.zeros((4, 4)), np.zeros((4, 5)), None)
    with pytest.raises(ValueError, match="2D or 3D"):
        dice(np.zeros(4), np.zeros(4))


def test_spacing_length_is_checked() -> None:
    a = _box((6, 6), (1, 1), 2)
    with pytest.raises(ValueError, match="2 values .* got 3"):
        hausdorff(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2 values .* got 3"):
        hausdorff(np.zeros((6, 6)), np.zeros((6, 6)), (1.0, 1.0, 1.0))  # even with empty masks
    with pytest.raises(ValueError, match="positive"):
        average_surface_distance(a, a, (1.0, 0.0))
    with pytest.raises(ValueError, match="3 values .* got 2"):
        endpoint_error(np.zeros((3, 2, 2, 2)), np.zeros((3, 2, 2, 2)), spacing_mm=(1.0, 1.0))


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 8, 8, 8), (2, 8), (4, 2, 2, 2, 2)])
def test_bad_displacement_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(ndim, \*spatial\).*" + re.escape(str(shape))):
        jacobian_determinant(np.zeros(shape))


def test_endpoint_error_shape_checks() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4, 4\) and \(2, 4, 5\)"):
        endpoint_error(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\(4, 4\), got \(4, 5\)"):
        endpoint_error(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), mask=np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="disp_gt"):
        endpoint_error(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))


def test_jacobian_needs_two_samples_per_axis() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        jacobian_determinant(np.zeros((2, 1, 5)))

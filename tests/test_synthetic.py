"""Tests of the synthetic cardiac phantom: determinism, anatomy, exact motion and nuisances."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from models.data.pairs import MYOCARDIUM, PairSample
from models.data.synthetic import DROPOUT_TAGS, PhantomConfig, make_phantom_dataset, make_phantom_pair
from models.warp import warp

BLOOD = 1
CLEAN = {"noise": 0.0}  # no nuisance at all: the only difference between frames is the motion


def _gt_warp(pair: PairSample, image: np.ndarray, mode: str = "linear") -> np.ndarray:
    """``image`` (the ED grid) resampled at ``x + disp_gt(x)`` with ``models.warp``."""
    moving = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return warp(moving, torch.from_numpy(pair.disp_gt)[None], mode)[0, 0].numpy()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _jacobian_det(disp: np.ndarray) -> np.ndarray:
    """det(I + grad disp) by central differences, ``spatial`` shape."""
    ndim = disp.shape[0]
    grads = [np.gradient(disp[k].astype(np.float64)) for k in range(ndim)]
    jac = np.stack([np.stack([grads[k][j] + (k == j) for j in range(ndim)]) for k in range(ndim)])
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def _interior(ndim: int, margin: int = 4) -> tuple[slice, ...]:
    return (slice(margin, -margin),) * ndim


def _arrays(pair: PairSample) -> list[np.ndarray]:
    return [pair.moving, pair.fixed, pair.moving_mask, pair.fixed_mask, pair.disp_gt]


# ---------------------------------------------------------------------------------------------- #
# Determinism and format


def test_same_config_and_index_give_identical_pairs() -> None:
    cfg = PhantomConfig(dims=2, size=48, covisibility=0.5, inconsistency=0.5)
    for a, b in zip(_arrays(make_phantom_pair(cfg, 3)), _arrays(make_phantom_pair(cfg, 3))):
        np.testing.assert_array_equal(a, b)


def test_seed_and_index_change_the_images() -> None:
    base = make_phantom_pair(PhantomConfig(dims=2, size=48, seed=0), 1)
    other_seed = make_phantom_pair(PhantomConfig(dims=2, size=48, seed=1), 1)
    other_index = make_phantom_pair(PhantomConfig(dims=2, size=48, seed=0), 2)
    for other in (other_seed, other_index):
        assert not np.array_equal(base.moving, other.moving)
        assert not np.array_equal(base.disp_gt, other.disp_gt)


def test_pair_does_not_depend_on_dataset_size() -> None:
    small = make_phantom_dataset(PhantomConfig(dims=2, size=32, n=4))
    large = make_phantom_dataset(PhantomConfig(dims=2, size=32, n=8))
    assert len(small) == 4 and len(large) == 8
    for a, b in zip(small, large[:4]):
        assert a.pair_id == b.pair_id
        for x, y in zip(_arrays(a), _arrays(b)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("dims", "size"), [(2, 48), (3, 24)])
def test_shapes_dtypes_and_labels(dims: int, size: int) -> None:
    pairs = make_phantom_dataset(PhantomConfig(dims=dims, size=size, n=3, seed=5))
    for index, pair in enumerate(pairs):
        shape = (size,) * dims
        assert pair.moving.shape == pair.fixed.shape == pair.moving_mask.shape == shape
        assert pair.disp_gt.shape == (dims, *shape)
        assert pair.moving.dtype == pair.fixed.dtype == pair.disp_gt.dtype == np.float32
        assert pair.moving_mask.dtype == pair.fixed_mask.dtype == np.uint8
        assert pair.pair_id == pair.subject_id == f"phantom-{dims}d-s5-{index:04d}"
        assert re.fullmatch(r"phantom-[23]d-s\d+-\d{4}", pair.pair_id)
        assert pair.spacing_mm == (1.5,) * dims
        for image in (pair.moving, pair.fixed):
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert image.std() > 0.03  # not a flat image
            assert len(np.unique(image)) > 100  # anti-aliased and textured, not binary
        for mask in (pair.moving_mask, pair.fixed_mask):
            assert set(np.unique(mask)) == {0, BLOOD, MYOCARDIUM}


def test_contrast_is_cine_like() -> None:
    pair = make_phantom_pair(PhantomConfig(dims=2, size=64, noise=0.0), 0)
    means = [float(pair.moving[pair.moving_mask == label].mean()) for label in (0, MYOCARDIUM, BLOOD)]
    tissue, myo, blood = means
    assert myo < tissue < blood
    assert 0.15 < myo < 0.35 and 0.35 < tissue < 0.55 and 0.65 < blood < 0.95


def test_invalid_config_is_rejected() -> None:
    for bad in ({"dims": 4}, {"size": 8}, {"covisibility": 1.5}, {"noise": -0.1}, {"seed": -1}):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)
    with pytest.raises(ValueError):
        make_phantom_pair(PhantomConfig(), -1)


# ---------------------------------------------------------------------------------------------- #
# Anatomy and motion


def _equivalent_radii(mask: np.ndarray) -> tuple[float, float]:
    """Radii of the discs with the blood pool's and the whole ventricle's areas (2D)."""
    inner = np.sqrt((mask == BLOOD).sum() / np.pi)
    outer = np.sqrt((mask > 0).sum() / np.pi)
    return float(inner), float(outer)


def test_2d_systole_contracts_and_thickens_the_wall() -> None:
    for pair in make_phantom_dataset(PhantomConfig(dims=2, size=64, n=4, noise=0.0)):
        ed_blood, es_blood = (pair.moving_mask == BLOOD).sum(), (pair.fixed_mask == BLOOD).sum()
        assert es_blood < 0.85 * ed_blood
        ed_myo, es_myo = (pair.moving_mask == MYOCARDIUM).sum(), (pair.fixed_mask == MYOCARDIUM).sum()
        assert abs(es_myo / ed_myo - 1.0) < 0.08  # area-preserving radial map
        ed_in, ed_out = _equivalent_radii(pair.moving_mask)
        es_in, es_out = _equivalent_radii(pair.fixed_mask)
        assert es_out - es_in > ed_out - ed_in + 0.3


def test_3d_systole_contracts_and_keeps_the_wall_volume() -> None:
    for pair in make_phantom_dataset(PhantomConfig(dims=3, size=32, n=2, noise=0.0)):
        assert (pair.fixed_mask == BLOOD).sum() < 0.8 * (pair.moving_mask == BLOOD).sum()
        ed_myo, es_myo = (pair.moving_mask == MYOCARDIUM).sum(), (pair.fixed_mask == MYOCARDIUM).sum()
        assert abs(es_myo / ed_myo - 1.0) < 0.1
        # The base descends: the ES ventricle ends lower on the long axis (axis 0).
        ed_top = np.nonzero((pair.moving_mask > 0).any(axis=(1, 2)))[0].max()
        es_top = np.nonzero((pair.fixed_mask > 0).any(axis=(1, 2)))[0].max()
        assert es_top < ed_top


def test_displacement_magnitude_scales_and_decays() -> None:
    pair = make_phantom_pair(PhantomConfig(dims=2, size=64, noise=0.0), 0)
    magnitude = np.linalg.norm(pair.disp_gt, axis=0)
    assert 1.5 < magnitude[pair.fixed_mask == MYOCARDIUM].max() < 5.0
    corners = magnitude[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() < 1e-3  # nothing moves far from the heart
    strong = make_phantom_pair(PhantomConfig(dims=2, size=64, noise=0.0, motion=2.0), 0)
    assert np.linalg.norm(strong.disp_gt, axis=0).max() > 1.5 * magnitude.max()
    big = make_phantom_pair(PhantomConfig(dims=2, size=128, noise=0.0), 0)
    assert np.linalg.norm(big.disp_gt, axis=0).max() > 1.5 * magnitude.max()  # scales with size


def test_zero_motion_gives_identical_frames() -> None:
    pair = make_phantom_pair(PhantomConfig(dims=2, size=48, noise=0.0, motion=0.0), 2)
    assert np.abs(pair.disp_gt).max() == 0.0
    np.testing.assert_allclose(pair.fixed, pair.moving, atol=1e-6)
    np.testing.assert_array_equal(pair.fixed_mask, pair.moving_mask)


@pytest.mark.parametrize(("dims", "size", "motion"), [(2, 64, 1.0), (2, 64, 2.0), (3, 32, 1.0), (3, 32, 2.0)])
def test_motion_is_invertible(dims: int, size: int, motion: float) -> None:
    for pair in make_phantom_dataset(PhantomConfig(dims=dims, size=size, n=3, motion=motion)):
        assert _jacobian_det(pair.disp_gt).min() > 0.2


@pytest.mark.parametrize(("dims", "size"), [(2, 64), (3, 32)])
def test_gt_warp_reproduces_the_fixed_frame(dims: int, size: int) -> None:
    for pair in make_phantom_dataset(PhantomConfig(dims=dims, size=size, n=3, **CLEAN)):
        inner = _interior(dims)
        error = np.abs(_gt_warp(pair, pair.moving) - pair.fixed)[inner].mean()
        assert error < 0.02
        assert np.abs(pair.moving - pair.fixed)[inner].mean() > 5 * error  # the frames do differ
        labels = _gt_warp(pair, pair.moving_mask, mode="nearest")
        # At 32**3 the ES cavity is ~5 voxels across and the wall 2-3 voxels thick, so nearest
        # labels lose more there: check the wall and the whole ventricle, with a lower bar.
        regions = {"wall": lambda m: m == MYOCARDIUM}
        regions.update({"blood": lambda m: m == BLOOD} if dims == 2 else {"ventricle": lambda m: m > 0})
        for name, region in regions.items():
            warped = _dice(region(labels), region(pair.fixed_mask))
            assert warped > (0.9 if dims == 2 else 0.85), (pair.pair_id, name, warped)
            assert warped > _dice(region(pair.moving_mask), region(pair.fixed_mask)) + 0.02


# ---------------------------------------------------------------------------------------------- #
# Nuisances


def test_noise_changes_only_the_images() -> None:
    clean = make_phantom_pair(PhantomConfig(dims=2, size=48, noise=0.0), 0)
    noisy = make_phantom_pair(PhantomConfig(dims=2, size=48, noise=0.05), 0)
    np.testing.assert_array_equal(clean.disp_gt, noisy.disp_gt)
    np.testing.assert_array_equal(clean.fixed_mask, noisy.fixed_mask)
    for a, b in ((clean.moving, noisy.moving), (clean.fixed, noisy.fixed)):
        assert 0.03 < float(np.std(b - a)) < 0.07
    # Independent per frame: the two noise realisations are uncorrelated.
    diff_m, diff_f = noisy.moving - clean.moving, noisy.fixed - clean.fixed
    assert abs(np.corrcoef(diff_m.ravel(), diff_f.ravel())[0, 1]) < 0.1


def test_covisibility_drops_signal_in_one_frame_only() -> None:
    for index in range(4):
        plain = make_phantom_pair(PhantomConfig(dims=2, size=48, covisibility=0.0, **CLEAN), index)
        pair = make_phantom_pair(PhantomConfig(dims=2, size=48, covisibility=1.0, **CLEAN), index)
        dark = [int((image < 0.06).sum()) for image in (pair.moving, pair.fixed)]
        assert min(dark) == 0 and max(dark) > 20, dark
        assert (plain.moving < 0.06).sum() == 0 and (plain.fixed < 0.06).sum() == 0
        # The anatomy is unchanged: the masks still describe the heart under the signal loss.
        np.testing.assert_array_equal(plain.moving_mask, pair.moving_mask)
        np.testing.assert_array_equal(plain.fixed_mask, pair.fixed_mask)
        lost = pair.moving if dark[0] else pair.fixed
        mask = pair.moving_mask if dark[0] else pair.fixed_mask
        assert (mask[lost < 0.06] > 0).any()  # the blob touches the heart
        # The tag names the frame that lost signal, so evaluations can split scores by nuisance.
        assert pair.tags == (DROPOUT_TAGS[0 if dark[0] else 1],) and plain.tags == ()


def test_covisibility_probability_is_respected() -> None:
    cfg = PhantomConfig(dims=2, size=32, n=40, covisibility=0.5, **CLEAN)
    pairs = make_phantom_dataset(cfg)
    hits = sum(bool((p.moving < 0.06).any() or (p.fixed < 0.06).any()) for p in pairs)
    assert 8 <= hits <= 32
    assert sum(bool(p.tags) for p in pairs) == hits


def test_inconsistency_changes_intensity_statistics_between_frames() -> None:
    residuals, gains = [], []
    for strength in (0.0, 1.0):
        pair = make_phantom_pair(PhantomConfig(dims=2, size=48, inconsistency=strength, **CLEAN), 1)
        inner = _interior(2)
        residuals.append(float(((_gt_warp(pair, pair.moving) - pair.fixed)[inner] ** 2).mean()))
        tissue = pair.fixed_mask == 0
        gains.append(float(pair.fixed[tissue].mean() / pair.moving[pair.moving_mask == 0].mean()))
    assert residuals[1] > 10 * residuals[0] + 1e-3
    assert abs(gains[0] - 1.0) < 0.03 and abs(gains[1] - 1.0) > 0.03


@pytest.mark.parametrize(("noise", "limit"), [(0.03, 0.02), (0.08, 0.04)])
def test_residual_after_perfect_registration_is_calibrated(noise: float, limit: float) -> None:
    for dims, size in ((2, 64), (3, 24)):
        for pair in make_phantom_dataset(PhantomConfig(dims=dims, size=size, n=2, noise=noise)):
            residual = float(((_gt_warp(pair, pair.moving) - pair.fixed) ** 2).mean())
            assert residual < limit

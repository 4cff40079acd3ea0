"""Outside the model's window the field decays to the identity without a step (issue: up to 2 mm)."""

import numpy as np
import pytest
import torch

from models.metrics import jacobian_determinant
from models.model_grid import ModelGrid, field_to_native, taper_outside


def smooth_field(shape, amplitude, seed=0):
    """A smooth random displacement ``(1, ndim, *shape)`` in voxels, peak ``amplitude``."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(1, len(shape), *[4] * len(shape))).astype(np.float32))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True).numpy()
    return field * amplitude / np.abs(field).max()


def largest_step(field, region=None):
    part = field if region is None else field[(slice(None), slice(None), *region)]
    return max(np.abs(np.diff(part, axis=2 + k)).max() for k in range(field.ndim - 2))


@pytest.mark.parametrize("native, window, center", [
    ((160, 140), (48, 40), (40.0, 30.0)),
    ((40, 36, 12), (20, 18, 12), (18.0, 20.0, 5.5)),
], ids=["2d", "3d"])
def test_no_step_at_the_window_edge_and_the_map_stays_invertible(native, window, center):
    grid = ModelGrid(center, window, window)
    disp = torch.from_numpy(smooth_field(window, amplitude=1.4))  # about 2 mm at 1.5 mm voxels
    field = field_to_native(disp, grid, native)
    inside = tuple(slice(round(c) - w // 2, round(c) - w // 2 + w) for c, w in zip(center, window))
    np.testing.assert_array_equal(field[(slice(None), slice(None), *inside)], disp.numpy())
    assert largest_step(field) <= largest_step(field, inside) + 1e-6
    assert jacobian_determinant(field[0]).min() > 0
    if len(native) == 2:  # room for the whole decay (at most 64 voxels): the identity beyond it
        assert np.all(field[:, :, 130:, 110:] == 0)


def test_before_the_taper_the_edge_had_a_step():
    """What the taper removes: pasting alone jumps from the edge value to 0."""
    native, window = (64, 64), (32, 32)
    field = smooth_field(window, amplitude=1.4, seed=1)
    pasted = np.zeros((1, 2, *native), np.float32)
    pasted[:, :, 16:48, 16:48] = field
    assert largest_step(pasted) > 2 * largest_step(pasted, (slice(16, 48), slice(16, 48)))
    tapered = taper_outside(pasted, (slice(16, 48), slice(16, 48)))
    assert largest_step(tapered) <= largest_step(tapered, (slice(16, 48), slice(16, 48))) + 1e-6


def test_a_window_covering_the_image_is_left_as_it_is():
    field = smooth_field((16, 16), 1.0)
    assert taper_outside(field, (slice(0, 16), slice(0, 16))) is field

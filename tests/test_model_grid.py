"""Mapping a pair to the model's grid and the field back: windows, resizing, pasting."""

import numpy as np
import pytest
import torch

from models.data.crop import crop_or_pad, paste_window
from models.model_grid import field_to_native, plan_model_grid, to_model_grid


def test_plan_without_spacing_uses_model_voxels_and_image_centre():
    grid = plan_model_grid((50, 40), None, (32, 32), None, None)
    assert grid.window == (32, 32) and grid.center == (25.0, 20.0)  # windows start on whole voxels


def test_plan_matches_the_physical_field_of_view():
    # Model trained on 1.5 mm pixels; this image has 0.75 mm x 3 mm pixels: window of 64 x 16 voxels.
    grid = plan_model_grid((100, 30), (0.75, 3.0), (32, 32), (1.5, 1.5), (50.0, 15.0))
    assert grid.window == (64, 16) and grid.center == (50.0, 15.0)


def test_an_image_that_fits_is_centred_whatever_the_region():
    # The region's centre is ignored when the whole image fits: no voxel is lost, no shift added.
    grid = plan_model_grid((40, 30), None, (64, 64), None, (5.0, 25.0))
    assert grid.center == (19.5, 14.5)


def test_the_window_is_pulled_inside_the_image_near_an_edge():
    grid = plan_model_grid((100, 100), None, (32, 32), None, (3.0, 97.0))
    assert grid.center == (16.0, 84.0)  # covers rows 0-31 and columns 68-99: no padding
    window = to_model_grid(np.ones((1, 100, 100), np.float32), grid)
    assert torch.all(window == 1.0)


def test_plan_without_model_shape_takes_the_whole_grid():
    grid = plan_model_grid((20, 30, 10), (1, 1, 1), None, None, (3.0, 3.0, 3.0))
    assert grid.window == grid.model_shape == (20, 30, 10)
    with pytest.raises(ValueError, match="differ in dimension"):
        plan_model_grid((20, 30), None, (16, 16, 16), None, None)


def test_paste_window_inverts_crop_or_pad_on_the_overlap():
    array = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    window = crop_or_pad(array, (1.0, 7.0), (4, 6))  # partly outside: padded
    back = paste_window(window, (1.0, 7.0), array.shape)
    inside = back != 0
    assert np.array_equal(back[inside], array[inside]) and inside.sum() == 3 * 5  # rows 0-2, columns 4-8
    channels = paste_window(np.stack([window, window]), (1.0, 7.0), (2, 7, 9), leading=1)
    assert np.array_equal(channels[1], back)


def test_to_model_grid_resizes_the_window():
    image = np.zeros((1, 40, 40), np.float32)
    image[0, 10:30, 10:30] = 1.0
    grid = plan_model_grid((40, 40), (0.5, 0.5), (20, 20), (1.0, 1.0), None)
    out = to_model_grid(image, grid)
    assert out.shape == (1, 1, 20, 20) and grid.window == (40, 40)
    assert out[0, 0, 10, 10] == 1.0 and out[0, 0, 0, 0] == 0.0


def test_field_back_on_native_grid_is_rescaled_and_pasted():
    grid = plan_model_grid((50, 50), (0.5, 0.5), (16, 16), (1.0, 1.0), (25.0, 25.0))
    assert grid.window == (32, 32)
    disp = torch.ones(1, 2, 16, 16)  # one model voxel = 31/15 native voxels
    native = field_to_native(disp, grid, (50, 50))
    assert native.shape == (1, 2, 50, 50)
    assert np.allclose(native[0, :, 9:41, 9:41], 31 / 15)  # window rows 25-16 .. 25+15
    # Outside the window the field decays towards the identity (models.model_grid.taper_outside): it
    # falls monotonically away from the window, with no step at its edge.
    column = native[0, 0, :, 25]
    assert np.all(np.diff(column[:10]) >= 0) and np.all(np.diff(column[40:]) <= 0)
    assert 0 < column[0] < column[8] < 31 / 15 and column[8] > 0.95 * 31 / 15

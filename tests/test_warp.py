"""Spatial transformer: known answers on tiny grids and a cross-check with MONAI's Warp."""

import pytest
import torch
from monai.networks.blocks import Warp

from models.warp import SpatialTransformer, identity_grid, warp


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6)])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_zero_field_is_identity(shape, mode):
    image = torch.rand(2, 3, *shape)
    assert torch.allclose(warp(image, torch.zeros(2, len(shape), *shape), mode), image, atol=1e-6)


def test_integer_shift_known_values_2d():
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    disp = torch.zeros(1, 2, 3, 4)
    disp[:, 1] = 1.0  # sample one column to the right: out[i, j] = in[i, j + 1]
    out = warp(image, disp)[0, 0]
    assert torch.equal(out[:, :3], image[0, 0, :, 1:])
    assert torch.equal(out[:, 3], torch.zeros(3))  # outside the image is zero, not the border


def test_half_voxel_shift_interpolates_3d():
    image = torch.zeros(1, 1, 2, 2, 2)
    image[0, 0, 1] = 4.0
    disp = torch.zeros(1, 3, 2, 2, 2)
    disp[:, 0] = 0.5
    assert torch.allclose(warp(image, disp)[0, 0, 0], torch.full((2, 2), 2.0))


def test_nearest_keeps_label_values():
    labels = torch.randint(0, 4, (1, 1, 8, 8)).float()
    out = warp(labels, torch.rand(1, 2, 8, 8) * 3 - 1.5, mode="nearest")
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0.0}


def test_identity_grid_channels_follow_axes():
    grid = identity_grid((2, 3))
    assert grid.shape == (2, 2, 3)
    assert grid[0, 1, 2] == 1 and grid[1, 1, 2] == 2


@pytest.mark.parametrize("shape", [(9, 7), (5, 6, 7)])
def test_matches_monai_warp_with_zero_padding(shape):
    torch.manual_seed(0)
    image, disp = torch.rand(2, 1, *shape), torch.randn(2, len(shape), *shape) * 2
    reference = Warp(mode="bilinear", padding_mode="zeros")(image, disp)
    assert torch.allclose(warp(image, disp), reference, atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="mode must be one of"):
        warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), mode="cubic")
    with pytest.raises(ValueError, match="disp must be"):
        warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="differ in rank"):
        warp(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="mode must be one of"):
        SpatialTransformer("bicubic")

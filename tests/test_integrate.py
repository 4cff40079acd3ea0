"""Scaling and squaring, field resizing, and the cross-check with MONAI's DVF2DDF."""

import pytest
import torch
from monai.networks.blocks import DVF2DDF

from models.integrate import VelocityIntegrator, integrate_velocity, resize_field


def test_zero_velocity_gives_zero_displacement():
    assert torch.equal(integrate_velocity(torch.zeros(1, 2, 8, 8), 7), torch.zeros(1, 2, 8, 8))


@pytest.mark.parametrize("ndim", [2, 3])
def test_small_constant_velocity_integrates_to_that_translation(ndim):
    shape = (12,) * ndim
    vel = torch.zeros(1, ndim, *shape)
    vel[:, 0], vel[:, -1] = 0.8, -0.4
    disp = integrate_velocity(vel, 7)
    # Away from the border (where zero padding is sampled) the flow of a constant field is the field.
    # (Zero padding enters at the border and creeps inwards a little with each squaring.)
    inner = (slice(None), slice(None)) + (slice(4, -4),) * ndim
    assert torch.allclose(disp[inner], vel[inner], atol=1e-5)


def test_zero_steps_returns_the_field():
    vel = torch.randn(1, 2, 6, 6)
    assert torch.equal(integrate_velocity(vel, 0), vel)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        integrate_velocity(vel, -1)


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_matches_monai_dvf2ddf(shape):
    torch.manual_seed(0)
    vel = torch.randn(1, len(shape), *shape)
    reference = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")(vel)
    assert torch.allclose(integrate_velocity(vel, 7), reference, atol=1e-5)


def test_resize_rescales_values_with_corner_alignment():
    field = torch.ones(1, 2, 5, 9)
    out = resize_field(field, (9, 17))
    assert out.shape == (1, 2, 9, 17)
    assert torch.allclose(out[0, 0], torch.full((9, 17), 2.0))  # (9-1)/(5-1)
    assert torch.allclose(out[0, 1], torch.full((9, 17), 2.0))  # (17-1)/(9-1)
    assert resize_field(field, (5, 9)) is field
    with pytest.raises(ValueError, match="does not match"):
        resize_field(field, (4, 4, 4))


def test_integrator_works_at_low_resolution_and_returns_full_size():
    integrator = VelocityIntegrator(steps=7, downsize=2)
    assert integrator.low_res_shape((32, 30)) == (16, 15)
    vel = torch.zeros(1, 2, 16, 15)
    vel[:, 1] = 0.5
    disp = integrator(vel, (32, 30))
    assert disp.shape == (1, 2, 32, 30)
    assert torch.allclose(disp[0, 1, 8:-8, 8:-8], torch.full((16, 14), 0.5 * 29 / 14), atol=1e-4)

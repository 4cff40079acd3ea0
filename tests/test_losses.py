"""The loss terms of SPEC Eqs. 1-9 on hand-computed examples, with their stop-gradients."""

import math

import pytest
import torch

from models.losses import (
    background_mask,
    displacement_data_term,
    mean_squared_gradient,
    momentum_gamma,
    momentum_update,
    scoring_activation,
    scoring_loss,
    smoothness,
    squared_residual,
)


def test_mean_squared_gradient_of_ramps():
    ramp = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 5)  # slope 1 along H, 0 along W
    assert mean_squared_gradient(ramp).item() == pytest.approx(0.5)
    volume = 2 * torch.arange(3.0).view(1, 1, 1, 1, 3).expand(1, 2, 3, 3, 3)  # slope 2 along the last axis
    assert mean_squared_gradient(volume).item() == pytest.approx(4 / 3)


def test_smoothness_multiplies_by_int_downsize():
    vel = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 2, 4, 4)
    assert smoothness(vel, 2).item() == pytest.approx(2 * 0.5)


def test_background_mask_and_residual():
    moving = torch.tensor([[[[0.0, 0.5], [0.0, 0.0]]]])
    fixed = torch.tensor([[[[0.0, 0.0], [0.2, 0.0]]]])
    assert background_mask(moving, fixed).flatten().tolist() == [0, 1, 1, 0]
    assert torch.allclose(squared_residual(moving, fixed).flatten(), torch.tensor([0.0, 0.25, 0.04, 0.0]))


def test_data_term_is_a_mean_over_the_whole_grid():
    residual = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    bg = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    score = torch.tensor([[[[0.5, 1.0], [1.0, 0.25]]]])
    assert displacement_data_term(residual, bg).item() == pytest.approx((1 + 2 + 4) / 4)
    assert displacement_data_term(residual, bg, score).item() == pytest.approx((0.5 + 2 + 1) / 4)


def test_data_term_stops_the_gradient_of_the_scores():
    residual = torch.rand(1, 1, 4, 4, requires_grad=True)
    score = torch.rand(1, 1, 4, 4, requires_grad=True)
    displacement_data_term(residual, torch.ones_like(residual), score).backward()
    assert score.grad is None and residual.grad is not None


def test_scoring_loss_terms_and_stop_gradient():
    score = torch.tensor([[[[0.5, 1.0], [0.0, 0.5]]]], requires_grad=True)
    residual = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]], requires_grad=True)
    bg = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    loss = scoring_loss(score, residual, bg, m_t=2.0, alpha=0.1)
    assert loss.scs.item() == pytest.approx((0.1 + 0.4 + 0.0) / 4)
    assert loss.reg.item() == pytest.approx((0.25 + 0.0 + 1.0) / 4)
    # TV: squared differences along H: (0.5-0)², (1-0.5)²; along W: (0.5-1)², (0-0.5)². Both means 0.25.
    assert loss.tv.item() == pytest.approx(2.0 * 0.25)
    assert loss.total.item() == pytest.approx(loss.scs.item() + 0.1 * loss.reg.item() + loss.tv.item())
    loss.total.backward()
    assert residual.grad is None and score.grad is not None


def test_activation_is_clamped_cosine():
    assert scoring_activation(0.0, 50) == 1.0
    assert scoring_activation(0.005, 50) == pytest.approx(math.cos(math.pi * 0.25))
    assert scoring_activation(0.02, 50) == 0.0  # cos would be -1: clamped


def test_gamma_schedule():
    assert [momentum_gamma(e) for e in (0, 1, 3)] == [0.0, 0.5, 0.75]
    assert momentum_gamma(99) == pytest.approx(0.99)
    assert momentum_gamma(500) == 0.99


def test_momentum_recurrence_hand_computed():
    # κ = 50, β = 1.5. Epoch 0: γ = 0, μ = 0.004 -> a = cos(0.2π) = 0.809017, m = 1.5 · 0.809017.
    m1 = momentum_update(0.0, 0.004, epoch=0, kappa=50, beta=1.5)
    assert m1 == pytest.approx(1.2135255, abs=1e-6)
    # Epoch 1: γ = 0.5, μ = 0.002 -> a = cos(0.1π) = 0.951057; m = 0.5·1.2135255 + 0.5·1.5·0.951057.
    m2 = momentum_update(m1, 0.002, epoch=1, kappa=50, beta=1.5)
    assert m2 == pytest.approx(0.5 * 1.2135255 + 0.75 * 0.9510565, abs=1e-6)
    # Epoch 3: γ = 0.75, μ = 0.012 -> a = max(0, cos(0.6π)) = 0: only the decay remains.
    assert momentum_update(m2, 0.012, epoch=3, kappa=50, beta=1.5) == pytest.approx(0.75 * m2)

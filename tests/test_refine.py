"""Test-time refinement (models/refine.py) on phantom pairs with known answers."""

import numpy as np
import pytest
import torch

from models.artifact import LoadedModel
from models.data.synthetic import PhantomConfig, make_phantom_pair
from models.inference import predict_deformation, stack_pairs
from models.intensity import IntensityConfig
from models.io.image import LABEL, Geometry, Image
from models.losses import background_mask, smoothness
from models.networks.estimator import Deformation, EstimatorConfig
from models.networks.registry import build_estimator
from models.refine import (
    RefineConfig,
    estimate_and_refine,
    image_term,
    local_ncc,
    refine,
    refine_config,
    sample_smoothness,
)
from models.register import register_images


def poor_estimator(ndim: int = 2, int_steps: int = 7):
    """A tiny random estimator whose field is a shift of a few voxels plus noise: far from right."""
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(ndim=ndim, enc=(4, 4), dec=(4, 4, 4), int_steps=int_steps))
    with torch.no_grad():
        estimator.flow.weight.normal_(0.0, 0.3)
        estimator.flow.bias.copy_(torch.tensor([1.0, -0.75, 0.5][:ndim]))
    return estimator.eval()


def phantom_batch(n: int = 2, size: int = 32, dims: int = 2):
    pairs = [make_phantom_pair(PhantomConfig(dims=dims, size=size, seed=3), i) for i in range(n)]
    return pairs, *stack_pairs(pairs, IntensityConfig())


def objective(moving, fixed, disp, vel, config, downsize):
    """The refinement objective per sample, computed here from the public pieces."""
    from models.warp import warp

    bg = background_mask(moving, fixed)
    return image_term(warp(moving, disp), fixed, bg, config), sample_smoothness(vel, downsize)


def test_refinement_lowers_its_objective_below_the_network_and_the_identity():
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch()
    config = RefineConfig(steps=40)
    network = predict_deformation(estimator, moving, fixed)
    result = refine(estimator, moving, fixed, network, config)
    record = result.record
    assert record["steps_done"] == 40 and record["stopped_by"] == "steps" and record["improved"] == 2
    assert record["parametrisation"] == "velocity"
    before, _ = objective(moving, fixed, network.disp, network.vel, config, 2)
    after, _ = objective(moving, fixed, result.disp, network.vel, config, 2)
    assert record["image_term_before"] == pytest.approx(float(before.mean()), rel=1e-5)
    assert record["image_term_after"] == pytest.approx(float(after.mean()), rel=1e-5)
    identity, _ = objective(moving, fixed, torch.zeros_like(network.disp), network.vel, config, 2)
    # The poor network is worse than no registration; refinement beats both, on every pair.
    assert torch.all(before > identity) and torch.all(after < 0.6 * identity)


def test_zero_steps_return_the_network_field_bit_for_bit():
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch()
    network = predict_deformation(estimator, moving, fixed)
    # A start whose disp is not bit-equal to the integrated vel: returning a re-integrated field would show.
    start = Deformation(network.vel, network.disp + 1e-6, network.disp_inv)
    result = refine(estimator, moving, fixed, start, RefineConfig(steps=0))
    assert torch.equal(result.disp, start.disp)
    assert result.record["steps_done"] == 0 and result.record["improved"] == 0
    assert result.record["image_term_after"] == result.record["image_term_before"]


def test_a_pair_that_no_step_improves_keeps_the_network_field_and_the_other_is_refined():
    """Never worse by the image term, decided per sample.

    Sample 0's fixed image is its moving image warped by a wavy field ``d*``, so the network's
    answer ``d*`` has image term exactly 0; with a huge λ, minimising ``image + λR`` smooths ``d*``
    and raises the image term, so no iterate is acceptable and ``d*`` must come back bit for bit.
    Sample 1 (a constant shift, from the identity where R = 0) can only gain.
    """
    from models.warp import warp

    generator = torch.Generator().manual_seed(0)
    moving = 0.2 + 0.8 * torch.rand(1, 1, 24, 24, generator=generator)
    grid = torch.linspace(0, 2 * torch.pi, 24)
    wavy = torch.stack([torch.sin(grid)[:, None].expand(24, 24), torch.cos(grid)[None].expand(24, 24)])[None]
    shift = torch.full_like(wavy, 0.5)
    with torch.no_grad():
        fixed = torch.cat([warp(moving, wavy), warp(moving, shift)])
    moving = moving.expand(2, -1, -1, -1).contiguous()
    disp = torch.cat([wavy, torch.zeros_like(wavy)])
    start = Deformation(disp, disp, -disp)
    config = RefineConfig(steps=30, lam=100.0, lr=0.05)
    result = refine(poor_estimator(int_steps=0), moving, fixed, start, config)
    assert result.record["parametrisation"] == "displacement" and result.record["improved"] == 1
    assert torch.equal(result.disp[0], start.disp[0])
    before, _ = objective(moving, fixed, start.disp, start.vel, config, 1)
    after, _ = objective(moving, fixed, result.disp, result.disp, config, 1)
    assert before[0] == 0 and torch.all(after <= before) and after[1] < 0.8 * before[1]
    # What the guard prevents: plain minimisation of the objective does worsen sample 0's image term.
    value = start.disp[:1].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([value], lr=config.lr)
    for _ in range(config.steps):
        optimiser.zero_grad()
        image, smooth = objective(moving[:1], fixed[:1], value, value, config, 1)
        (image + config.lam * smooth).sum().backward()
        optimiser.step()
    assert objective(moving[:1], fixed[:1], value.detach(), value.detach(), config, 1)[0] > 1e-3


def test_a_huge_learning_rate_never_returns_a_worse_field():
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch()
    network = predict_deformation(estimator, moving, fixed)
    result = refine(estimator, moving, fixed, network, RefineConfig(steps=10, lr=1e4))
    before, _ = objective(moving, fixed, network.disp, network.vel, RefineConfig(), 2)
    after, _ = objective(moving, fixed, result.disp, network.vel, RefineConfig(), 2)
    assert torch.all(after <= before)
    assert result.record["image_term_after"] <= result.record["image_term_before"]


def test_the_time_limit_stops_early():
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch()
    result = estimate_and_refine(estimator, moving, fixed, RefineConfig(steps=100_000, time_limit_s=0.2))
    record = result.record
    assert record["stopped_by"] == "time" and 0 < record["steps_done"] < 100_000
    assert record["seconds"] < 0.2 + 5.0  # overruns by one step and one evaluation, not by thousands
    instant = estimate_and_refine(estimator, moving, fixed, RefineConfig(steps=10, time_limit_s=1e-9))
    assert instant.record["stopped_by"] == "time" and instant.record["steps_done"] == 0


def test_a_batch_refines_each_sample_as_it_would_alone():
    """Slices of a 2D stack go in one batch: the objective is a sum and Adam element-wise."""
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch(n=3)
    config = RefineConfig(steps=15)
    together = estimate_and_refine(estimator, moving, fixed, config).disp
    for k in range(3):
        alone = estimate_and_refine(estimator, moving[k:k + 1], fixed[k:k + 1], config).disp
        torch.testing.assert_close(together[k:k + 1], alone, atol=1e-4, rtol=0)


def test_3d_refinement_lowers_the_image_term():
    estimator = poor_estimator(ndim=3)
    _, moving, fixed = phantom_batch(n=1, size=16, dims=3)
    result = estimate_and_refine(estimator, moving, fixed, RefineConfig(steps=8))
    assert result.disp.shape == (1, 3, 16, 16, 16)
    assert result.record["steps_done"] == 8 and result.record["image_term_after"] < result.record["image_term_before"]


def test_ncc_refinement_runs_and_local_ncc_of_an_image_with_itself_is_one():
    image = torch.rand(1, 1, 16, 16)
    assert torch.allclose(local_ncc(image, image, 5), torch.ones_like(image), atol=1e-3)
    assert torch.allclose(local_ncc(image, 3 * image + 1, 5), torch.ones_like(image), atol=1e-3)
    estimator = poor_estimator()
    _, moving, fixed = phantom_batch(n=1)
    result = estimate_and_refine(estimator, moving, fixed, RefineConfig(steps=10, similarity="ncc"))
    assert result.record["image_term_after"] < result.record["image_term_before"]


def test_per_sample_smoothness_averages_to_the_training_term():
    vel = torch.randn(3, 2, 8, 8)
    assert torch.allclose(sample_smoothness(vel, 2).mean(), smoothness(vel, 2))


# --- where the settings come from --------------------------------------------------------------------------

def test_refine_config_reads_the_card_and_the_user_overrides_it():
    assert refine_config({}) == RefineConfig()
    card = {"inference": {"refine_steps": 50, "refine_time_limit_s": 5, "refine_similarity": "ncc"},
            "hyperparameters": {"lam": 0.02}}
    assert refine_config(card) == RefineConfig(steps=50, time_limit_s=5, similarity="ncc", lam=0.02)
    assert refine_config(card, steps=0).steps == 0 and refine_config(card, time_limit_s=1.5).time_limit_s == 1.5


@pytest.mark.parametrize(("card", "message"), [
    ({"inference": {"refine_steps": -1}}, "model card: refine steps must be an integer >= 0, got -1"),
    ({"inference": {"refine_steps": 2.5}}, "refine steps must be an integer"),
    ({"inference": {"refine_time_limit_s": 0}}, "refine time_limit_s must be a finite number > 0"),
    ({"inference": {"refine_similarity": "mi"}}, "refine similarity must be one of"),
    ({"inference": {"refine_stepz": 3}}, r"unknown inference keys \['refine_stepz'\]"),
    ({"inference": 5}, "'inference' must be an object"),
])
def test_a_bad_card_is_an_error_naming_the_key(card, message):
    with pytest.raises(ValueError, match=message):
        refine_config(card)


def test_a_bad_user_value_is_an_error():
    with pytest.raises(ValueError, match="refine steps must be an integer >= 0"):
        refine_config({}, steps=-3)
    with pytest.raises(ValueError, match="refine time_limit_s must be a finite number > 0"):
        refine_config({}, time_limit_s=float("inf"))


# --- through register_images -------------------------------------------------------------------------------

def loaded(estimator, card=None) -> LoadedModel:
    config = EstimatorConfig(ndim=estimator.flow.weight.dim() - 2, enc=(4, 4), dec=(4, 4, 4))
    return LoadedModel(estimator, config, IntensityConfig(), None, card or {})


def test_register_images_refines_as_the_card_says_and_records_it():
    pair = make_phantom_pair(PhantomConfig(size=32, seed=4), 0)
    geometry = Geometry.identity(2, (1.5, 1.5))
    images = (Image(pair.fixed, geometry), Image(pair.moving, geometry), Image(pair.moving_mask, geometry, LABEL),
              Image(pair.fixed_mask, geometry, LABEL))
    model = loaded(poor_estimator(), {"inference": {"refine_steps": 20}})
    plain = register_images(model, *images, refine_with=RefineConfig(steps=0))
    refined = register_images(model, *images)
    record = refined.report["refine"]
    assert record["steps_requested"] == record["steps_done"] == 20 and record["samples"] == 1
    assert record["image_term_after"] < record["image_term_before"] == plain.report["refine"]["image_term_before"]
    assert plain.report["refine"]["steps_done"] == 0
    assert refined.report["dice"]["2"] > plain.report["dice"]["2"]


def test_register_images_refines_a_2d_stack_in_one_batch():
    rng = np.random.default_rng(0)
    volume = rng.random((3, 32, 32)).astype(np.float32)
    geometry = Geometry.identity(3, (1.0, 1.0, 6.0))
    fixed, moving = Image(volume, geometry), Image(np.roll(volume, 1, axis=2), geometry)
    result = register_images(loaded(poor_estimator()), fixed, moving, refine_with=RefineConfig(steps=5))
    assert result.report["refine"]["samples"] == 3 and result.report["refine"]["steps_done"] == 5
    assert result.disp_vox.shape == (3, 3, 32, 32) and np.all(result.disp_vox[0] == 0)


def test_the_refined_field_comes_with_the_inverse_of_its_own_velocity():
    """The inverse output starts from exp(−v) of the field actually returned: after refinement, of the
    refined velocity (composing the two is near the identity); a displacement-parametrised estimator
    has no inverse of its own."""
    from models.warp import warp

    _, moving, fixed = phantom_batch()
    estimator = poor_estimator()
    result = refine(estimator, moving, fixed, predict_deformation(estimator, moving, fixed), RefineConfig(steps=20))
    assert result.record["improved"] == 2 and result.disp_inv is not None
    composed = result.disp_inv + warp(result.disp, result.disp_inv)  # q -> q + w(q) -> ... + u(q + w(q))
    network = predict_deformation(estimator, moving, fixed).disp_inv
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    stale = network + warp(result.disp, network)  # the network's own inverse no longer fits the refined field
    assert composed[interior].abs().mean() < 0.1 < 0.5 < stale[interior].abs().mean()
    plain = poor_estimator(int_steps=0)
    start = predict_deformation(plain, moving, fixed)
    assert refine(plain, moving, fixed, start, RefineConfig(steps=5)).disp_inv is None

"""The evaluation protocol on phantoms whose true field is known."""

import numpy as np
import pytest
import torch

from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.evaluate import evaluate_disps
from models.metrics import dice


@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=48, n=3, seed=2, noise=0.0))


def test_true_field_scores_zero_endpoint_error_and_high_dice(pairs):
    report = evaluate_disps(pairs, [torch.from_numpy(p.disp_gt) for p in pairs])
    s = report["summary"]
    assert s["epe_mean"] == pytest.approx(0.0, abs=1e-6) and s["epe_myo_mean"] == pytest.approx(0.0, abs=1e-6)
    assert s["dsc_mean"] > 85 and s["distance_unit"] == "mm" and s["n_pairs"] == 3


def test_identity_field_scores_the_unregistered_overlap(pairs):
    report = evaluate_disps(pairs, [torch.zeros(2, 48, 48) for _ in pairs])
    expected = [dice(p.moving_mask == 2, p.fixed_mask == 2) for p in pairs]
    assert [row["dsc"] for row in report["pairs"]] == pytest.approx(expected)
    # The identity's endpoint error is the true motion's size, larger on the moving wall than on average.
    assert report["summary"]["epe_myo_mean"] > report["summary"]["epe_mean"] > 0
    assert report["summary"]["folding_pct_mean"] == 0.0
    assert np.isfinite(report["summary"]["hd_mean"])


def test_evaluation_refines_as_the_model_card_says(pairs):
    """``evaluate_model`` refines each pair as a registration would: the card's steps, or the caller's."""
    from models.artifact import LoadedModel
    from models.evaluate import evaluate_model
    from models.intensity import IntensityConfig
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import build_estimator
    from models.refine import RefineConfig

    torch.manual_seed(0)
    config = EstimatorConfig(enc=(4, 4), dec=(4, 4, 4))
    estimator = build_estimator(config)
    with torch.no_grad():  # a poor network: a shift of a few voxels plus noise
        estimator.flow.weight.normal_(0.0, 0.3)
        estimator.flow.bias.copy_(torch.tensor([1.0, -0.75]))
    model = LoadedModel(estimator.eval(), config, IntensityConfig(), None, {"inference": {"refine_steps": 30}})
    plain = evaluate_model(model, pairs, refine_with=RefineConfig(steps=0))
    assert "refine" not in plain["summary"] and "refine" not in plain["pairs"][0]
    refined = evaluate_model(model, pairs)  # the card's 30 steps
    digest = refined["summary"]["refine"]
    assert digest["steps_requested"] == 30 and digest["steps_done_mean"] == 30 and digest["improved_pairs"] == 3
    assert digest["image_term_after_mean"] < digest["image_term_before_mean"] and digest["ms_per_pair"] > 0
    assert [row["refine"]["samples"] for row in refined["pairs"]] == [1, 1, 1]  # one pair per call, as registered
    assert refined["summary"]["dsc_mean"] > plain["summary"]["dsc_mean"]
    assert refined["summary"]["epe_mean"] < plain["summary"]["epe_mean"]

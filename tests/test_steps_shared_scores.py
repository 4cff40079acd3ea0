"""One scorer forward for both updates of an AdaCS alternating step gives the step two forwards give.

``S = g_ϕ(target)`` reads only the target images and ``ϕ`` does not move during the displacement
update, so sharing the forward must not change a loss or a weight (issue 17, item 5).
"""

import copy
from dataclasses import replace

import pytest
import torch

from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.networks.scoring import ScoringNet
from models.training.config import TrainConfig
from models.training.steps import displacement_update, scoring_update, shared_scores

ENC, DEC = (4, 8), (8, 8, 4)


def setup(seed: int = 0):
    torch.manual_seed(seed)
    cfg = replace(TrainConfig(), method="adacs", batch_size=4, micro_batch_size=4,
                  estimator=EstimatorConfig(ndim=2, enc=ENC, dec=DEC))
    estimator = build_estimator(cfg.estimator)
    scorer = ScoringNet(2, ENC, DEC)
    pair = tuple(torch.rand(2, 4, 1, 24, 24).unbind(0))
    return cfg, estimator, scorer, [pair]


def step(cfg, estimator, scorer, micro, share: bool):
    opt_de = torch.optim.Adam(estimator.parameters(), lr=1e-2)
    opt_se = torch.optim.Adam(scorer.parameters(), lr=1e-2)
    logs = []
    for _ in range(3):  # three alternating steps: the shared path must track the two-forward path throughout
        shared = shared_scores(scorer, micro, cfg) if share else None
        de = displacement_update(estimator, scorer, opt_de, micro, cfg, scores=shared)
        se = scoring_update(estimator, scorer, opt_se, micro, 1.1, cfg, scores=shared)
        logs.append({**de, **se})
    return logs


@pytest.mark.parametrize("bidir", [True, False])
def test_sharing_the_scorer_forward_changes_no_loss_and_no_weight(bidir):
    cfg, estimator, scorer, micro = setup()
    cfg = replace(cfg, bidir=bidir)
    twin_estimator, twin_scorer = copy.deepcopy(estimator), copy.deepcopy(scorer)
    two = step(cfg, estimator, scorer, micro, share=False)
    one = step(cfg, twin_estimator, twin_scorer, micro, share=True)
    for a, b in zip(two, one):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    for net, twin in ((estimator, twin_estimator), (scorer, twin_scorer)):
        for p, q in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
    assert any(abs(a["loss_se"] - two[0]["loss_se"]) > 0 for a in two[1:])  # the networks did move


def test_no_sharing_over_several_micro_batches():
    cfg, _, scorer, micro = setup()
    assert shared_scores(scorer, micro * 2, cfg) is None and shared_scores(None, micro, cfg) is None
    assert len(shared_scores(scorer, micro, cfg)[0]) == 2  # both directions

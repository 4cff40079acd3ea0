"""Fig. 4 panels and Fig. 5 curves are written as PNGs, with and without a scoring network."""

import torch

from models.networks.estimator import EstimatorConfig, build_estimator
from models.networks.scoring import ScoringNet
from models.pictures import plot_curves, plot_panel


def test_panel_and_curves_are_written(tmp_path) -> None:
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)))
    moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    for scorer, name in ((ScoringNet(2, (4, 4), (4, 4, 4)), "adacs.png"), (None, "none.png")):
        plot_panel(tmp_path / name, estimator, scorer, moving, fixed, title="epoch 1")
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    history = [{"epoch": 0, "phase": "alternating", "loss_de": 0.1, "data": 0.05, "val_dice": 70.0,
                "trace": [{"step": 1, "m_t": 0.1, "mu": 0.01}, {"step": 2, "m_t": 0.2, "mu": 0.01}]}]
    plot_curves(tmp_path / "curves.png", history, title="adacs")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")

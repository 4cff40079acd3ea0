"""Fig. 4 panels and Fig. 5 curves: PNGs whose pixels show what they should, with and without a scoring
network."""

import matplotlib.colors
import matplotlib.image
import numpy as np
import torch

from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.networks.scoring import ScoringNet
from models.pictures import plot_curves, plot_panel


def pixels(path) -> np.ndarray:
    """The PNG's RGB values in [0, 1], ``(height, width, 3)``."""
    return matplotlib.image.imread(path)[..., :3]


def test_panel_shows_a_row_per_pair_and_the_scoring_map_only_with_a_scorer(tmp_path) -> None:
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)))
    moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    coloured = {}
    for scorer, name in ((ScoringNet(2, (4, 4), (4, 4, 4)), "adacs.png"), (None, "none.png")):
        plot_panel(tmp_path / name, estimator, scorer, moving, fixed, title="epoch 1")
        rgb = pixels(tmp_path / name)
        assert rgb.shape == (400, 960, 3)  # 12 x 2.5 inches per pair at 80 dpi: one row per pair
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        grey = (spread < 0.02) & (rgb.max(axis=2) < 0.98)  # not white: source, target, warped source
        assert grey.mean() > 0.25, grey.mean()  # six grey images of noise (0.39 when written), not a blank page
        coloured[name] = (spread > 0.2).sum()  # magma maps and their colour bars
    # Both draw the residual map; only AdaCS adds the scoring map S (2.8 times as much colour when written).
    assert coloured["adacs.png"] > 2 * coloured["none.png"] > 0, coloured


def test_curves_show_m_t_the_losses_and_the_validation_dice(tmp_path) -> None:
    history = [{"epoch": 0, "phase": "warmup-displacement", "loss_de": 0.1, "data": 0.05, "val_dice": 70.0,
                "trace": [{"step": 1, "m_t": 0.1, "mu": 0.01}, {"step": 2, "m_t": 0.2, "mu": 0.01}]},
               {"epoch": 1, "phase": "alternating", "loss_de": 0.08, "data": 0.04, "loss_se": 0.3, "val_dice": 74.0,
                "trace": [{"step": 3, "m_t": 0.25, "mu": 0.01}, {"step": 4, "m_t": 0.3, "mu": 0.01}]}]
    plot_curves(tmp_path / "curves.png", history, title="adacs")
    rgb = pixels(tmp_path / "curves.png")
    assert rgb.shape == (280, 1120, 3)
    m_t, losses, dice = np.array_split(rgb, 3, axis=1)  # the three plots, left to right

    def drawn(panel: np.ndarray, colour: str) -> np.ndarray:
        """``(row, column)`` of the pixels in one of matplotlib's line colours."""
        return np.argwhere(np.abs(panel - matplotlib.colors.to_rgb(colour)).max(axis=2) < 0.15)

    for panel in (m_t, dice):  # both rise from the first point to the last (rows count downwards)
        line = drawn(panel, "C0")
        assert len(line) > 100
        first, last = (line[line[:, 1] == column, 0].mean() for column in (line[:, 1].min(), line[:, 1].max()))
        assert first - last > 100, (first, last)  # most of the plot's height (~170 pixels)
    assert len(drawn(losses, "C0")) > 100 and len(drawn(losses, "C1")) > 100  # loss_de and data: two epochs
    assert len(drawn(losses, "C2")) > 0  # loss_se: one point

"""Fig. 4 panels and Fig. 5 curves: PNGs whose pixels show what they should, with and without a scoring
network, text a reader can read at native size, and the identity's Dice as the validation Dice's reference."""

import matplotlib.colors
import matplotlib.image
import matplotlib.text
import numpy as np
import pytest
import torch

import models.pictures
from models.data.pairs import MYOCARDIUM
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.networks.scoring import ScoringNet
from models.pictures import (
    DPI,
    IDENTITY_STYLE,
    MIN_FONT_PT,
    OKABE_ITO,
    draw_curves,
    draw_panel,
    plot_curves,
    plot_panel,
)

IDENTITY = 71.0  # the identity's Dice in HISTORY's run, between its first and last validation Dice
HISTORY = [{"epoch": 0, "phase": "warmup-displacement", "loss_de": 0.1, "data": 0.05, "val_dice": 70.0,
            "trace": [{"step": 1, "m_t": 0.1, "mu": 0.01}, {"step": 2, "m_t": 0.2, "mu": 0.01}]},
           {"epoch": 1, "phase": "alternating", "loss_de": 0.08, "data": 0.04, "loss_se": 0.3, "val_dice": 74.0,
            "trace": [{"step": 3, "m_t": 0.25, "mu": 0.01}, {"step": 4, "m_t": 0.3, "mu": 0.01}]}]


def pixels(path) -> np.ndarray:
    """The PNG's RGB values in [0, 1], ``(height, width, 3)``."""
    return matplotlib.image.imread(path)[..., :3]


def drawn(rgb: np.ndarray, colour: str, tolerance: float = 0.15) -> np.ndarray:
    """``(row, column)`` of the pixels in ``colour``."""
    return np.argwhere(np.abs(rgb - matplotlib.colors.to_rgb(colour)).max(axis=2) < tolerance)


def small_texts(fig) -> list[tuple[str, float]]:
    """Every visible, non-empty text of the drawn figure under :data:`MIN_FONT_PT` points."""
    fig.canvas.draw()  # creates the tick labels
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 10
    return [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < MIN_FONT_PT]


def _panel_inputs():
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)))
    return estimator, torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)


def test_panel_shows_a_row_per_pair_and_the_scoring_map_only_with_a_scorer(tmp_path) -> None:
    estimator, moving, fixed = _panel_inputs()
    coloured = {}
    for scorer, name in ((ScoringNet(2, (4, 4), (4, 4, 4)), "adacs.png"), (None, "none.png")):
        plot_panel(tmp_path / name, estimator, scorer, moving, fixed, title="epoch 1")
        rgb = pixels(tmp_path / name)
        assert rgb.shape == (630, 1300, 3)  # 13 x (2.6 per pair + 1.1) inches at 100 dpi: one row per pair
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        grey = (spread < 0.02) & (rgb.max(axis=2) < 0.98)  # not white: source, target, warped source
        assert grey.mean() > 0.25, grey.mean()  # six grey images of noise (0.42 when written), not a blank page
        coloured[name] = (spread > 0.2).sum()  # magma maps and their colour bars
    # Both draw the residual map; only AdaCS adds the scoring map S (2.8 times as much colour when written).
    assert coloured["adacs.png"] > 2 * coloured["none.png"] > 0, coloured


@pytest.mark.parametrize("with_scorer", [True, False])
def test_panel_text_is_legible_and_says_what_is_shown(with_scorer) -> None:
    estimator, moving, fixed = _panel_inputs()
    fig = draw_panel(estimator, ScoringNet(2, (4, 4), (4, 4, 4)) if with_scorer else None, moving, fixed,
                     title="adacs, epoch 1")
    assert small_texts(fig) == []
    texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "pair 2" in texts and "squared residual" in texts and "[0, 1]" in texts
    assert ("no scoring network" in texts) is not with_scorer  # an absent map is said so, not left blank


def test_curves_show_m_t_the_losses_and_the_validation_dice(tmp_path) -> None:
    plot_curves(tmp_path / "curves.png", HISTORY, title="adacs", identity_dice=IDENTITY)
    rgb = pixels(tmp_path / "curves.png")
    assert rgb.shape == (560, 1500, 3)  # 15 x 5.6 inches at 100 dpi
    m_t, losses, dice = np.array_split(rgb[:440], 3, axis=1)  # the three plots, left to right, above the legends
    for panel in (m_t, dice):  # both rise from the first point to the last (rows count downwards)
        line = drawn(panel, OKABE_ITO["blue"])
        assert len(line) > 100
        first, last = (line[line[:, 1] == column, 0].mean() for column in (line[:, 1].min(), line[:, 1].max()))
        assert first - last > 200, (first, last)  # most of the plot's height (~385 pixels)
    assert len(drawn(losses, OKABE_ITO["blue"])) > 100  # loss_de ...
    assert len(drawn(losses, OKABE_ITO["orange"], 0.1)) > 100  # ... and the data term: two epochs
    assert len(drawn(losses, OKABE_ITO["vermillion"])) > 0  # loss_se: one point


def test_validation_dice_has_the_identity_as_a_dashed_reference_line(tmp_path) -> None:
    fig = draw_curves(HISTORY, title="adacs", identity_dice=IDENTITY)
    dice_axis = fig.axes[2]
    reference = [line for line in dice_axis.get_lines()
                 if np.allclose(line.get_ydata(), IDENTITY) and line.get_linestyle() == "--"]
    assert len(reference) == 1  # one dashed line, horizontal at the identity's Dice ...
    assert list(reference[0].get_xdata()) == [0, 1]  # ... across the whole plot (axhline: axes fraction)
    assert "identity" in reference[0].get_label() and "71.0 %" in reference[0].get_label()
    labels = [t.get_text() for t in dice_axis.get_legend().get_texts()]
    assert any("identity" in label for label in labels)  # the legend names it
    lo, hi = dice_axis.get_ylim()
    assert lo < IDENTITY < hi

    # And in the PNG: the reference's grey is drawn across the Dice plot, absent without an identity Dice.
    grey = {}
    for identity, name in ((IDENTITY, "with.png"), (None, "without.png")):
        plot_curves(tmp_path / name, HISTORY, identity_dice=identity)
        grey[name] = len(drawn(np.array_split(pixels(tmp_path / name), 3, axis=1)[2], IDENTITY_STYLE["color"], 0.05))
    assert grey["with.png"] > grey["without.png"] + 200, grey
    assert not [line for line in draw_curves(HISTORY).axes[2].get_lines() if line.get_linestyle() == "--"]


def test_curves_are_legible_colour_blind_safe_and_keep_legends_off_the_data() -> None:
    fig = draw_curves(HISTORY, title="adacs", identity_dice=IDENTITY)
    assert fig.dpi == DPI and small_texts(fig) == []
    allowed = {matplotlib.colors.to_hex(c) for c in [*OKABE_ITO.values(), IDENTITY_STYLE["color"]]}
    for ax in fig.axes:
        assert {matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()} <= allowed
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        legend = ax.get_legend()
        if legend is not None:  # below the plot, never over it
            assert legend.get_window_extent().y1 <= ax.get_window_extent().y0
    assert "Dice (%)" in fig.axes[2].get_ylabel()
    phases = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]  # what the tints mean
    assert [p.split(":")[0] for p in phases] == ["warm-up 1", "alternating"], phases


def test_training_passes_the_identity_dice_to_the_curves(tmp_path, monkeypatch) -> None:
    from models.trainer import TrainConfig, train
    from models.training.validation import identity_dice, validation_set

    calls = []
    monkeypatch.setattr(models.pictures, "plot_curves", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(models.pictures, "plot_panel", lambda *args, **kwargs: None)
    pairs = make_phantom_dataset(PhantomConfig(size=32, n=6, seed=0))
    cfg = TrainConfig(method="none", epochs=1, warmup_epochs=0, steps_per_epoch=1, batch_size=2, micro_batch_size=2,
                      estimator=EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)), picture_every=1)
    train(cfg, pairs[:4], tmp_path / "run", val_pairs=pairs[4:])
    expected = identity_dice(validation_set(pairs[4:], cfg), MYOCARDIUM)  # what validation compares against
    assert len(calls) == 1 and calls[0]["identity_dice"] == pytest.approx(expected)

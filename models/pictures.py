"""Training pictures: the paper's Fig. 4 panel and Fig. 5 curves, as PNG files readable at native size.

The panel shows, per pair: source, target, warped source, squared residual, and the scoring map
``S = g_ϕ(target)`` (marked absent for methods without a scoring network). Watch the scoring map: if it
goes dark on the myocardium's moving boundary, the data term stops pulling where the Dice is decided.
For a 3D pair the middle slice along the first axis is shown.

The curves (:func:`plot_curves`) show ``m_t`` per update, the losses per epoch and the validation Dice
against the identity's (no registration), with the training phases shaded.

Both are drawn by a ``draw_*`` function that returns the figure (what the tests inspect) and saved by a
``plot_*`` function. Every text is at least :data:`MIN_FONT_PT` points at :data:`DPI`, and every colour
comes from the Okabe-Ito palette, which stays distinct under the common colour-vision deficiencies.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window (workers and CI have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from models.inference import eval_mode  # noqa: E402
from models.training.schedule import (  # noqa: E402
    PHASE_ALTERNATING,
    PHASE_DISPLACEMENT,
    PHASE_WARMUP_DISPLACEMENT,
    PHASE_WARMUP_SCORING,
)
from models.warp import warp  # noqa: E402

__all__ = ["DPI", "IDENTITY_STYLE", "MIN_FONT_PT", "OKABE_ITO", "draw_panel", "draw_curves", "plot_panel",
           "plot_curves"]

DPI = 100  # 9 pt is 12.5 pixels: legible on a screen at 100 %
MIN_FONT_PT = 9.0
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
_STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
          "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 12, "axes.titleweight": "bold"}


@contextmanager
def _style():
    with plt.rc_context(_STYLE):
        yield


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)


# --- Fig. 4: the panel ---------------------------------------------------------------------------------------

_COLUMNS = ("source (ED)\nmoving image", "target (ES)\nfixed image", "warped source\nsource after registration",
            "squared residual\n(warped − target)²", "scoring map\n$S = g_\\phi$(target)")


def _mid(x: torch.Tensor) -> np.ndarray:
    """``(1, *spatial)`` -> a 2D array (the middle slice of a volume)."""
    x = x[0]
    return (x[x.shape[0] // 2] if x.dim() == 3 else x).detach().cpu().numpy()


def _bare(ax) -> None:
    """No ticks and no frame, but the axis labels stay (``axis("off")`` would hide them too)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _num(value: float) -> str:
    """Two significant digits; what rounds to 0 at three decimals is written 0 (not 2.4e-10)."""
    return "0" if abs(value) < 5e-4 else f"{value:.2g}"


def _map_cell(fig: Figure, ax, values: np.ndarray, vmax: float | None) -> None:
    """A map whose values matter (S near 0.5 is an untrained sigmoid, not a judgement): colour bar and range."""
    shown = ax.imshow(values, cmap="magma", vmin=0.0, vmax=vmax)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=_STYLE["ytick.labelsize"])
    ax.set_xlabel(f"min {_num(values.min())}, mean {_num(values.mean())}, max {_num(values.max())}")


def _panel_row(fig: Figure, axes, images: list, row: int) -> None:
    """One pair: three images in grey on [0, 1], then the residual and scoring maps in magma."""
    for col, (ax, image) in enumerate(zip(axes, images)):
        _bare(ax)
        if row == 0:
            ax.set_title(_COLUMNS[col], fontsize=10)
        if image is None:
            ax.text(0.5, 0.5, "none: this method\nhas no scoring network", ha="center", va="center",
                    transform=ax.transAxes, color="#555555")
        elif col < 3:
            ax.imshow(_mid(image), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            _map_cell(fig, ax, _mid(image), None if col == 3 else 1.0)
    axes[0].set_ylabel(f"pair {row + 1}")


@torch.no_grad()
def draw_panel(estimator, scorer, moving: torch.Tensor, fixed: torch.Tensor, title: str = "") -> Figure:
    """``moving``/``fixed``: ``(N, 1, *spatial)`` normalised to [0, 1]; one row per pair."""
    device = next(estimator.parameters()).device
    moving, fixed = moving.to(device), fixed.to(device)
    with eval_mode(estimator):
        warped = warp(moving, estimator(moving, fixed).disp)
    scores = scorer(fixed) if scorer is not None else None
    note = f"{len(moving)} pair{'s' if len(moving) > 1 else ''}" + (", middle slice" if moving.dim() == 5 else "")
    with _style():
        fig, axes = plt.subplots(len(moving), 5, figsize=(13, 2.6 * len(moving) + 1.1), squeeze=False,
                                 layout="constrained", dpi=DPI)
        for row in range(len(moving)):
            _panel_row(fig, axes[row], [moving[row], fixed[row], warped[row], (warped[row] - fixed[row]) ** 2,
                                        scores[row] if scores is not None else None], row)
        fig.suptitle(f"{title}: {note}, intensities normalised to [0, 1]" if title else
                     f"{note.capitalize()}, intensities normalised to [0, 1]")
    return fig


def plot_panel(path: Path, estimator, scorer, moving: torch.Tensor, fixed: torch.Tensor, title: str = "") -> None:
    """The Fig. 4 panel of :func:`draw_panel`, saved as a PNG at ``path``."""
    with _style():
        _save(draw_panel(estimator, scorer, moving, fixed, title), Path(path))


# --- Fig. 5: the curves --------------------------------------------------------------------------------------

# The losses, in the order of the legend: the displacement network's (solid), then the scoring network's
# (dashed). "reg" and "smooth" are logged unweighted, "tv" already weighted by m_t.
# The totals (``loss_*``) get large hollow markers: a term equal to its total stays visible inside them.
_LOSSES = (("loss_de", "$L_{de}$: displacement loss (Eq. 2)", "blue", "o", "-"),
           ("data", "data term mean(B·S·r)", "orange", "s", "-"),
           ("smooth", "$R(u)$: field smoothness", "bluish green", "^", "-"),
           ("loss_se", "$L_{se}$: scoring loss (Eq. 9)", "vermillion", "D", "--"),
           ("scs", "$L_{scs}$ (Eq. 3)", "reddish purple", "v", "--"),
           ("reg", "$L_{reg}$ (Eq. 4, without α)", "sky blue", "P", "--"),
           ("tv", "$L_{tv} = m_t$·TV(S) (Eq. 8)", "black", "X", "--"))
_PHASES = {PHASE_WARMUP_DISPLACEMENT: ("warm-up 1: displacement network alone (S = 1)", "orange"),
           PHASE_WARMUP_SCORING: ("warm-up 2: scoring network alone ($m_t$ held)", "sky blue"),
           PHASE_ALTERNATING: ("alternating: one update of each per step", None)}
IDENTITY_STYLE = {"color": "#555555", "ls": "--", "lw": 1.6}


def _phase_spans(history: list[dict], in_updates: bool) -> list[tuple[str, float, float]]:
    """``(phase, start, end)`` per run of equal phases, in epochs (1-based) or in optimiser updates."""
    spans: list[tuple[str, float, float]] = []
    for h in history:
        if in_updates:
            steps = [t["step"] for t in h.get("trace", [])]
            if not steps:
                continue
            start, end = min(steps) - 0.5, max(steps) + 0.5
        else:
            start, end = h["epoch"] + 0.5, h["epoch"] + 1.5
        if spans and spans[-1][0] == h["phase"]:
            spans[-1] = (h["phase"], spans[-1][1], end)
        else:
            spans.append((h["phase"], start, end))
    return spans


def _shade_phases(axes, history: list[dict]) -> None:
    """A tint per warm-up phase behind every plot (the first axis counts updates, the others epochs)."""
    for ax, in_updates in zip(axes, (True, False, False)):
        for phase, start, end in _phase_spans(history, in_updates):
            colour = _PHASES.get(phase, ("", None))[1]
            if colour is not None:
                ax.axvspan(start, end, color=OKABE_ITO[colour], alpha=0.18, lw=0, zorder=0)


def _phase_handles(history: list[dict]) -> list[Patch]:
    """The legend entries of the phases; none for a method without a scoring network (one phase, no tint)."""
    phases = list(dict.fromkeys(h["phase"] for h in history if h["phase"] in _PHASES))
    return [Patch(facecolor=OKABE_ITO[c] if c else "white", alpha=0.35 if c else 1.0, edgecolor="#999999",
                  label=label) for label, c in (_PHASES[p] for p in phases)]


def _legend_below(ax, **kwargs) -> None:
    """Under the axis, clear of the data; constrained layout makes room for it."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False, **kwargs)


def _markevery(n_points: int) -> int:
    """Every epoch's marker while they are told apart; about 25 of them on a long run (340 epochs)."""
    return max(1, n_points // 25)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555")


def _draw_m_t(ax, history: list[dict]) -> None:
    """``m_t`` per update; its legend names the phases' tints, which all three plots share."""
    trace = [t for h in history for t in h.get("trace", [])]
    if trace:
        ax.plot([t["step"] for t in trace], [t["m_t"] for t in trace], color=OKABE_ITO["blue"], lw=1.8)
    else:
        _empty(ax, "no $m_t$ logged")
    unused = bool(history) and all(h["phase"] == PHASE_DISPLACEMENT for h in history)  # no scoring network
    ax.set(title="Momentum $m_t$ (Fig. 5)" + (", unused by this method" if unused else ""),
           xlabel="optimiser update", ylabel="$m_t$ (weight of TV(S), unitless)")
    handles = _phase_handles(history)
    if handles:
        _legend_below(ax, handles=handles, title="training phase (tint in all three plots)")


def _draw_losses(ax, history: list[dict]) -> None:
    drawn = False
    for key, label, colour, marker, style in _LOSSES:
        points = [(h["epoch"] + 1, h[key]) for h in history if h.get(key) is not None and h[key] > 0]
        if points:  # non-positive values have no place on a log axis (tv is 0 in the ablations without it)
            total = key.startswith("loss_")
            ax.plot(*zip(*points), color=OKABE_ITO[colour], marker=marker, ls=style, label=label,
                    markevery=_markevery(len(history)), ms=8 if total else 4,
                    mfc="none" if total else OKABE_ITO[colour], lw=2.2 if total else 1.4)
            drawn = True
    ax.set(title="Losses, mean per epoch", xlabel="epoch", ylabel="loss (unitless, log scale)")
    if drawn:
        ax.set_yscale("log")
        _legend_below(ax, ncols=2)
    else:
        _empty(ax, "no losses logged")


def _draw_dice(ax, history: list[dict], identity_dice: float | None) -> None:
    points = [(h["epoch"] + 1, h["val_dice"]) for h in history if h.get("val_dice") is not None]
    if points:
        ax.plot(*zip(*points), color=OKABE_ITO["blue"], marker="o", ms=4, lw=1.8, label="after registration",
                markevery=_markevery(len(points)))
    if identity_dice is not None:
        ax.axhline(identity_dice, **IDENTITY_STYLE, zorder=1.5,
                   label=f"no registration (identity): {identity_dice:.1f} %")
    if points or identity_dice is not None:
        _legend_below(ax)
    else:
        _empty(ax, "no validation pairs with masks")
    ax.set(title="Validation Dice", xlabel="epoch", ylabel="Dice (%)")


def draw_curves(history: list[dict], title: str = "", identity_dice: float | None = None) -> Figure:
    """``m_t`` per update (Fig. 5), the epoch losses, and the validation Dice with the identity's as a
    dashed reference line (``identity_dice``, in percent; none drawn when it is unknown)."""
    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), layout="constrained", dpi=DPI)
        _shade_phases(axes, history)
        _draw_m_t(axes[0], history)
        _draw_losses(axes[1], history)
        _draw_dice(axes[2], history, identity_dice)
        for ax in axes:
            ax.tick_params(labelsize=_STYLE["xtick.labelsize"])
        for ax in axes[1:]:
            ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole
        fig.suptitle(f"{title}: training curves" if title else "Training curves")
    return fig


def plot_curves(path: Path, history: list[dict], title: str = "", identity_dice: float | None = None) -> None:
    """The curves of :func:`draw_curves`, saved as a PNG at ``path``."""
    with _style():
        _save(draw_curves(history, title, identity_dice), Path(path))

"""Training pictures: the paper's Fig. 4 panel and Fig. 5 curves, as PNG files.

The panel shows, per pair: source, target, warped source, residual, and the scoring map
``S = g_ϕ(target)`` (blank for methods without a scoring network). Watch the scoring map: if it goes
dark on the myocardium's moving boundary, the data term stops pulling where the Dice is decided.
For a 3D pair the middle slice along the first axis is shown.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window (workers and CI have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.inference import eval_mode  # noqa: E402
from models.warp import warp  # noqa: E402

__all__ = ["plot_panel", "plot_curves"]


def _mid(x: torch.Tensor) -> np.ndarray:
    """``(1, *spatial)`` -> a 2D array (the middle slice of a volume)."""
    x = x[0]
    return (x[x.shape[0] // 2] if x.dim() == 3 else x).detach().cpu().numpy()


@torch.no_grad()
def plot_panel(path: Path, estimator, scorer, moving: torch.Tensor, fixed: torch.Tensor, title: str = "") -> None:
    """``moving``/``fixed``: ``(N, 1, *spatial)`` normalised; one row per pair."""
    device = next(estimator.parameters()).device
    moving, fixed = moving.to(device), fixed.to(device)
    with eval_mode(estimator):
        warped = warp(moving, estimator(moving, fixed).disp)
    scores = scorer(fixed) if scorer is not None else None
    columns = ["source (ED)", "target (ES)", "warped source", "residual", "scoring map S"]
    fig, axes = plt.subplots(len(moving), 5, figsize=(12, 2.5 * len(moving)), squeeze=False)
    for row in range(len(moving)):
        images = [moving[row], fixed[row], warped[row], (warped[row] - fixed[row]) ** 2,
                  scores[row] if scores is not None else None]
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.axis("off")
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
            if image is None:
                continue
            vmax = None if col == 3 else 1.0
            shown = ax.imshow(_mid(image), cmap="magma" if col >= 3 else "gray", vmin=0.0, vmax=vmax)
            if col >= 3:  # the maps' values matter (S near 0.5 is an untrained sigmoid, not a judgement)
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
                values = _mid(image)
                ax.set_xlabel(f"{values.min():.2g} .. {values.max():.2g}, mean {values.mean():.2g}", fontsize=7)
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_curves(path: Path, history: list[dict], title: str = "") -> None:
    """``m_t`` per update (Fig. 5), the epoch losses, and the validation Dice."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
    steps = [t["step"] for h in history for t in h.get("trace", [])]
    m_t = [t["m_t"] for h in history for t in h.get("trace", [])]
    axes[0].plot(steps, m_t)
    axes[0].set(title="momentum m_t", xlabel="update")
    epochs = [h["epoch"] + 1 for h in history]
    for key in ("loss_de", "data", "loss_se", "scs", "reg", "tv"):
        points = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if points:
            axes[1].plot(*zip(*points), marker=".", label=key)
    axes[1].set(title="losses per epoch", xlabel="epoch", yscale="log")
    axes[1].legend(fontsize=7)
    points = [(e, h["val_dice"]) for e, h in zip(epochs, history) if "val_dice" in h]
    if points:
        axes[2].plot(*zip(*points), marker=".")
    axes[2].set(title="validation Dice (%)", xlabel="epoch")
    for epoch, (before, after) in enumerate(zip(history, history[1:]), start=1):
        if before["phase"] != after["phase"]:
            for ax in axes[1:]:
                ax.axvline(epoch + 0.5, color="grey", lw=0.8, ls="--")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)

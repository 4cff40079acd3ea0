"""``preview.png``: a glance at a registration, the warped mask's outline over the fixed image.

Left: the fixed image with the warped moving mask's outline (solid, one colour per label) and the
fixed mask's (dashed) when given; right: the warped moving image. A 3D image shows its middle
slice along the first array axis (ITK's z). Drawn on a bare ``Figure`` with the Agg canvas, so no
pyplot state is shared between threads and no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.io.image import Image

__all__ = ["write_preview"]

COLOURS = ("#ff4d4d", "#4dd2ff", "#ffd24d", "#7dff4d", "#d24dff")


def _plane(image: Image) -> np.ndarray:
    """The 2D array shown: the image itself, or a volume's middle slice ``array[z // 2]``."""
    return image.array[image.array.shape[0] // 2] if image.ndim == 3 else image.array


def _outline(ax, mask: Image, linestyle: str) -> None:
    """One colour per label value (the same in both masks); label 1 drawn last, so a neighbour's
    boundary that it shares (blood pool inside myocardium) does not hide it."""
    plane = _plane(mask)
    for label in sorted((int(v) for v in np.unique(plane) if v != 0), reverse=True):
        ax.contour(plane == label, levels=[0.5], colors=COLOURS[(label - 1) % len(COLOURS)], linewidths=1.2,
                   linestyles=linestyle)


def write_preview(path: str | Path, fixed: Image, warped: Image, warped_mask: Image | None = None,
                  fixed_mask: Image | None = None) -> Path:
    """Draw the preview into ``path`` (PNG). All images are on the fixed grid."""
    spacing = fixed.geometry.spacing  # ITK order (x, y, ...): rows of a plane are y, columns x
    aspect = spacing[1] / spacing[0]
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for ax, image, title in ((left, fixed, "fixed + warped mask"), (right, warped, "warped moving")):
        plane = _plane(image)
        low, high = np.percentile(plane, [0.5, 99.5])
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    if fixed_mask is not None:
        _outline(left, fixed_mask, "dashed")
    if warped_mask is not None:
        _outline(left, warped_mask, "solid")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)

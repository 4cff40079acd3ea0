"""``preview.png``: a registration at a glance, one row per slice: before | after | grid | Jacobian.

- **before**: the fixed image with the moving mask's outline (resampled onto the fixed grid, solid);
- **after**: the fixed image with the warped moving mask's outline (solid);
  both with the fixed mask's outline dashed when given, and the slice's Dice per label in the title
  (each value in its label's colour) when a fixed mask is given. Without a moving mask these two
  panels overlay the fixed image (magenta) on the moving image, then on the warped one (green):
  grey where they agree.
- **grid**: the fixed grid's lines moved by the field's in-plane components (``p + u(p)``: where
  each fixed point is sampled in the moving image), over the dimmed fixed image;
- **Jacobian**: its determinant, a diverging map centred at 1 (red: expansion, blue: compression,
  black: folding), with the colour bar in the header.

A volume shows the slices along its first array axis (ITK's z) where a mask has a label, at most
:data:`~worker.preview_data.MAX_SLICES` evenly spaced ones; every panel is cropped to the masks'
bounding box plus a margin, so the heart fills it. The header holds the legend: one colour per label
with its name and whole-image Dice, and what the line styles mean.

Drawn on a bare ``Figure`` with the Agg canvas (no pyplot state shared between threads, no display),
cheaply, since it is on the request path: the panels' pictures are pasted at whole pixels into one
RGB raster (each voxel a block of pixels), and their lines and titles, the legend and the colour bar
are drawn by a transparent figure with a single axes whose data units are the raster's pixels, then
laid over it. Forty axes and forty resampled images would cost most of the time in machinery the
picture never shows. About 1 s of one core for ten slices.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import contourpy
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import TwoSlopeNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import Affine2D
from PIL import Image as PILImage

from models.report import slice_dice
from worker.preview_data import PreviewData, choose_slices, crop_box, drawing_order, gather

if TYPE_CHECKING:  # models.register imports torch
    from models.register import RegisteredFiles

__all__ = ["write_preview", "render_preview", "COLOURS", "label_colour"]

# One colour per label value, bright on a grey image and on the dark background.
COLOURS = ("#ff3b3b", "#33d6ff", "#ffd633", "#5cff5c", "#ff5cf0", "#ff9a1f", "#9a8cff", "#ffffff")
BACKGROUND, FOREGROUND, GRID_COLOUR = "#141414", "#e8e8e8", "#f2f2a0"
DASHES = (0, (3.0, 2.0))  # the fixed mask's outline: dashes with black gaps, visible over a solid line
DPI = 100
PNG_COMPRESSION = 3  # zlib level: 6 saves ~5 % of the bytes for twice the encoding time
# Layout in pixels of the saved PNG.
WIDTH = 1280
LEFT, RIGHT, GAP = 32, 12, 10  # row label column, right margin, between panels
TITLE, ROW_GAP = 26, 8  # above each panel, below each row
LEGEND_TOP, LEGEND_ROW = 12, 19
FONT, TITLE_FONT = 8.5, 9.0  # points; at DPI 100 a point is 1.39 px
MAX_LEGEND_LABELS = 12
MAX_TITLE_LABELS = 6  # a panel's title has room for this many Dice values
GRID_LINES = 18  # about this many lines across a panel
COLUMNS = ("before", "after", "grid", "Jacobian")


def label_colour(label: int) -> str:
    return COLOURS[(label - 1) % len(COLOURS)]


def write_preview(path: str | Path, done: RegisteredFiles) -> Path:
    """Draw the preview of a finished registration (``models.register.RegisteredFiles``) into ``path`` (PNG)."""
    render_preview(gather(done)).save(path, format="png", compress_level=PNG_COMPRESSION)
    return Path(path)


def _window(image: np.ndarray) -> tuple[float, float]:
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _scaled(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return np.clip((np.nan_to_num(image.astype(np.float32)) - low) / (high - low), 0.0, 1.0)


def _trace(region: np.ndarray) -> list[np.ndarray]:
    """The outline of a boolean region, as (x, y) = (column, row) polylines; none for an empty one."""
    if not region.any():
        return []
    return contourpy.contour_generator(z=region.astype(np.float32), line_type=contourpy.LineType.Separate).lines(0.5)


class _Panel:
    """A box of the sheet (pixels from the top-left corner) showing a cropped slice, fitted and centred.

    Its picture is pasted, upsampled nearest-neighbour, into the figure's raster at whole pixels, so the
    lines drawn over it (voxel (column, row) indices, through :attr:`voxels`) land on the voxels they trace.
    """

    def __init__(self, sheet: _Sheet, left: int, top: int, width: int, height: int, shape: tuple[int, int],
                 spacing: tuple[float, float]) -> None:
        self.sheet, self.top = sheet, top
        scale = min(width / (shape[1] * spacing[1]), height / (shape[0] * spacing[0]))  # pixels per mm
        self.width = max(1, round(shape[1] * spacing[1] * scale))
        self.height = max(1, round(shape[0] * spacing[0] * scale))
        self.x0, self.y0 = left + (width - self.width) // 2, top + (height - self.height) // 2
        self.shape = shape
        to_pixels = Affine2D().translate(0.5, 0.5).scale(self.width / shape[1], self.height / shape[0])
        self.voxels = to_pixels.translate(self.x0, self.y0) + sheet.ax.transData
        self.clip = Rectangle((self.x0, self.y0), self.width, self.height, transform=sheet.ax.transData)

    def image(self, rgb: np.ndarray) -> None:
        """``rgb`` ``(*shape, 3)`` in [0, 1], pasted with each voxel a block of pixels."""
        rows = (np.arange(self.height) + 0.5) * self.shape[0] // self.height
        cols = (np.arange(self.width) + 0.5) * self.shape[1] // self.width
        voxels = np.round(rgb * 255).astype(np.uint8)
        block = voxels.take(rows.astype(np.intp), axis=0).take(cols.astype(np.intp), axis=1)
        self.sheet.raster[self.y0:self.y0 + self.height, self.x0:self.x0 + self.width] = block

    def lines(self, segments: list[np.ndarray], **style) -> None:
        if segments:
            collection = LineCollection(segments, transform=self.voxels, **style)
            collection.set_clip_path(self.clip)
            self.sheet.ax.add_collection(collection)

    def outlines(self, masks: list[tuple[np.ndarray, bool]], order: list[int]) -> None:
        """Each mask's outline per label, solid or dashed, the labels drawn in ``order`` (the last on top)."""
        for mask, dashed in masks:
            segments, colours = [], []
            for label in order:
                lines = _trace(mask == label)
                segments += lines
                colours += [label_colour(label)] * len(lines)
            style = {"linewidths": 1.3, "linestyles": DASHES, "gapcolor": "#000000"} if dashed else {"linewidths": 1.6}
            self.lines(segments, colors=colours, **style)

    def title(self, parts: list[tuple[str, str]]) -> None:
        """A title whose pieces have their own colours (Dice values in their labels' colours)."""
        text = self.sheet.ax.text(self.x0, self.top - 5, parts[0][0], color=parts[0][1], fontsize=TITLE_FONT,
                                  ha="left", va="bottom")
        for piece, colour in parts[1:]:
            text = self.sheet.ax.annotate(piece, xy=(1.0, 0.0), xycoords=text, xytext=(3.5, 0.0),
                                          textcoords="offset points", color=colour, fontsize=TITLE_FONT, ha="left",
                                          va="bottom")


class _Sheet:
    """The picture: an RGB raster (the panels' pictures, pasted at whole pixels) under a transparent
    figure with one axes spanning it, whose data units are pixels from the top-left corner (lines,
    text, legend). :meth:`finish` renders the figure with Agg and lays it over the raster."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="none")
        FigureCanvasAgg(self.figure)
        self.raster = np.empty((height, width, 3), np.uint8)
        self.raster[:] = np.round(np.array(to_rgb(BACKGROUND)) * 255).astype(np.uint8)
        self.ax = self.figure.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_axis_off()
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_autoscale_on(False)

    def finish(self) -> PILImage.Image:
        """The picture (RGB): the figure's pixels laid over the raster, blended by their alpha."""
        canvas = self.figure.canvas
        canvas.draw()
        overlay = PILImage.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        picture = PILImage.fromarray(self.raster)
        if overlay.size != picture.size:  # the figure's size is whole pixels: never
            raise RuntimeError(f"figure rendered as {overlay.size}, raster is {picture.size}")
        picture.paste(overlay, (0, 0), overlay)
        return picture


def _dice_parts(title: str, a: np.ndarray, b: np.ndarray, labels: list[int]) -> list[tuple[str, str]]:
    """``title · Dice`` and the slice's Dice (%) per label in its colour ("–": in neither mask)."""
    parts = [(f"{title} · Dice", FOREGROUND)]
    for label in labels[:MAX_TITLE_LABELS]:
        value = slice_dice(a, b, label)
        parts.append(("–" if value is None else f"{value:.0f}", label_colour(label)))
    if len(labels) > MAX_TITLE_LABELS:
        parts.append(("…", FOREGROUND))
    return parts


def _grid_segments(disp_rows: np.ndarray, disp_cols: np.ndarray) -> list[np.ndarray]:
    """Lines of the (cropped) fixed grid, each point ``p`` moved to ``p + u(p)``, as (x, y) = (column, row)."""
    rows, cols = disp_rows.shape
    step = max(1, round(max(rows, cols) / GRID_LINES))
    across, down = np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64)
    return ([np.column_stack([across + disp_cols[r], r + disp_rows[r]]) for r in range(step // 2, rows, step)]
            + [np.column_stack([c + disp_cols[:, c], down + disp_rows[:, c]]) for c in range(step // 2, cols, step)])


def _jacobian_norm(shown: np.ndarray) -> TwoSlopeNorm:
    """Centred at 1, symmetric; its half-range covers the shown values' 99th percentile (0.05 to 1)."""
    shown = shown[np.isfinite(shown)]
    spread = float(np.percentile(np.abs(shown - 1.0), 99)) if shown.size else 0.0
    spread = min(max(spread, 0.05), 1.0)
    return TwoSlopeNorm(vcenter=1.0, vmin=1.0 - spread, vmax=1.0 + spread)


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1)


def _legend(sheet: _Sheet, data: PreviewData, labels: list[int], outlined: bool, folding: bool,
            norm: TwoSlopeNorm) -> None:
    """Label colours, names and Dice; what the lines mean; the Jacobian's colour bar (top right)."""
    handles, texts = [], []
    for label in labels[:MAX_LEGEND_LABELS]:
        text = f"{label}: {(data.names or {}).get(label, f'label {label}')[:32]}"
        after, before = (data.dice or {}).get(label, (None, None))
        if after is not None:
            text += f"  Dice {after:.1f}" + (f" (before {before:.1f})" if before is not None else "")
        handles.append(Line2D([], [], color=label_colour(label), linewidth=2.5))
        texts.append(text)
    if len(labels) > MAX_LEGEND_LABELS:
        handles.append(Line2D([], [], color=BACKGROUND))
        texts.append(f"… {len(labels) - MAX_LEGEND_LABELS} more labels")
    if outlined:
        handles.append(Line2D([], [], color=FOREGROUND, linewidth=1.6))
        texts.append("solid: moving mask (before), warped moving mask (after)")
    else:
        handles += [Patch(color="#ff00ff"), Patch(color="#00ff00")]
        texts += ["magenta: fixed image (grey where both agree)", "green: moving (before), warped (after)"]
    if data.fixed_mask is not None:
        handles.append(Line2D([], [], color=FOREGROUND, linewidth=1.3, linestyle=DASHES, gapcolor="#000000"))
        texts.append("dashed: fixed mask" + ("; titles: Dice % in this slice" if outlined and labels else ""))
    handles.append(Line2D([], [], color=GRID_COLOUR, linewidth=0.8))
    texts.append("grid: the fixed grid moved by the in-plane field, p + u(p)")
    fig, height = sheet.figure, sheet.height
    legend = fig.legend(handles, texts, loc="upper left", bbox_to_anchor=(LEFT / WIDTH, 1.0 - LEGEND_TOP / height),
                        ncols=2, frameon=False, fontsize=FONT, labelcolor=FOREGROUND, handlelength=2.6,
                        columnspacing=1.6, borderaxespad=0.0, borderpad=0.0, labelspacing=0.35)
    for text in legend.get_texts():  # label names are the user's text: a "$" is a dollar, not mathtext
        text.set_parse_math(False)
    bar_w, bar_h, bar_top = 260, 16, 26
    cax = fig.add_axes(((WIDTH - RIGHT - 20 - bar_w) / WIDTH, 1.0 - (bar_top + bar_h) / height, bar_w / WIDTH,
                        bar_h / height))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap="RdBu_r"), cax=cax, orientation="horizontal",
                       ticks=[norm.vmin, 1.0, norm.vmax], format="{x:.2f}")
    bar.ax.tick_params(labelsize=FONT, colors=FOREGROUND, length=2, pad=1)
    bar.outline.set_edgecolor(FOREGROUND)
    bar.set_label("Jacobian determinant" + (" (black: folding)" if folding else ""), fontsize=FONT,
                  color=FOREGROUND, labelpad=3)
    bar.ax.xaxis.set_label_position("top")


def _draw_field(grid: _Panel, jac: _Panel, data: PreviewData, z: int, crop: tuple[slice, slice],
                fixed: np.ndarray, norm) -> bool:
    """Slice ``z``'s deformation grid and Jacobian panels; True where the Jacobian shows folding."""
    disp_rows, disp_cols = data.disp[0, z], data.disp[1, z]
    largest = float(np.sqrt((disp_rows * data.spacing[0]) ** 2 + (disp_cols * data.spacing[1]) ** 2).max())
    grid.image(_grey(fixed * 0.4))
    grid.lines(_grid_segments(disp_rows[crop], disp_cols[crop]), colors=GRID_COLOUR, linewidths=0.8)
    grid.title([(f"grid · largest |u| {largest:.1f} mm", FOREGROUND)])

    det = data.jacobian[z][crop]
    rgb = colormaps["RdBu_r"](norm(np.nan_to_num(det, nan=1.0)))[..., :3]
    folds = det <= 0
    rgb[folds] = 0.0
    jac.image(rgb)
    reference = data.fixed_mask if data.fixed_mask is not None else data.warped_mask
    if reference is not None:  # where the heart is, in thin grey
        jac.lines(_trace(reference[z][crop] > 0), colors="#505050", linewidths=0.7)
    jac.title([(f"Jacobian · {np.nanmin(det):.2f} to {np.nanmax(det):.2f}", FOREGROUND)])
    return bool(folds.any())


def render_preview(data: PreviewData) -> PILImage.Image:
    """The preview's picture (RGB, ``WIDTH`` pixels wide, one row of panels per slice shown)."""
    slices = choose_slices(data.fixed.shape[0], data.masks)
    crop = crop_box(data.fixed.shape[1:], data.masks, slices, data.spacing)
    shape = (crop[0].stop - crop[0].start, crop[1].stop - crop[1].start)
    labels = data.labels
    order = drawing_order(data.masks, labels, slices, crop)
    outlined = data.moving_mask is not None and data.warped_mask is not None

    panel_w = (WIDTH - LEFT - RIGHT - 3 * GAP) // 4
    panel_h = round(panel_w * min(max(shape[0] * data.spacing[0] / (shape[1] * data.spacing[1]), 0.5), 1.5))
    row_h = TITLE + panel_h + ROW_GAP
    legend_rows = -(-(min(len(labels), MAX_LEGEND_LABELS + 1) + 3 + (data.fixed_mask is not None)) // 2)
    header_h = LEGEND_TOP + LEGEND_ROW * max(legend_rows, 3) + 10
    sheet = _Sheet(WIDTH, header_h + row_h * len(slices))

    window = _window(data.fixed[slices][:, crop[0], crop[1]])
    others = {} if outlined else {"moving": _window(data.moving[slices][:, crop[0], crop[1]]),
                                  "warped": _window(data.warped[slices][:, crop[0], crop[1]])}
    norm = _jacobian_norm(data.jacobian[slices][:, crop[0], crop[1]])
    folding = False
    for row, z in enumerate(slices):
        top = header_h + row * row_h + TITLE
        before, after, grid, jac = (_Panel(sheet, LEFT + col * (panel_w + GAP), top, panel_w, panel_h, shape,
                                           data.spacing) for col in range(len(COLUMNS)))
        if data.volume:
            sheet.ax.text(LEFT / 2, top + panel_h / 2, f"slice {z}", rotation=90, ha="center", va="center",
                          color=FOREGROUND, fontsize=TITLE_FONT)
        fixed = _scaled(data.fixed[z][crop], window)
        fixed_outline = [(data.fixed_mask[z][crop], True)] if data.fixed_mask is not None else []
        if outlined:
            for panel, mask in ((before, data.moving_mask), (after, data.warped_mask)):
                panel.image(_grey(fixed))
                panel.outlines([(mask[z][crop], False), *fixed_outline], order)
        else:
            for panel, role, image in ((before, "moving", data.moving), (after, "warped", data.warped)):
                panel.image(np.stack([fixed, _scaled(image[z][crop], others[role]), fixed], axis=-1))
                panel.outlines(fixed_outline, order)
        if outlined and data.fixed_mask is not None:
            before.title(_dice_parts("before", data.moving_mask[z], data.fixed_mask[z], labels))
            after.title(_dice_parts("after", data.warped_mask[z], data.fixed_mask[z], labels))
        else:
            before.title([("before" if outlined else "before: fixed vs moving", FOREGROUND)])
            after.title([("after" if outlined else "after: fixed vs warped", FOREGROUND)])

        folding |= _draw_field(grid, jac, data, z, crop, fixed, norm)

    _legend(sheet, data, labels, outlined, folding, norm)
    return sheet.finish()

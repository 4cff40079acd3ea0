"""worker/preview.py: what ``preview.png`` shows, read back from the PNG's pixels.

The pairs are made here (ellipses, a known field) and registered by no network: the field is given,
and the rest (warped images, Jacobian, report labels) is computed by the same functions
``models.register.register_images`` uses, so ``write_preview`` sees what a job hands it.
"""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from models.field_maps import jacobian_image
from models.io.image import LABEL, Geometry, Image
from models.io.writers import displacement_image
from models.register import RegisteredFiles, RegistrationResult
from models.report import label_section
from models.resample import resample_to, warp_physical
from worker.preview import BACKGROUND, COLOURS, GAP, GRID_COLOUR, LEFT, RIGHT, TITLE, WIDTH, label_colour, write_preview
from worker.preview_data import MAX_SLICES, choose_slices, crop_box

NAMES = {1: "blood pool", 2: "myocardium"}


def heart(shape: tuple[int, ...], centre: tuple[float, float], radii: tuple[float, float], wall: float,
          slices: range | None = None) -> np.ndarray:
    """A label map of ellipses: 1 inside, 2 a ring of ``wall`` voxels around it (in ``slices`` only for 3-D)."""
    rows, cols = np.mgrid[:shape[-2], :shape[-1]]
    r = np.hypot((rows - centre[0]) / radii[0], (cols - centre[1]) / radii[1])
    plane = np.where(r < 1.0, 1, np.where(r < 1.0 + wall / min(radii), 2, 0)).astype(np.uint8)
    if len(shape) == 2:
        return plane
    volume = np.zeros(shape, np.uint8)
    volume[slices if slices is not None else slice(None)] = plane
    return volume


def scan(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """An MR-like image of a label map: grey tissue, dark wall, bright blood, some noise."""
    rng = np.random.default_rng(seed)
    image = np.choose(labels, [0.45, 0.95, 0.15]).astype(np.float32)
    return image + rng.normal(0, 0.03, labels.shape).astype(np.float32)


def make_done(moving_labels: np.ndarray, fixed_labels: np.ndarray, disp: np.ndarray,
              spacing: tuple[float, ...] | None = None,
              masks: tuple[str, ...] = ("moving_mask", "fixed_mask"), names: dict | None = None) -> RegisteredFiles:
    """What ``register_files`` returns for a pair drawn from two label maps, registered by the field
    ``disp`` (voxels, NumPy channel order), with the masks named in ``masks``."""
    geometry = Geometry.identity(disp.shape[0], spacing)
    fixed = Image(scan(fixed_labels, 1), geometry, source="fixed")
    moving = Image(scan(moving_labels, 2), geometry, source="moving")
    mm = Image(moving_labels, geometry, LABEL, "moving_mask") if "moving_mask" in masks else None
    fm = Image(fixed_labels, geometry, LABEL, "fixed_mask") if "fixed_mask" in masks else None
    field_mm = displacement_image(disp.astype(np.float32), fixed.to_sitk())
    warped_mask = warp_physical(mm, field_mm, fixed) if mm is not None else None
    report: dict = {}
    if mm is not None:
        report["labels"] = label_section(warped_mask, resample_to(mm, fixed).array,
                                         None if fm is None else fm.array, names or NAMES)
    result = RegistrationResult(disp, field_mm, warp_physical(moving, field_mm, fixed), warped_mask,
                                jacobian_image(field_mm), field_mm, report)
    images = {"fixed": fixed, "moving": moving, "moving_mask": mm, "fixed_mask": fm}
    return RegisteredFiles(result, images, {}, report)


def radial_field(shape: tuple[int, ...], centre: tuple[float, float], strength: float) -> np.ndarray:
    """In-plane field ``u = strength * (p - c) * g(p)``: a smooth bump, expansion near ``c`` for
    ``strength > 0`` and compression around it further out, no through-plane component."""
    rows, cols = np.mgrid[:shape[-2], :shape[-1]].astype(np.float64)
    dr, dc = rows - centre[0], cols - centre[1]
    bump = strength * np.exp(-(dr ** 2 + dc ** 2) / (2 * (shape[-1] / 6) ** 2))
    plane = np.stack([dr * bump, dc * bump])
    if len(shape) == 2:
        return plane.astype(np.float32)
    field = np.zeros((3, *shape), np.float32)
    field[1:] = plane[:, None]
    return field


def wave_field(shape: tuple[int, ...], amplitude: float, period: float) -> np.ndarray:
    """In-plane field along the columns, ``u = amplitude * sin(2 pi x / period)``: bands of
    expansion and compression (``det = 1 + amplitude * 2 pi / period * cos(...)``)."""
    field = np.zeros((len(shape), *shape), np.float32)
    field[-1] = amplitude * np.sin(2 * np.pi * np.arange(shape[-1]) / period)
    return field


def read_png(path) -> np.ndarray:
    pixels = matplotlib.image.imread(path)
    return (pixels[..., :3] * 255).round().astype(np.int16)


def has_colour(pixels: np.ndarray, colour: str, tolerance: int = 12, at_least: int = 20) -> bool:
    target = np.array(to_rgb(colour)) * 255
    return np.count_nonzero(np.abs(pixels - target).max(axis=-1) <= tolerance) >= at_least


PANEL = (WIDTH - LEFT - RIGHT - 3 * GAP) // 4  # a panel's width in pixels


def column_strip(pixels: np.ndarray, column: int) -> np.ndarray:
    """The pixels of one panel column (0 before, 1 after, 2 grid, 3 Jacobian), header included."""
    left = LEFT + column * (PANEL + GAP)
    return pixels[:, left + 2:left + PANEL - 2]


def panel_spans(pixels: np.ndarray) -> list[tuple[int, int]]:
    """The panels stacked in the first column, as (top, bottom) pixel rows: runs of picture rows
    (mostly not background) taller than a line of text."""
    background = np.array(to_rgb(BACKGROUND)) * 255
    filled = (np.abs(column_strip(pixels, 0) - background).max(axis=-1) > 6).mean(axis=1) > 0.5
    edges = np.flatnonzero(np.diff(np.concatenate([[0], filled.astype(np.int8), [0]])))
    return [(int(top), int(bottom)) for top, bottom in zip(edges[::2], edges[1::2]) if bottom - top > 60]


def rows_of_panels(pixels: np.ndarray) -> int:
    return len(panel_spans(pixels))


def panels(pixels: np.ndarray, column: int, rows: slice = slice(None)) -> np.ndarray:
    """The pictures of one column's panels (``rows`` of them), stacked: no header, no titles."""
    strip = column_strip(pixels, column)
    return np.concatenate([strip[top:bottom] for top, bottom in panel_spans(pixels)[rows]])


def title_band(pixels: np.ndarray, column: int, row: int = 0) -> np.ndarray:
    """The pixels of a panel's title line."""
    top = panel_spans(pixels)[row][0]
    return column_strip(pixels, column)[top - TITLE:top]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A 3-D pair with masks in slices 2..7 of 12 (the fixed heart a little bigger), registered by a
    field with bands of expansion and compression; 1 mm in-plane, 8 mm between slices."""
    shape = (12, 48, 48)
    moving = heart(shape, (24, 24), (6, 7), 3, range(2, 8))
    fixed = heart(shape, (25, 23), (7, 8), 3, range(2, 8))
    done = make_done(moving, fixed, wave_field(shape, 1.2, 24.0), (1.0, 1.0, 8.0))  # det 0.69 to 1.31
    path = write_preview(tmp_path_factory.mktemp("stack") / "preview.png", done)
    return done, read_png(path)


def test_a_stack_shows_one_row_per_labelled_slice_at_a_legible_size(stack):
    _, pixels = stack
    height, width = pixels.shape[:2]
    assert 1200 <= width <= 1600
    assert rows_of_panels(pixels) == 6  # slices 2..7, those with a label
    assert height < 6 * 360 + 300  # six rows of ~3 in and a header


def test_each_label_has_its_colour_in_the_outlines_and_the_legend(stack):
    _, pixels = stack
    before, after = panels(pixels, 0), panels(pixels, 1)
    for label in NAMES:
        assert has_colour(before, label_colour(label)) and has_colour(after, label_colour(label)), label
    header = pixels[:90]
    assert all(has_colour(header, label_colour(label), at_least=15) for label in NAMES)  # legend swatches
    unused = COLOURS[2]  # no label 3: its colour appears nowhere
    assert not has_colour(pixels, unused, tolerance=20, at_least=5)


def test_titles_carry_each_slices_dice_in_the_label_colours(stack):
    _, pixels = stack
    for column in (0, 1):  # before, after
        band = title_band(pixels, column)
        assert all(has_colour(band, label_colour(label), tolerance=30, at_least=8) for label in NAMES), column
    assert not any(has_colour(title_band(pixels, 2), label_colour(label), tolerance=30, at_least=8) for label in NAMES)


def test_the_jacobian_panel_shows_expansion_and_compression(stack):
    _, pixels = stack
    jacobian = panels(pixels, 3).astype(np.int32)
    red, blue = jacobian[..., 0] - jacobian[..., 2], jacobian[..., 2] - jacobian[..., 0]
    assert np.count_nonzero(red > 80) > 200 and np.count_nonzero(blue > 80) > 200


def test_the_grid_panel_draws_lines_over_the_dimmed_image(stack):
    _, pixels = stack
    grid = panels(pixels, 2)
    assert has_colour(grid, GRID_COLOUR, tolerance=25, at_least=500)


def test_panels_are_cropped_to_the_masks():
    shape = (3, 200, 200)
    mask = heart(shape, (100, 100), (10, 10), 3, range(3))
    rows, cols = crop_box(shape[1:], [mask], [0, 1, 2], (1.0, 1.0))
    assert 30 < rows.stop - rows.start < 60 and 30 < cols.stop - cols.start < 60
    assert rows.start < 87 and rows.stop > 113 and cols.start < 87 and cols.stop > 113
    assert crop_box(shape[1:], [], [0], (1.0, 1.0)) == (slice(0, 200), slice(0, 200))


def test_a_long_stack_is_capped_to_evenly_spaced_slices(tmp_path):
    shape = (40, 32, 32)
    mask = heart(shape, (16, 16), (5, 5), 2, range(40))
    assert choose_slices(40, [mask]) == [0, 4, 9, 13, 17, 22, 26, 30, 35, 39]
    done = make_done(mask, mask, np.zeros((3, *shape), np.float32))
    pixels = read_png(write_preview(tmp_path / "preview.png", done))
    assert rows_of_panels(pixels) == MAX_SLICES
    assert pixels.shape[0] < 4000


def test_a_2d_pair_is_one_row(tmp_path):
    moving, fixed = heart((64, 64), (32, 30), (9, 11), 3), heart((64, 64), (30, 32), (8, 10), 3)
    done = make_done(moving, fixed, radial_field((64, 64), (30, 32), 0.1), (1.4, 1.4),
                     names={1: "pool $x$", 2: r"wall $\bad$"})  # user text, not mathtext
    pixels = read_png(write_preview(tmp_path / "preview.png", done))
    assert rows_of_panels(pixels) == 1
    assert 1200 <= pixels.shape[1] <= 1600 and pixels.shape[0] < 600
    assert all(has_colour(panels(pixels, 1), label_colour(label)) for label in NAMES)


def test_a_pair_without_masks_overlays_fixed_and_moving(tmp_path):
    shape = (6, 40, 40)
    moving, fixed = heart(shape, (16, 16), (6, 6), 2, range(1, 5)), heart(shape, (22, 22), (6, 6), 2, range(1, 5))
    done = make_done(moving, fixed, np.zeros((3, *shape), np.float32), masks=())
    pixels = read_png(write_preview(tmp_path / "preview.png", done))
    assert rows_of_panels(pixels) == 6  # no mask: every slice, the whole slice
    before = panels(pixels, 0).astype(np.int32)
    magenta = (before[..., 0] - before[..., 1] > 60) & (before[..., 2] - before[..., 1] > 60)
    green = (before[..., 1] - before[..., 0] > 60) & (before[..., 1] - before[..., 2] > 60)
    assert np.count_nonzero(magenta) > 50 and np.count_nonzero(green) > 50  # the field moved the heart
    assert not any(has_colour(pixels, colour, tolerance=10, at_least=5) for colour in COLOURS[:2])


def test_a_moving_mask_without_a_fixed_mask_has_no_dice(tmp_path):
    shape = (4, 40, 40)
    mask = heart(shape, (20, 20), (6, 6), 2, range(4))
    done = make_done(mask, mask, radial_field(shape, (20, 20), 0.1), (1.0, 1.0, 5.0), masks=("moving_mask",))
    pixels = read_png(write_preview(tmp_path / "preview.png", done))
    assert rows_of_panels(pixels) == 4
    assert all(has_colour(panels(pixels, 1), label_colour(label)) for label in NAMES)
    assert not any(has_colour(title_band(pixels, 1), label_colour(label), tolerance=30, at_least=8) for label in NAMES)


def test_the_fixed_mask_is_outlined_in_dashes(tmp_path):
    """Slice 0 has only a moving mask, slice 3 only a fixed one: slice 3's colours are the fixed outline's."""
    shape = (4, 40, 40)
    moving, fixed = heart(shape, (20, 20), (6, 6), 2, range(0, 1)), heart(shape, (20, 20), (6, 6), 2, range(3, 4))
    pixels = read_png(write_preview(tmp_path / "preview.png", make_done(moving, fixed, np.zeros((3, *shape)))))
    assert rows_of_panels(pixels) == 2
    for column in (0, 1):
        fixed_only = panels(pixels, column, slice(1, 2))
        assert all(has_colour(fixed_only, label_colour(label)) for label in NAMES)
        assert has_colour(fixed_only, "#000000", tolerance=5, at_least=20)  # the dashes' black gaps

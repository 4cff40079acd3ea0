"""report.json's readable parts: ITK-order grid, label names, volumes and per-label, per-slice scores."""

import numpy as np
import pytest

from models.io.image import LABEL, Geometry, Image
from models.report import AXIS_ORDER, grid_section, label_names, label_section, parse_label_names


def test_grid_is_listed_in_itk_order_and_says_so():
    image = Image(np.zeros((5, 12, 16), np.float32), Geometry.identity(3, (1.25, 1.5, 8.0)))  # array (z, y, x)
    assert grid_section(image) == {"size": [16, 12, 5], "spacing_mm": [1.25, 1.5, 8.0], "axis_order": AXIS_ORDER}


def test_names_come_from_the_request_then_the_card_then_a_default():
    card = {"label_names": {"1": "RV", "2": "MYO"}}
    assert label_names([1, 2, 3], {"2": "myocardium"}, card) == {1: "RV", 2: "myocardium", 3: "label 3"}
    assert label_names([4], None, None) == {4: "label 4"}


def test_volumes_and_scores_per_label_and_slice():
    """A 3-slice stack of 2 × 1.5 × 10 mm voxels: every number checked by hand."""
    spacing = (2.0, 1.5, 10.0)  # ITK (x, y, z)
    fixed = np.zeros((3, 10, 10), np.uint8)
    fixed[:, 2:6, 2:6] = 2  # 16 voxels a slice
    moving = np.zeros_like(fixed)
    moving[:, 2:6, 4:8] = 2  # shifted two columns: overlap 8 of 16
    warped = fixed.copy()
    warped[2] = 0  # the last slice lost the label
    section = label_section(Image(warped, Geometry.identity(3, spacing), LABEL), moving, fixed, {2: "myocardium"})
    entry = section["2"]
    voxel_ml = 2.0 * 1.5 * 10.0 / 1000
    assert entry["name"] == "myocardium"
    assert entry["fixed"]["volume_ml"] == pytest.approx(48 * voxel_ml)
    assert entry["warped"]["volume_ml"] == pytest.approx(32 * voxel_ml)
    assert entry["before"]["dice"] == 50.0 and entry["after"]["dice"] == pytest.approx(80.0)
    assert entry["per_slice_dice"] == [100.0, 100.0, 0.0]
    first, _, lost = entry["per_slice"]
    assert first == {"dice": 100.0, "hd95_mm": 0.0, "asd_mm": 0.0}
    assert lost == {"dice": 0.0, "hd95_mm": None, "asd_mm": None}  # no warped label on that slice: no distance
    assert entry["before"]["hd95_mm"] == pytest.approx(4.0)  # two columns of 2 mm
    assert entry["after"]["asd_mm"] is not None


def test_a_slice_without_the_label_in_either_mask_has_no_scores():
    fixed = np.zeros((2, 8, 8), np.uint8)
    fixed[0, 2:5, 2:5] = 1
    entry = label_section(Image(fixed, Geometry.identity(3, (1.0, 1.0, 5.0)), LABEL), fixed, fixed, {1: "a"})["1"]
    assert entry["per_slice"][1] is None and entry["per_slice_dice"] == [100.0, None]
    assert entry["per_slice"][0]["hd95_mm"] == 0.0


def test_two_d_labels_have_areas_and_a_missing_fixed_mask_leaves_out_the_scores():
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:4] = 1
    section = label_section(Image(mask, Geometry.identity(2, (0.5, 2.0)), LABEL), mask, None, {1: "label 1"})
    assert section == {"1": {"name": "label 1", "moving": {"area_mm2": 6.0}, "warped": {"area_mm2": 6.0}}}


@pytest.mark.parametrize("text, words", [
    ("not json", "JSON object"),
    ('["RV"]', "JSON object"),
    ('{"RV": "1"}', "whole number > 0"),
    ('{"0": "background"}', "whole number > 0"),
    ('{"1": ""}', "1 to 64 characters"),
    ('{"1": "' + "x" * 65 + '"}', "1 to 64 characters"),
    ('{"1": "line\\nbreak"}', "printable"),
    ('{"1": 7}', "printable"),
])
def test_bad_label_names_are_refused_with_the_reason(text, words):
    with pytest.raises(ValueError, match=words):
        parse_label_names(text)


def test_label_names_are_normalised():
    assert parse_label_names('{"01": "RV", "2": "myocardium"}') == {"1": "RV", "2": "myocardium"}

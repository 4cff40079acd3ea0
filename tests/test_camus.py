"""CAMUS in both public layouts (models.data.camus) and the ``camus:`` spec kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.data.camus import load_camus
from models.data.pairs import MYOCARDIUM
from models.data.spec import describe_spec, load_pairs

# A tiny anisotropic echo image: ITK size (x=30, y=60), pixels 0.4 x 0.15 mm, so 12 mm wide and 9 mm
# high. On a 32 x 32 model grid the spacing is 12 / 32 = 0.375 mm: the width fills the grid, the 9 mm
# height covers 24 rows (rows 4..27) with 4 padding rows above and below.
SIZE_XY = (30, 60)
SPACING = (0.4, 0.15)
ORIGIN = (10.0, -5.0)
ED_VALUE, ES_VALUE, LABEL_BOOST = 50.0, 200.0, 5.0


def _labels(shift: int = 0) -> np.ndarray:
    """Array (y, x): 1 LV cavity, 2 myocardium around it, 3 left atrium below."""
    labels = np.zeros(SIZE_XY[::-1], np.uint8)
    labels[10 + shift : 40, 6:24] = MYOCARDIUM
    labels[14 + shift : 36, 10:20] = 1
    labels[44:56, 8:22] = 3
    return labels


def _write(array: np.ndarray, path: Path, spacing=SPACING, origin=ORIGIN) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def make_patient(folder: Path, number: int, extension: str = ".mhd", gt: bool = True,
                 views=("2CH", "4CH")) -> Path:
    name = f"patient{number:04d}"
    patient = folder / name
    patient.mkdir(parents=True)
    for view in views:
        (patient / f"Info_{view}.cfg").write_text("ED: 1\nES: 14\nNbFrame: 20\nSex: F\nAge: 60\nImageQuality: Good\n",
                                                  encoding="utf-8")
        for frame, value, labels in (("ED", ED_VALUE, _labels()), ("ES", ES_VALUE, _labels(shift=4))):
            image = (value + LABEL_BOOST * labels).astype(np.uint8)
            _write(image, patient / f"{name}_{view}_{frame}{extension}")
            if gt:
                _write(labels, patient / f"{name}_{view}_{frame}_gt{extension}")
    return patient


def ids(pairs) -> list[str]:
    return [p.pair_id for p in pairs]


def _physical_centroid(mask: np.ndarray, label: int, spacing_yx, origin_yx) -> np.ndarray:
    rows, cols = np.nonzero(mask == label)
    return np.asarray(origin_yx) + np.asarray(spacing_yx) * np.array([rows.mean(), cols.mean()])


# ---------------------------------------------------------------------------------------------------


def test_original_layout_pairs_on_the_model_grid(tmp_path):
    make_patient(tmp_path / "training", 1)
    assert (tmp_path / "training" / "patient0001" / "patient0001_2CH_ED.raw").is_file()
    pairs = load_camus(tmp_path, size=32)
    assert ids(pairs) == ["patient0001_2CH", "patient0001_4CH"]
    pair = pairs[0]
    assert pair.subject_id == "patient0001"
    assert pair.shape == (32, 32)
    assert pair.spacing_mm == pytest.approx((0.375, 0.375))
    # ED is moving, ES fixed (distinct intensities), float32
    assert pair.moving.dtype == np.float32 and pair.fixed.dtype == np.float32
    inside = pair.moving > 0
    assert ED_VALUE - 1 <= pair.moving[inside].min() and pair.moving.max() <= ED_VALUE + 3 * LABEL_BOOST + 1
    assert ES_VALUE - 1 <= pair.fixed[pair.fixed > 0].min()
    # aspect ratio kept: the short (9 mm) side is centred with zero padding, the long side fills the grid
    np.testing.assert_array_equal(np.flatnonzero(inside.any(axis=1)), np.arange(4, 28))
    assert inside[4:28].all()
    # labels: uint8, all kept, nearest-neighbour
    assert pair.moving_mask.dtype == np.uint8 and pair.fixed_mask.dtype == np.uint8
    assert set(np.unique(pair.moving_mask)) == {0, 1, 2, 3}


def test_labels_land_at_their_physical_place(tmp_path):
    make_patient(tmp_path, 1, views=("2CH",))
    [pair] = load_camus(tmp_path, view="2CH", size=32)
    # the model grid is centred on the image centre, with spacing 0.375 mm
    centre = np.asarray(ORIGIN[::-1]) + np.asarray(SPACING[::-1]) * (np.asarray(SIZE_XY[::-1]) - 1) / 2
    grid_origin = centre - 0.375 * 31 / 2
    for mask, labels in ((pair.moving_mask, _labels()), (pair.fixed_mask, _labels(shift=4))):
        for label in (1, MYOCARDIUM, 3):
            expected = _physical_centroid(labels, label, SPACING[::-1], ORIGIN[::-1])
            found = _physical_centroid(mask, label, (0.375, 0.375), grid_origin)
            np.testing.assert_allclose(found, expected, atol=0.375 / 2)


def test_es_frame_on_another_grid_lands_where_its_anatomy_is(tmp_path):
    patient = make_patient(tmp_path / "same", 1, views=("2CH",))
    [reference] = load_camus(tmp_path / "same", view="2CH", size=32)
    # the same ES frame stored at twice the x resolution: sub-pixel centres at -0.1 / +0.1 mm
    for suffix, dtype in (("", np.uint8), ("_gt", np.uint8)):
        path = patient / f"patient0001_2CH_ES{suffix}.mhd"
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(dtype)
        _write(np.repeat(array, 2, axis=1), path, spacing=(0.2, 0.15), origin=(ORIGIN[0] - 0.1, ORIGIN[1]))
    [pair] = load_camus(tmp_path / "same", view="2CH", size=32)
    assert pair.spacing_mm == reference.spacing_mm  # the grid comes from the ED frame
    np.testing.assert_array_equal(pair.moving_mask, reference.moving_mask)
    assert np.mean(pair.fixed_mask != reference.fixed_mask) < 0.02  # only nearest-neighbour ties differ
    for label in (1, MYOCARDIUM, 3):
        np.testing.assert_allclose(_physical_centroid(pair.fixed_mask, label, (1, 1), (0, 0)),
                                   _physical_centroid(reference.fixed_mask, label, (1, 1), (0, 0)), atol=0.5)


def test_default_grid_size(tmp_path):
    make_patient(tmp_path, 1, views=("4CH",))
    [pair] = load_camus(tmp_path, view="4CH")
    assert pair.shape == (128, 128) and pair.spacing_mm == pytest.approx((12 / 128, 12 / 128))


def test_newer_nifti_layout_matches_the_original(tmp_path):
    make_patient(tmp_path / "old" / "training", 1)
    make_patient(tmp_path / "new" / "database_nifti", 1, extension=".nii.gz")
    old, new = load_camus(tmp_path / "old", size=32), load_camus(tmp_path / "new", size=32)
    assert ids(old) == ids(new)
    for a, b in zip(old, new, strict=True):
        np.testing.assert_allclose(a.moving, b.moving, atol=1e-3)
        np.testing.assert_allclose(a.fixed, b.fixed, atol=1e-3)
        np.testing.assert_array_equal(a.moving_mask, b.moving_mask)
        assert a.spacing_mm == pytest.approx(b.spacing_mm)
    # patient folders directly under PATH work too
    make_patient(tmp_path / "flat", 2, extension=".nii.gz")
    assert ids(load_camus(tmp_path / "flat", view="2CH", size=32)) == ["patient0002_2CH"]


def test_single_slice_3d_file_is_read_as_2d(tmp_path):
    patient = make_patient(tmp_path, 1, views=("2CH",), extension=".nii.gz")
    for frame, value in (("ED", ED_VALUE), ("ES", ES_VALUE)):
        volume = (value + LABEL_BOOST * _labels())[None].astype(np.float32)
        _write(volume, patient / f"patient0001_2CH_{frame}.nii.gz", spacing=(*SPACING, 1.0), origin=(*ORIGIN, 0.0))
    [pair] = load_camus(tmp_path, view="2CH", size=32)
    assert pair.shape == (32, 32) and ED_VALUE + LABEL_BOOST < pair.moving.max() <= ED_VALUE + 3 * LABEL_BOOST


def test_views_and_missing_ground_truth(tmp_path):
    make_patient(tmp_path / "training", 1)
    make_patient(tmp_path / "testing", 451, gt=False)  # the original release withholds the test labels
    assert ids(load_camus(tmp_path, view="4CH", size=32)) == ["patient0001_4CH", "patient0451_4CH"]
    assert ids(load_camus(tmp_path, view="2ch", size=32)) == ["patient0001_2CH", "patient0451_2CH"]
    test_pairs = load_camus(tmp_path, split="test", size=32)
    assert ids(test_pairs) == ["patient0451_2CH", "patient0451_4CH"]
    assert all(p.moving_mask is None and p.fixed_mask is None for p in test_pairs)


def _subjects(path: Path, split: str) -> list[str]:
    return sorted({p.subject_id for p in load_camus(path, split=split, view="2CH", size=8)})


def test_splits(tmp_path):
    layout = tmp_path / "layout"
    for number in (1, 2, 3, 4, 5):
        make_patient(layout / "training", number, views=("2CH",))
    make_patient(layout / "testing", 451, views=("2CH",))
    assert _subjects(layout, "train") == [f"patient000{k}" for k in (1, 2, 3, 4)]
    assert _subjects(layout, "val") == ["patient0005"]  # the last 20% by number
    assert _subjects(layout, "test") == ["patient0451"]  # the testing/ folder
    assert len(_subjects(layout, "all")) == 6

    flat = tmp_path / "flat"
    for number in (1, 2, 3, 451):
        make_patient(flat, number, views=("2CH",), extension=".nii.gz")
    assert [_subjects(flat, s) for s in ("train", "val", "test")] == [
        ["patient0001", "patient0002"], ["patient0003"], ["patient0451"]]  # 451+: the challenge test set

    # the official lists win when present; patients no list names are only in "all"
    lists = flat / "database_split"
    lists.mkdir()
    (lists / "subgroup_training.txt").write_text("patient0451\npatient0001\n", encoding="utf-8")
    (lists / "subgroup_validation.txt").write_text("patient0002\n", encoding="utf-8")
    (lists / "subgroup_testing.txt").write_text("patient0003\n", encoding="utf-8")
    assert [_subjects(flat, s) for s in ("train", "val", "test")] == [
        ["patient0001", "patient0451"], ["patient0002"], ["patient0003"]]
    (lists / "subgroup_testing.txt").write_text("patient0002\n", encoding="utf-8")
    with pytest.raises(ValueError, match="patient0002 are in both .*subgroup_validation.txt"):
        _subjects(flat, "test")


def test_spec_strings(tmp_path):
    assert describe_spec("camus:/no/such:train:view=4CH") == {
        "kind": "camus", "path": "/no/such", "split": "train", "view": "4CH", "size": 128,
    }  # describing reads nothing
    assert describe_spec("camus:/x:size=64:view=both")["view"] == "both"
    with pytest.raises(ValueError, match="view=3CH"):
        describe_spec("camus:/x:view=3CH")
    with pytest.raises(ValueError, match="needs a path"):
        describe_spec("camus:")
    make_patient(tmp_path / "training", 1)
    pairs = load_pairs(f"camus:{tmp_path}:train:view=4CH:size=16")
    assert ids(pairs) == ["patient0001_4CH"] and pairs[0].shape == (16, 16)


# ---------------------------------------------------------------------------------------------------
# errors


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_camus(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no CAMUS patients"):
        load_camus(tmp_path)
    with pytest.raises(ValueError, match="unknown CAMUS split"):
        load_camus(tmp_path, split="dev")
    with pytest.raises(ValueError, match="unknown CAMUS view"):
        load_camus(tmp_path, view="3CH")

    patient = make_patient(tmp_path / "a", 1)
    (patient / "patient0001_4CH_ES.mhd").unlink()
    with pytest.raises(FileNotFoundError, match=r"4CH ES image of patient0001 is missing.*patient0001_4CH_ES"):
        load_camus(tmp_path / "a")
    assert len(load_camus(tmp_path / "a", view="2CH", size=8)) == 1

    patient = make_patient(tmp_path / "b", 1, views=("2CH",))
    (patient / "patient0001_2CH_ES_gt.mhd").unlink()
    with pytest.raises(FileNotFoundError, match=r"2CH ED labels of patient0001 have no ES partner"):
        load_camus(tmp_path / "b", view="2CH")

    patient = make_patient(tmp_path / "c", 1, views=("2CH",))
    _write(_labels(), patient / "patient0001_2CH_ED_gt.mhd", spacing=(0.3, 0.3))
    with pytest.raises(ValueError, match="patient0001_2CH_ED_gt.mhd is not on the grid of"):
        load_camus(tmp_path / "c", view="2CH")

    patient = make_patient(tmp_path / "d", 1, views=("2CH",))
    volume = np.arange(90, dtype=np.uint8).reshape(3, 6, 5)
    _write(volume, patient / "patient0001_2CH_ED.mhd", spacing=(1, 1, 1), origin=(0, 0, 0))
    with pytest.raises(ValueError, match="expected a 2D CAMUS image, got 3D"):
        load_camus(tmp_path / "d", view="2CH")

"""ACDC in its official NIfTI layout (models.data.acdc_nifti) and the ``acdc:`` spec kind."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from models.data.acdc_nifti import load_acdc_nifti
from models.data.crop import mask_centroid
from models.data.pairs import MYOCARDIUM
from models.data.spec import describe_spec, load_pairs

# Volumes are (x, y, z) = (40, 36, 4) as nibabel stores them, voxels 1.5 x 1.25 x 8 mm. The myocardium
# ring is centred on (x=20, y=15); slice z=0 has no myocardium, z=3 has it in ED only, so slices
# z=1 and z=2 (K=2, 3) make pairs.
SHAPE = (40, 36, 4)
SPACING = (1.5, 1.25, 8.0)
CENTRE_X, CENTRE_Y = 20, 15
ED_FRAME, ES_FRAME = 1, 12
ED_VALUE, ES_VALUE, RING_BOOST = 100.0, 200.0, 50.0


def _labels(outer: float, z_with_myo: tuple[int, ...]) -> np.ndarray:
    xx, yy = np.mgrid[: SHAPE[0], : SHAPE[1]]
    radius = np.hypot(xx - CENTRE_X, yy - CENTRE_Y)
    labels = np.zeros(SHAPE, np.uint8)
    for z in z_with_myo:
        labels[..., z][radius < outer - 3] = 3  # LV cavity
        labels[..., z][(radius >= outer - 3) & (radius < outer)] = MYOCARDIUM
        labels[2:6, 2:8, z] = 1  # RV
    return labels


def _save(array: np.ndarray, path: Path, spacing=SPACING) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def make_patient(
    folder: Path,
    number: int,
    info: str | None = None,
    ed_labels: np.ndarray | None = None,
    es_labels: np.ndarray | None = None,
) -> Path:
    name = f"patient{number:03d}"
    patient = folder / name
    patient.mkdir(parents=True)
    if info is None:
        info = f"ED: {ED_FRAME}\nES: {ES_FRAME}\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n"
    (patient / "Info.cfg").write_text(info, encoding="utf-8")
    ed_labels = _labels(9, (1, 2, 3)) if ed_labels is None else ed_labels
    es_labels = _labels(7, (1, 2)) if es_labels is None else es_labels
    for frame, labels, value in ((ED_FRAME, ed_labels, ED_VALUE), (ES_FRAME, es_labels, ES_VALUE)):
        image = np.full(labels.shape, value, np.float32) + RING_BOOST * (labels == MYOCARDIUM)
        _save(image.astype(np.int16), patient / f"{name}_frame{frame:02d}.nii.gz")
        _save(labels, patient / f"{name}_frame{frame:02d}_gt.nii.gz")
    (patient / f"{name}_4d.nii.gz").write_bytes(b"not read")  # the cine: ignored
    return patient


def make_release(root: Path, training=(1, 2, 3, 4, 5), testing=(101,)) -> Path:
    for number in training:
        make_patient(root / "training", number)
    for number in testing:
        make_patient(root / "testing", number)
    return root


def ids(pairs) -> list[str]:
    return [p.pair_id for p in pairs]


# ---------------------------------------------------------------------------------------------------


def test_pairs_of_one_patient(tmp_path):
    make_patient(tmp_path, 1)
    pairs = load_acdc_nifti(tmp_path)
    assert ids(pairs) == ["patient001_slice_2", "patient001_slice_3"]  # z=0 no myo, z=3 ED only
    for pair in pairs:
        assert pair.subject_id == "patient001"
        assert pair.shape == (128, 128)
        # ED is the moving image, ES the fixed one (distinct intensities)
        assert pair.moving.dtype == np.float32 and pair.fixed.dtype == np.float32
        assert pair.moving.max() == ED_VALUE + RING_BOOST and pair.fixed.max() == ES_VALUE + RING_BOOST
        assert pair.moving_mask.dtype == np.uint8 and pair.fixed_mask.dtype == np.uint8
        assert set(np.unique(pair.moving_mask)) == {0, 1, 2, 3}
        assert np.all(pair.moving[pair.moving_mask == MYOCARDIUM] == ED_VALUE + RING_BOOST)
        assert np.all(pair.fixed[pair.fixed_mask == MYOCARDIUM] == ES_VALUE + RING_BOOST)
        # in-plane spacing in array order (y, x), not (x, y)
        assert pair.spacing_mm == pytest.approx((1.25, 1.5))


def test_crop_is_centred_on_the_ed_myocardium(tmp_path):
    make_patient(tmp_path, 1)
    pair = load_acdc_nifti(tmp_path)[0]
    # the symmetric ring's centroid (row y=15, column x=20) lands on index 64 = 128 // 2
    assert mask_centroid(pair.moving_mask, MYOCARDIUM) == pytest.approx((64.0, 64.0))
    expected = _labels(9, (1,))[..., 1].T  # (y, x) slice, as the array order of the reader
    top, left = 64 - CENTRE_Y, 64 - CENTRE_X
    window = pair.moving_mask[top : top + SHAPE[1], left : left + SHAPE[0]]
    np.testing.assert_array_equal(window, expected)
    assert pair.moving_mask.sum() == expected.sum()  # nothing else: the rest is padding
    assert pair.moving[0, 0] == 0.0  # zero padding

    small = load_acdc_nifti(tmp_path, crop=16)
    assert all(p.shape == (16, 16) for p in small)
    native = load_acdc_nifti(tmp_path, crop=None)
    assert all(p.shape == (36, 40) for p in native)
    assert load_acdc_nifti(tmp_path, label=7) == []


def test_splits_of_the_official_layout(tmp_path):
    root = make_release(tmp_path)
    subjects = {split: sorted({p.subject_id for p in load_acdc_nifti(root, split=split)})
                for split in ("train", "val", "test", "all")}
    assert subjects["train"] == [f"patient00{k}" for k in (1, 2, 3, 4)]
    assert subjects["val"] == ["patient005"]  # the last 20% of training/ by number
    assert subjects["test"] == ["patient101"]  # the testing/ folder
    assert subjects["all"] == sorted(subjects["train"] + subjects["val"] + subjects["test"])
    assert ids(load_acdc_nifti(root / "testing")) == ["patient101_slice_2", "patient101_slice_3"]


def test_splits_of_a_flat_folder_and_database_wrapper(tmp_path):
    flat = tmp_path / "flat"
    for number in (1, 2, 3, 101):
        make_patient(flat, number)
    subjects = {split: sorted({p.subject_id for p in load_acdc_nifti(flat, split=split)})
                for split in ("train", "val", "test")}
    assert subjects == {"train": ["patient001", "patient002"], "val": ["patient003"], "test": ["patient101"]}

    wrapped = make_release(tmp_path / "release" / "database", training=(1,), testing=())
    assert ids(load_acdc_nifti(wrapped.parent)) == ["patient001_slice_2", "patient001_slice_3"]


def test_spec_strings(tmp_path):
    root = make_release(tmp_path / "odd:name")
    assert describe_spec("acdc:/no/such/folder:val") == {
        "kind": "acdc", "path": "/no/such/folder", "split": "val", "crop": 128, "label": MYOCARDIUM,
    }  # describing reads nothing
    assert describe_spec("acdc:/x:test:crop=none:label=3")["crop"] is None
    assert describe_spec(f"acdc:{root}")["path"] == str(root)
    assert ids(load_pairs(f"acdc:{root}:val")) == ["patient005_slice_2", "patient005_slice_3"]
    assert all(p.shape == (32, 32) for p in load_pairs(f"acdc:{root}:test:crop=32"))
    with pytest.raises(ValueError, match="needs a path"):
        describe_spec("acdc:")
    with pytest.raises(ValueError, match="crop=0"):
        describe_spec("acdc:/x:crop=0")


# ---------------------------------------------------------------------------------------------------
# errors


def test_errors_for_folders_and_splits(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_acdc_nifti(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no ACDC patients"):
        load_acdc_nifti(tmp_path)
    with pytest.raises(ValueError, match="unknown ACDC split 'dev'"):
        load_acdc_nifti(tmp_path, split="dev")
    with pytest.raises(ValueError, match="crop must be"):
        load_acdc_nifti(tmp_path, crop=0)


@pytest.mark.parametrize(
    ("info", "error", "message"),
    [
        ("ED: one\nES: 12\n", ValueError, r"Info.cfg: ED must be a frame number, got 'one'"),
        ("ED: 1\nGroup: NOR\n", ValueError, r"Info.cfg: no 'ES:' line"),
        ("ED: 1\nES: 7\n", FileNotFoundError, r"image file of frame 7 is missing.*patient001_frame07.nii.gz"),
    ],
)
def test_errors_in_info_cfg(tmp_path, info, error, message):
    make_patient(tmp_path, 1, info=info)
    with pytest.raises(error, match=message):
        load_acdc_nifti(tmp_path)


def test_error_when_info_cfg_is_missing(tmp_path):
    patient = make_patient(tmp_path, 1)
    (patient / "Info.cfg").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient001[/\\]Info.cfg is missing"):
        load_acdc_nifti(tmp_path)


def test_errors_for_missing_frames(tmp_path):
    patient = make_patient(tmp_path, 1)
    (patient / "patient001_frame12_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"label \(gt\) file of frame 12 is missing"):
        load_acdc_nifti(tmp_path)
    (patient / "patient001_frame01.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file of frame 1 is missing.*patient001_frame01.nii.gz"):
        load_acdc_nifti(tmp_path)


def test_errors_for_grids(tmp_path):
    patient = make_patient(tmp_path / "a", 1)
    _save(_labels(9, (1, 2, 3)), patient / "patient001_frame01_gt.nii.gz", spacing=(1.5, 1.5, 8.0))
    with pytest.raises(ValueError, match="not on the same grid"):
        load_acdc_nifti(tmp_path / "a")

    patient = make_patient(tmp_path / "b", 1)
    _save(np.zeros((40, 36, 3), np.uint8), patient / "patient001_frame12_gt.nii.gz")
    with pytest.raises(ValueError, match="not on the same grid"):
        load_acdc_nifti(tmp_path / "b")

    make_patient(tmp_path / "c", 1, es_labels=_labels(7, (1, 2))[..., :3])  # one slice fewer
    with pytest.raises(ValueError, match="ED frame .* and ES frame .* differ in size"):
        load_acdc_nifti(tmp_path / "c")

    patient = make_patient(tmp_path / "d", 1)
    for suffix in ("", "_gt"):
        _save(_labels(9, (1,))[..., 1], patient / f"patient001_frame01{suffix}.nii.gz")
    with pytest.raises(ValueError, match="expected a 3D volume"):
        load_acdc_nifti(tmp_path / "d")

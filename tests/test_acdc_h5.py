"""ACDC HDF5 reader (models.data.acdc_h5) and the crop helpers (models.data.crop), on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.data.acdc_h5 import load_acdc_h5
from models.data.crop import crop_or_pad, mask_centroid
from models.data.pairs import MYOCARDIUM

H, W = 40, 36
CENTER = (20, 18)
ED_RADII = (3.0, 6.0)  # LV inside 3, myocardium 3..6
ES_RADII = (2.0, 4.5)  # a smaller ring at ES, so ED and ES masks differ


# ---------------------------------------------------------------------------------------------------
# fixture builders


def ring_label(center: tuple[int, int] | None, radii: tuple[float, float]) -> np.ndarray:
    """A (H, W) label map: LV disc (3), myocardium ring (2) around it, an RV block (1) to the side."""
    label = np.zeros((H, W), np.uint8)
    label[18:23, 25:28] = 1  # RV-ish block beside the heart, present even where the ring is absent
    if center is not None:
        yy, xx = np.mgrid[:H, :W]
        dist = np.hypot(yy - center[0], xx - center[1])
        label[dist < radii[1]] = MYOCARDIUM
        label[dist < radii[0]] = 3
    return label


def frame_image(k: int, es: bool) -> np.ndarray:
    """ED values in [0, 0.3), ES values in [0.5, 0.8); the base encodes K, a ramp encodes position."""
    ramp = 1e-4 * np.arange(H * W, dtype=np.float32).reshape(H, W)
    return (np.float32(0.5 if es else 0.0) + np.float32(0.01 * k) + ramp).astype(np.float32)


def expected_value(k: int, es: bool, y: int, x: int) -> float:
    return float(frame_image(k, es)[y, x])


def write_h5(path: Path, image: np.ndarray | None, label: np.ndarray | None) -> None:
    with h5py.File(path, "w") as handle:
        if image is not None:
            handle.create_dataset("image", data=image)
        if label is not None:
            handle.create_dataset("label", data=label)


Slices = list[tuple[tuple[int, int] | None, tuple[int, int] | None]]  # per K: (ED centre, ES centre)


def make_patient(data_dir: Path, number: int, storage: str, slices: Slices) -> None:
    """Write one patient as ``slices`` or ``volume`` files; each entry gives the ring centres per frame."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name = f"patient{number:03d}"
    for frame, es in (("frame01", False), ("frame02", True)):
        images = [frame_image(k, es) for k in range(1, len(slices) + 1)]
        labels = [ring_label(pair[int(es)], ES_RADII if es else ED_RADII) for pair in slices]
        if storage == "volume":
            write_h5(data_dir / f"{name}_{frame}.h5", np.stack(images), np.stack(labels))
        else:
            for k, (image, label) in enumerate(zip(images, labels, strict=True), start=1):
                write_h5(data_dir / f"{name}_{frame}_slice_{k}.h5", image, label)


def write_lists(root: Path, train: list[int], val: list[int]) -> None:
    for list_name, numbers in (("train.list", train), ("val.list", val)):
        lines = [f"patient{n:03d}_frame0{f}" for n in numbers for f in (1, 2)]
        (root / list_name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_mixed(root: Path) -> Path:
    """patient001 slices (K=1 and 4 usable), patient002 volume (K=2, 3), patient003 slices (K=1..11)."""
    c = CENTER
    make_patient(root / "data", 1, "slices", [(c, c), (c, None), (None, c), (c, c)])
    make_patient(root / "data", 2, "volume", [(None, None), (c, c), (c, c)])
    make_patient(root / "data", 3, "slices", [(c, c)] * 11)
    return root


def ids(pairs) -> list[str]:
    return [p.pair_id for p in pairs]


P1 = ["patient001_slice_1", "patient001_slice_4"]
P2 = ["patient002_slice_2", "patient002_slice_3"]
P3 = [f"patient003_slice_{k}" for k in range(1, 12)]


# ---------------------------------------------------------------------------------------------------
# crop helpers


def test_crop_or_pad_centre_lands_at_half_size():
    array = np.arange(100, dtype=np.int16).reshape(10, 10)
    out = crop_or_pad(array, (4, 6), (4, 5))
    assert out.shape == (4, 5) and out.dtype == np.int16
    assert out[2, 2] == array[4, 6]
    np.testing.assert_array_equal(out, array[2:6, 4:9])


def test_crop_or_pad_zero_pads_outside_and_rounds_half_up():
    array = np.ones((5, 5), np.float32)
    out = crop_or_pad(array, (0.5, 4.4), (4, 4))  # rounds to (1, 4): rows -1..2, cols 2..5
    assert out.dtype == np.float32
    expected = np.zeros((4, 4), np.float32)
    expected[1:, :3] = 1
    np.testing.assert_array_equal(out, expected)
    assert not crop_or_pad(array, (50, 50), (3, 3)).any()  # window entirely outside: all padding


def test_crop_or_pad_any_ndim():
    line = np.arange(6)
    np.testing.assert_array_equal(crop_or_pad(line, (1,), (4,)), [0, 0, 1, 2])
    volume = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    out = crop_or_pad(volume, (2, 2, 3), (2, 3, 8))
    assert out.shape == (2, 3, 8) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 1:7], volume[1:3, 1:4, :])
    assert not out[:, :, 0].any() and not out[:, :, 7].any()


def test_crop_or_pad_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one entry per axis"):
        crop_or_pad(np.zeros((4, 4)), (1, 1, 1), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        crop_or_pad(np.zeros((4, 4)), (1, 1), (0, 2))
    with pytest.raises(ValueError, match="finite"):
        crop_or_pad(np.zeros((4, 4)), (float("nan"), 1), (2, 2))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    center=st.tuples(st.floats(-6, 12), st.floats(-6, 12)),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_crop_or_pad_matches_elementwise_definition(shape, center, size):
    array = np.arange(1, shape[0] * shape[1] + 1).reshape(shape)
    out = crop_or_pad(array, center, size)
    starts = [int(np.floor(c + 0.5)) - s // 2 for c, s in zip(center, size, strict=True)]
    for i in range(size[0]):
        for j in range(size[1]):
            y, x = starts[0] + i, starts[1] + j
            inside = 0 <= y < shape[0] and 0 <= x < shape[1]
            assert out[i, j] == (array[y, x] if inside else 0)


def test_mask_centroid():
    mask = np.zeros((6, 8), np.uint8)
    assert mask_centroid(mask, 2) is None
    mask[1:4, 2:4] = 2  # rows 1..3, cols 2..3
    mask[5, 7] = 1
    assert mask_centroid(mask, 2) == pytest.approx((2.0, 2.5))
    assert mask_centroid(mask, 1) == pytest.approx((5.0, 7.0))
    volume = np.zeros((3, 4, 5), np.uint8)
    volume[2, 1, 3] = volume[0, 3, 1] = 7
    assert mask_centroid(volume, 7) == pytest.approx((1.0, 2.0, 2.0))


# ---------------------------------------------------------------------------------------------------
# reading pairs


def test_pairs_keep_only_slices_with_myocardium_in_both_frames(tmp_path):
    pairs = load_acdc_h5(make_mixed(tmp_path), "all", crop=24)
    assert ids(pairs) == P1 + P2 + P3  # patient, then slice number numerically (slice_10 after slice_9)
    for pair in pairs:
        assert pair.subject_id == pair.pair_id.split("_slice_")[0]
        assert pair.spacing_mm is None
        assert pair.moving.dtype == np.float32 and pair.fixed.dtype == np.float32
        assert pair.moving_mask.dtype == np.uint8 and pair.fixed_mask.dtype == np.uint8
        assert pair.shape == (24, 24) and pair.moving_mask.shape == (24, 24)
        assert set(np.unique(pair.moving_mask)) == {0, 1, 2, 3}  # all labels kept, not just myocardium


def test_crop_centres_moving_myocardium_and_ed_is_moving(tmp_path):
    pairs = load_acdc_h5(make_mixed(tmp_path), "all", crop=24)
    cy, cx = CENTER
    for pair in pairs:
        k = int(pair.pair_id.rsplit("_", 1)[1])
        assert mask_centroid(pair.moving_mask, MYOCARDIUM) == pytest.approx((12.0, 12.0))
        # ED (frame01) is moving, ES (frame02) fixed, and slice K of a volume is its K-th plane
        assert pair.moving[12, 12] == pytest.approx(expected_value(k, False, cy, cx))
        assert pair.fixed[12, 12] == pytest.approx(expected_value(k, True, cy, cx))
        assert pair.moving.max() < 0.3 and pair.fixed.min() >= 0.5
        # the masks come from their own frame: the ES ring is the smaller one
        assert (pair.moving_mask == MYOCARDIUM).sum() > (pair.fixed_mask == MYOCARDIUM).sum()
        # the window is the same for both frames
        np.testing.assert_allclose(pair.fixed - pair.moving, 0.5, atol=1e-5)


def test_crop_larger_than_image_is_zero_padded(tmp_path):
    pairs = load_acdc_h5(make_mixed(tmp_path), "val", crop=48)  # 40 x 36 images, centroid (20, 18)
    pair = pairs[0]
    assert pair.shape == (48, 48)
    # rows 20-24 .. 20+23 -> 4 rows of padding above, 4 below; columns 18-24 -> 6 left, 6 right
    assert not pair.moving[:4].any() and not pair.moving[44:].any()
    assert not pair.fixed[:, :6].any() and not pair.fixed[:, 42:].any()
    assert not pair.moving_mask[:4].any() and not pair.fixed_mask[:, 42:].any()
    k = int(pair.pair_id.rsplit("_", 1)[1])
    np.testing.assert_allclose(pair.moving[4:44, 6:42], frame_image(k, False))
    np.testing.assert_allclose(pair.fixed[4:44, 6:42], frame_image(k, True))


def test_centroid_near_edge_is_zero_padded(tmp_path):
    make_patient(tmp_path / "data", 7, "slices", [((6, 6), (6, 6))])
    (pair,) = load_acdc_h5(tmp_path, crop=24)
    assert pair.pair_id == "patient007_slice_1"
    assert mask_centroid(pair.moving_mask, MYOCARDIUM) == pytest.approx((12.0, 12.0))
    assert not pair.moving[:6].any() and not pair.moving[:, :6].any()  # window starts at (-6, -6)
    np.testing.assert_allclose(pair.moving[6:, 6:], frame_image(1, False)[:18, :18])
    np.testing.assert_allclose(pair.fixed[6:, 6:], frame_image(1, True)[:18, :18])


def test_crop_none_keeps_native_grid(tmp_path):
    pairs = load_acdc_h5(make_mixed(tmp_path), "all", crop=None)
    assert all(p.shape == (H, W) for p in pairs)
    np.testing.assert_array_equal(pairs[0].moving, frame_image(1, False))


def test_split_without_lists_follows_storage_kind(tmp_path):
    root = make_mixed(tmp_path)
    assert ids(load_acdc_h5(root, "train", crop=16)) == P1 + P3  # slice-stored patients train
    assert ids(load_acdc_h5(root, "val", crop=16)) == P2  # volume-stored patients validate
    assert ids(load_acdc_h5(root, crop=16)) == P1 + P2 + P3  # split defaults to all


def test_split_with_lists_overrides_storage_kind(tmp_path):
    root = make_mixed(tmp_path)
    make_patient(root / "data", 4, "slices", [(CENTER, CENTER)])  # named by no list: only in "all"
    write_lists(root, train=[1, 2], val=[3])
    assert ids(load_acdc_h5(root, "train", crop=16)) == P1 + P2
    assert ids(load_acdc_h5(root, "val", crop=16)) == P3
    assert ids(load_acdc_h5(root, "all", crop=16)) == P1 + P2 + P3 + ["patient004_slice_1"]


def test_data_folder_itself_finds_lists_next_to_it(tmp_path):
    root = make_mixed(tmp_path)
    write_lists(root, train=[1, 2], val=[3])
    assert ids(load_acdc_h5(root / "data", "val", crop=16)) == P3
    assert ids(load_acdc_h5(str(root / "data"), "train", crop=16)) == P1 + P2


def test_volume_only_folder_splits_last_fifth_to_val(tmp_path):
    for number in (5, 1, 3, 4, 2):
        make_patient(tmp_path / "data", number, "volume", [(CENTER, CENTER), (CENTER, CENTER)])
    train = load_acdc_h5(tmp_path, "train", crop=16)
    val = load_acdc_h5(tmp_path, "val", crop=16)
    assert [p.subject_id for p in train] == [f"patient00{n}" for n in (1, 1, 2, 2, 3, 3, 4, 4)]
    assert ids(val) == ["patient005_slice_1", "patient005_slice_2"]
    assert ids(load_acdc_h5(tmp_path, "all", crop=16)) == ids(train) + ids(val)


def test_single_patient_folder_is_all_train(tmp_path):
    make_patient(tmp_path, 9, "volume", [(CENTER, CENTER)])  # flat folder, no data/ sub-folder
    assert ids(load_acdc_h5(tmp_path, "train", crop=16)) == ["patient009_slice_1"]
    assert load_acdc_h5(tmp_path, "val", crop=16) == []


def test_ssl4mis_slices_subfolder_is_read(tmp_path):
    make_patient(tmp_path / "data", 1, "volume", [(CENTER, CENTER)])
    make_patient(tmp_path / "data" / "slices", 2, "slices", [(CENTER, CENTER), (None, None)])
    assert ids(load_acdc_h5(tmp_path, "train", crop=16)) == ["patient002_slice_1"]
    assert ids(load_acdc_h5(tmp_path, "val", crop=16)) == ["patient001_slice_1"]


def test_patient_stored_both_ways_is_read_once_from_volumes(tmp_path):
    make_patient(tmp_path / "data", 1, "volume", [(CENTER, CENTER), (CENTER, CENTER)])
    make_patient(tmp_path / "data", 1, "slices", [(CENTER, CENTER), (CENTER, CENTER)])
    assert ids(load_acdc_h5(tmp_path, crop=16)) == ["patient001_slice_1", "patient001_slice_2"]


def test_label_argument_selects_structure(tmp_path):
    make_patient(tmp_path / "data", 1, "slices", [((15, 15), (15, 15))])
    (pair,) = load_acdc_h5(tmp_path, crop=10, label=3)  # centred on the LV disc, same centre
    assert mask_centroid(pair.moving_mask, 3) == pytest.approx((5.0, 5.0))


# ---------------------------------------------------------------------------------------------------
# errors


def test_unknown_split_and_bad_crop(tmp_path):
    root = make_mixed(tmp_path)
    with pytest.raises(ValueError, match="unknown ACDC split 'test'.*train, val, all"):
        load_acdc_h5(root, "test")
    with pytest.raises(ValueError, match="crop must be a positive integer"):
        load_acdc_h5(root, crop=0)


def test_missing_folder_and_no_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_acdc_h5(tmp_path / "nowhere")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.h5").write_text("not acdc", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"no ACDC HDF5 files .* found in .*data"):
        load_acdc_h5(tmp_path)


def test_ed_slice_without_es_slice(tmp_path):
    root = make_mixed(tmp_path)
    (root / "data" / "patient003_frame02_slice_10.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"ED .*patient003_frame01_slice_10\.h5 has no matching ES"):
        load_acdc_h5(root)
    # the check is per split: the volume-stored val patient is unaffected
    assert ids(load_acdc_h5(root, "val", crop=16)) == P2


def test_es_slice_without_ed_slice(tmp_path):
    root = make_mixed(tmp_path)
    (root / "data" / "patient001_frame01_slice_3.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"ES .*patient001_frame02_slice_3\.h5 has no matching ED"):
        load_acdc_h5(root, "train")


def test_ed_volume_without_es_volume(tmp_path):
    root = make_mixed(tmp_path)
    (root / "data" / "patient002_frame02.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"ED .*patient002_frame01\.h5 has no matching ES.*frame02"):
        load_acdc_h5(root)


def test_file_without_label_or_image(tmp_path):
    make_patient(tmp_path / "data", 1, "slices", [(CENTER, CENTER)])
    write_h5(tmp_path / "data" / "patient001_frame02_slice_1.h5", frame_image(1, True), None)
    with pytest.raises(ValueError, match=r"patient001_frame02_slice_1\.h5 lacks dataset\(s\) label"):
        load_acdc_h5(tmp_path)
    write_h5(tmp_path / "data" / "patient001_frame02_slice_1.h5", None, None)
    with pytest.raises(ValueError, match=r"lacks dataset\(s\) image, label"):
        load_acdc_h5(tmp_path)


def test_patient_in_both_lists(tmp_path):
    root = make_mixed(tmp_path)
    write_lists(root, train=[1, 2], val=[2, 3])
    with pytest.raises(ValueError, match="patient002 are in both"):
        load_acdc_h5(root, "train")


def test_unexpected_frame_number(tmp_path):
    root = make_mixed(tmp_path)
    extra = root / "data" / "patient001_frame03_slice_1.h5"
    write_h5(extra, frame_image(1, True), ring_label(CENTER, ES_RADII))
    with pytest.raises(ValueError, match=r"patient001_frame03_slice_1\.h5: unexpected frame 3"):
        load_acdc_h5(root)


def test_volume_frames_with_different_shapes(tmp_path):
    make_patient(tmp_path / "data", 1, "volume", [(CENTER, CENTER), (CENTER, CENTER)])
    volume = np.zeros((3, H, W), np.float32)
    write_h5(tmp_path / "data" / "patient001_frame02.h5", volume, volume.astype(np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        load_acdc_h5(tmp_path)

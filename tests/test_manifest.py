"""CSV manifests of image pairs (models.data.manifest) and the ``manifest:`` spec kind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.data.crop import mask_centroid
from models.data.manifest import load_manifest
from models.data.spec import describe_spec, load_pairs
from models.io.archive import write_zip
from models.io.errors import DimensionMismatchError, NotAnImageError, UnreadableImageError

# The fixed 2D grid: ITK size (x=30, y=24), spacing (x=0.5, y=0.8) mm, origin (0, 0).
FIXED_SIZE, FIXED_SPACING = (30, 24), (0.5, 0.8)
# The moving 2D grid: coarser and shifted; its bright voxel at index (x=5, y=3) sits at the physical
# point (-4 + 2 * 5, 6 + 2 * 3) = (6, 12) mm, i.e. at fixed index (12, 15), array [15, 12].
MOVING_SIZE, MOVING_SPACING, MOVING_ORIGIN = (12, 10), (2.0, 2.0), (-4.0, 6.0)
BRIGHT = 1000.0


def _write(array: np.ndarray, path: Path, spacing, origin=None) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin if origin is not None else (0.0,) * len(spacing))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_images(folder: Path) -> dict[str, Path]:
    """A 2D pair in NIfTI (fixed) / MHA (moving), masks in NRRD and MHD, and a 3D pair."""
    fixed = np.tile(np.arange(FIXED_SIZE[0], dtype=np.float32), (FIXED_SIZE[1], 1))  # value = x index
    moving = np.full(MOVING_SIZE[::-1], 3.0, np.float32)
    moving[3, 5] = BRIGHT
    fixed_mask = np.zeros(FIXED_SIZE[::-1], np.uint8)
    fixed_mask[10:14, 20:26] = 2
    moving_mask = np.zeros(MOVING_SIZE[::-1], np.uint16)
    moving_mask[3, 5] = 3
    volume_fixed = np.zeros((6, 8, 10), np.float32)
    volume_fixed[3, 4, 5] = 5.0
    volume_moving = np.zeros((6, 8, 10), np.float32)
    volume_moving[3, 4, 5] = BRIGHT  # origin shifted by +1 mm along x: lands at fixed x index 6
    volume_mask = (volume_moving > 0).astype(np.int16)
    return {
        "fixed": _write(fixed, folder / "fixed.nii.gz", FIXED_SPACING),
        "moving": _write(moving, folder / "moving.mha", MOVING_SPACING, MOVING_ORIGIN),
        "fixed_mask": _write(fixed_mask, folder / "fixed_seg.nrrd", FIXED_SPACING),
        "moving_mask": _write(moving_mask, folder / "moving_seg.mhd", MOVING_SPACING, MOVING_ORIGIN),
        "fixed3d": _write(volume_fixed, folder / "fixed3d.nrrd", (1.0, 2.0, 3.0)),
        "moving3d": _write(volume_moving, folder / "moving3d.nii.gz", (1.0, 2.0, 3.0), (1.0, 0.0, 0.0)),
        "mask3d": _write(volume_mask, folder / "mask3d.mha", (1.0, 2.0, 3.0), (1.0, 0.0, 0.0)),
    }


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    return make_images(tmp_path / "images")


# ---------------------------------------------------------------------------------------------------


def test_pairs_on_the_fixed_grid(tmp_path, images):
    csv_path = write_csv(
        tmp_path / "lists" / "pairs.csv",
        "fixed,moving,fixed_mask,moving_mask,id,subject\n"
        "../images/fixed.nii.gz,../images/moving.mha,../images/fixed_seg.nrrd,../images/moving_seg.mhd,two_d,s1\n"
        f"{images['fixed3d']},{images['moving3d']},,{images['mask3d']},,\n",
    )
    pair2d, pair3d = load_manifest(csv_path)
    assert (pair2d.pair_id, pair2d.subject_id) == ("two_d", "s1")
    assert (pair3d.pair_id, pair3d.subject_id) == ("row3", "row3")  # defaults: spreadsheet row number

    assert pair2d.shape == (24, 30)  # the fixed grid, array order (y, x)
    assert pair2d.spacing_mm == pytest.approx((0.8, 0.5))  # reversed ITK spacing
    assert pair2d.fixed.dtype == np.float32 and pair2d.moving.dtype == np.float32
    np.testing.assert_array_equal(pair2d.fixed[7], np.arange(30))
    # the bright moving voxel lands at its physical point (6, 12) mm = fixed array index [15, 12]
    assert np.unravel_index(np.argmax(pair2d.moving), pair2d.shape) == (15, 12)
    assert pair2d.moving[15, 12] == pytest.approx(BRIGHT)
    assert pair2d.moving[0, 0] == 0.0  # outside the moving image
    assert pair2d.moving_mask.dtype == np.uint16 and pair2d.moving_mask[15, 12] == 3  # nearest, dtype kept
    assert set(np.unique(pair2d.moving_mask)) == {0, 3}
    assert pair2d.fixed_mask.dtype == np.uint8 and pair2d.fixed_mask.sum() == 2 * 4 * 6

    assert pair3d.ndim == 3 and pair3d.shape == (6, 8, 10)  # a 3D pair stays 3D
    assert pair3d.spacing_mm == pytest.approx((3.0, 2.0, 1.0))
    assert np.unravel_index(np.argmax(pair3d.moving), pair3d.shape) == (3, 4, 6)
    assert pair3d.moving_mask.dtype == np.int16 and pair3d.moving_mask[3, 4, 6] == 1
    assert pair3d.fixed_mask is None


def test_crop_around_the_moving_mask_or_the_centre(tmp_path, images):
    csv_path = write_csv(
        tmp_path / "pairs.csv",
        "moving,fixed,moving_mask\n"  # any column order, mask columns optional
        "images/moving.mha,images/fixed.nii.gz,images/moving_seg.mhd\n"
        "images/moving.mha,images/fixed.nii.gz,\n",
    )
    around_mask, around_centre = load_manifest(csv_path, crop=8)
    assert around_mask.shape == around_centre.shape == (8, 8)
    assert around_mask.spacing_mm == pytest.approx((0.8, 0.5))
    # the window is centred on the moving mask's centroid (rounded half up to (15, 12)): index 4 = 8 // 2
    full_with_mask, full = load_manifest(csv_path)
    centroid = np.asarray(mask_centroid(full_with_mask.moving_mask, 3))
    assert tuple(np.floor(centroid + 0.5)) == (15, 12)
    assert mask_centroid(around_mask.moving_mask, 3) == pytest.approx(tuple(centroid - (15 - 4, 12 - 4)))
    np.testing.assert_array_equal(around_mask.moving, full_with_mask.moving[11:19, 8:16])
    assert around_mask.moving[4, 4] == pytest.approx(BRIGHT)
    # without a mask: centred on the image centre (11.5, 14.5) -> rounds to (12, 15): window rows 8..15
    np.testing.assert_array_equal(around_centre.moving, full.moving[8:16, 11:19])
    # windows larger than the image are zero-padded
    assert load_manifest(csv_path, crop=40)[0].shape == (40, 40)


def test_spec_strings(tmp_path, images, monkeypatch):
    assert describe_spec("manifest:/x/y.csv") == {"kind": "manifest", "path": "/x/y.csv", "crop": None}
    assert describe_spec("manifest:rel.csv:crop=64") == {"kind": "manifest", "path": "rel.csv", "crop": 64}
    assert describe_spec("manifest:C:/data/pairs.csv")["path"] == "C:/data/pairs.csv"
    with pytest.raises(ValueError, match="crop=-2"):
        describe_spec("manifest:rel.csv:crop=-2")
    with pytest.raises(ValueError, match="needs a path"):
        describe_spec("manifest:")
    write_csv(tmp_path / "rel.csv", "fixed,moving\nimages/fixed.nii.gz,images/moving.mha\n")
    monkeypatch.chdir(tmp_path)
    [pair] = load_pairs("manifest:rel.csv:crop=6")
    assert pair.shape == (6, 6) and pair.moving_mask is None
    assert load_pairs(f"manifest:{tmp_path / 'rel.csv'}")[0].shape == (24, 30)


def test_dicom_folder_and_zip(tmp_path, images):
    pattern = (np.arange(24 * 30).reshape(24, 30) % 50).astype(np.int16)
    _write(pattern, tmp_path / "dicom" / "series" / "slice.dcm", FIXED_SPACING)
    write_zip(tmp_path / "dicom.zip", tmp_path / "dicom", compression=zipfile.ZIP_STORED)
    csv_path = write_csv(
        tmp_path / "pairs.csv",
        "fixed,moving,fixed_mask\n"
        "dicom/series,dicom.zip,images/fixed_seg.nrrd\n"  # a DICOM folder, a DICOM zip
        "images/fixed.nii.gz,dicom/series/slice.dcm,\n",  # one DICOM file, onto a NIfTI grid
    )
    from_folder, from_file = load_manifest(csv_path)
    assert from_folder.shape == (24, 30) and from_folder.spacing_mm == pytest.approx((0.8, 0.5))
    np.testing.assert_array_equal(from_folder.fixed, pattern)
    np.testing.assert_array_equal(from_folder.moving, pattern)
    assert from_folder.fixed_mask.sum() == 2 * 4 * 6
    np.testing.assert_allclose(from_file.moving, pattern, atol=1e-4)  # same physical grid


def test_single_slice_volume_is_2d(tmp_path, images):
    flat = np.tile(np.arange(FIXED_SIZE[1], dtype=np.float32)[:, None], (1, 1, FIXED_SIZE[0]))  # value = y
    _write(flat, tmp_path / "flat.nii.gz", (*FIXED_SPACING, 1.0))
    csv_path = write_csv(tmp_path / "pairs.csv", "fixed,moving\nflat.nii.gz,images/fixed.nii.gz\n")
    [pair] = load_manifest(csv_path)
    assert pair.ndim == 2 and pair.shape == (24, 30)
    np.testing.assert_array_equal(pair.fixed[:, 3], np.arange(24))
    np.testing.assert_array_equal(pair.moving[5], np.arange(30))


# ---------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fixed,fixed_mask\na.nii.gz,\n", r"pairs.csv row 1: missing column\(s\) moving"),
        ("fixed,moving,moving_msk\n", r"row 1: unknown column\(s\) 'moving_msk'"),
        ("fixed,moving,fixed\n", r"row 1: column\(s\) fixed given twice"),
        ("", r"pairs.csv is empty"),
        ("fixed,moving\n\n", r"lists no pairs"),
        ("fixed,moving\n\nimages/fixed.nii.gz,\n", r"row 3: empty 'moving' cell"),
        ("fixed,moving\nimages/fixed.nii.gz,images/moving.mha,extra\n", r"row 2: 3 cells but the header has 2"),
        ("fixed,moving,id\nimages/fixed.nii.gz,images/moving.mha,a\nimages/fixed.nii.gz,images/moving.mha,a\n",
         r"row 3: id 'a' already used in row 2"),
    ],
)
def test_csv_errors(tmp_path, images, text, message):
    csv_path = write_csv(tmp_path / "pairs.csv", text)
    with pytest.raises(ValueError, match=message):
        load_manifest(csv_path)


def test_file_errors(tmp_path, images):
    with pytest.raises(FileNotFoundError, match="manifest .*nope.csv does not exist"):
        load_manifest(tmp_path / "nope.csv")

    csv_path = write_csv(
        tmp_path / "pairs.csv",
        "fixed,moving,moving_mask\nimages/fixed.nii.gz,images/moving.mha,\nimages/fixed.nii.gz,images/moving.mha,gone.nrrd\n",
    )
    with pytest.raises(FileNotFoundError, match=r"pairs.csv row 3: moving_mask file .*gone.nrrd does not exist"):
        load_manifest(csv_path)

    (tmp_path / "broken.nii.gz").write_bytes(b"\x00\x01 truncated \xff" * 40)
    csv_path = write_csv(tmp_path / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,broken.nii.gz\n")
    with pytest.raises(UnreadableImageError, match=r"pairs.csv row 2: moving .*broken.nii.gz: .*not a NIfTI") as caught:
        load_manifest(csv_path)
    assert isinstance(caught.value.__cause__, UnreadableImageError)  # the reader's error, chained
    assert caught.value.code == "unreadable_image" and caught.value.hint == caught.value.__cause__.hint

    (tmp_path / "notes.nrrd").write_text("just some notes\n", encoding="utf-8")
    csv_path = write_csv(tmp_path / "pairs.csv",
                         "fixed,moving,fixed_mask\nimages/fixed.nii.gz,images/moving.mha,notes.nrrd\n")
    with pytest.raises(NotAnImageError, match=r"row 2: fixed_mask .*notes.nrrd: is a text file"):
        load_manifest(csv_path)

    csv_path = write_csv(tmp_path / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,images/moving3d.nii.gz\n")
    message = r"row 2: moving .*moving3d.nii.gz is 3D but fixed .*fixed.nii.gz is 2D"
    with pytest.raises(DimensionMismatchError, match=message):
        load_manifest(csv_path)

    csv_path = write_csv(tmp_path / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,images/moving.mha\n")
    with pytest.raises(ValueError, match="crop must be"):
        load_manifest(csv_path, crop=0)


# ---------------------------------------------------------------------------------------------------
# confinement: with root=, nothing outside the dataset's folder is read (without it, a local user's paths work)


@pytest.fixture
def dataset(tmp_path, images) -> Path:
    """An uploaded dataset's folder holding the pair images, beside a secret the server can read."""
    root = tmp_path / "dataset"
    for name in ("fixed.nii.gz", "moving.mha"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / name).write_bytes(images[name.split(".")[0]].read_bytes())
    (tmp_path / "secret.txt").write_text("TOPSECRET-LINE\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("cell", [
    "{outside}/images/fixed.nii.gz",  # absolute
    "../images/fixed.nii.gz",  # climbs out
    "images/../../images/fixed.nii.gz",  # climbs out in the middle
    "images/../images/fixed.nii.gz",  # '..' that would stay inside is refused too: the rule is on the text
    "~/fixed.nii.gz",  # the server user's home
    "C:/images/fixed.nii.gz",  # a Windows drive
])
def test_with_root_escaping_cells_are_refused_naming_row_and_column(tmp_path, dataset, cell):
    csv_path = write_csv(dataset / "pairs.csv",
                         "fixed,moving\nimages/fixed.nii.gz,images/moving.mha\n"
                         f"images/fixed.nii.gz,{cell.format(outside=tmp_path)}\n")
    with pytest.raises(ValueError, match=r"pairs.csv row 3: moving: the path must be relative") as caught:
        load_manifest(csv_path, root=dataset)
    assert cell.format(outside=tmp_path) not in str(caught.value) and str(tmp_path / "images") not in str(caught.value)


def test_with_root_a_symlink_out_is_refused_without_saying_where_it_points(tmp_path, dataset):
    (dataset / "images" / "linked.nii.gz").symlink_to(tmp_path / "images" / "fixed.nii.gz")
    (dataset / "elsewhere").symlink_to(tmp_path / "images", target_is_directory=True)
    for cell in ("images/linked.nii.gz", "elsewhere/fixed.nii.gz"):
        csv_path = write_csv(dataset / "pairs.csv", f"fixed,moving\n{cell},images/moving.mha\n")
        with pytest.raises(ValueError, match="row 2: fixed: the path leaves the dataset's folder through a symbolic "
                                             "link") as caught:
            load_manifest(csv_path, root=dataset)
        assert str(tmp_path / "images") not in str(caught.value)


def test_with_root_a_folder_cell_holding_a_link_out_is_refused(tmp_path, dataset):
    series = dataset / "series"
    series.mkdir()
    (series / "slice.dcm").symlink_to(tmp_path / "secret.txt")
    csv_path = write_csv(dataset / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,series\n")
    with pytest.raises(ValueError, match="row 2: moving: the folder holds a symbolic link that leaves"):
        load_manifest(csv_path, root=dataset)


def test_with_root_links_inside_and_plain_paths_still_work(dataset):
    (dataset / "images" / "alias.mha").symlink_to(dataset / "images" / "moving.mha")
    csv_path = write_csv(dataset / "sub" / "pairs.csv", "fixed,moving\n../images/fixed.nii.gz,../images/alias.mha\n")
    with pytest.raises(ValueError, match="row 2: fixed: the path must be relative"):
        load_manifest(csv_path, root=dataset)  # a manifest in a sub-folder cannot climb to its siblings
    csv_path = write_csv(dataset / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,images/alias.mha\n")
    [pair] = load_manifest(csv_path, root=dataset)
    assert pair.shape == (24, 30)


def test_with_root_the_manifest_itself_must_be_inside(tmp_path, dataset):
    csv_path = write_csv(tmp_path / "pairs.csv",
                         "fixed,moving\ndataset/images/fixed.nii.gz,dataset/images/moving.mha\n")
    with pytest.raises(ValueError, match="the manifest lies outside the dataset's folder"):
        load_manifest(csv_path, root=dataset)
    with pytest.raises(ValueError, match="the manifest lies outside"):
        load_pairs(f"manifest:{csv_path}", root=dataset)
    with pytest.raises(ValueError, match="the acdc path lies outside"):
        load_pairs(f"acdc:{tmp_path}", root=dataset)


def test_without_root_absolute_home_and_parent_paths_work(tmp_path, dataset, monkeypatch):
    """The CLI's ``--data manifest:...``: a local user may name any file they can read."""
    monkeypatch.setenv("HOME", str(tmp_path))
    csv_path = write_csv(dataset / "pairs.csv",
                         f"fixed,moving\n{tmp_path / 'images' / 'fixed.nii.gz'},../images/moving.mha\n"
                         "~/images/fixed.nii.gz,images/../images/moving.mha\n")
    assert [p.shape for p in load_manifest(csv_path)] == [(24, 30), (24, 30)]
    assert len(load_pairs(f"manifest:{csv_path}")) == 2
    with pytest.raises(ValueError, match="row 2: fixed: the path must be relative"):
        load_pairs(f"manifest:{csv_path}", root=dataset)


def test_a_text_file_is_refused_without_quoting_it(tmp_path, dataset):
    (dataset / "notes.nii.gz").write_text("TOPSECRET-LINE\nmore\n", encoding="utf-8")
    csv_path = write_csv(dataset / "pairs.csv", "fixed,moving\nimages/fixed.nii.gz,notes.nii.gz\n")
    with pytest.raises(NotAnImageError, match="is a text file, not an image") as caught:
        load_manifest(csv_path, root=dataset)
    assert "TOPSECRET" not in str(caught.value)

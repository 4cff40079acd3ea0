"""models.io.readers: every format reads to the right pixels and geometry; real files cross-checked.

Files are written here with SimpleITK, nibabel and pydicom; the "real" files are the test data that
nibabel and pydicom ship, and their pixels/spacing are compared with what those libraries report.
"""

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path as NIBABEL_DATA
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.io.archive import extract_zip, write_zip
from models.io.errors import FrameRequiredError, MultipleSeriesError
from models.io.image import Geometry, Image
from models.io.readers import ImageHeader, check_header, check_mask, check_pair, read_header, read_image

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DATA = Path(NIBABEL_DATA)
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (12.5, -40.0, 7.25)


def rotation(ax=0.3, ay=-0.2, az=0.5):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = tuple(rotation().ravel())


def volume(shape=(5, 12, 16), dtype=np.int16, seed=0):
    """Distinct-ish values so flips and transposes show."""
    values = (np.arange(np.prod(shape)) * 7919 + seed * 31) % 3001 - 1500
    return values.reshape(shape).astype(dtype)


def to_sitk(array, spacing=SPACING, origin=ORIGIN, direction=None, is_vector=False):
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    ndim = image.GetDimension()
    image.SetSpacing(spacing[:ndim])
    image.SetOrigin(origin[:ndim])
    image.SetDirection(direction if direction is not None else tuple(np.eye(ndim).ravel()))
    return image


def write(path, array, **kw):
    sitk.WriteImage(to_sitk(array, **kw), str(path))
    return path


def ds_str(value):
    return f"{float(value):.10g}"


def write_dicom_series(folder, array, spacing=SPACING, origin=ORIGIN, direction=None, uid=None,
                       description="test series", modality="CT"):
    """One file per slice with the tags a series needs (SimpleITK's 'DICOM series from array' recipe)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = to_sitk(array, spacing, origin, direction)
    d = image.GetDirection()
    uid = uid or generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    tags = [("0008|0060", modality), ("0008|103e", description), ("0020|000e", uid),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"), ("0008|0008", "DERIVED\\SECONDARY"),
            ("0020|0037", "\\".join(ds_str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])))]
    files = []
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in tags:
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0020|0032", "\\".join(ds_str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        files.append(folder / f"IM{k:04d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(piece)
    return files


def enhanced_multiframe(path, array, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE, descending=False):
    """An Enhanced CT object: one file, frames placed by the per-frame functional groups."""
    nz, ny, nx = array.shape
    d = np.asarray(direction).reshape(3, 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = spacing[2]
    orientation.ImageOrientationPatient = [*d[:, 0], *d[:, 1]]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    step = -1 if descending else 1
    frames = []
    for k in range(nz):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [ds_str(v) for v in np.asarray(origin) + step * k * spacing[2] * d[:, 2]]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = array.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_geometry(image, spacing, origin, direction, atol=1e-4):
    np.testing.assert_allclose(image.geometry.spacing, spacing, atol=atol)
    np.testing.assert_allclose(image.geometry.origin, origin, atol=atol)
    np.testing.assert_allclose(image.geometry.direction, np.ravel(direction), atol=atol)


# ------------------------------------------------------------------------------------ NIfTI


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_nifti_3d_oblique(tmp_path, name):
    array = volume()
    image = read_image(write(tmp_path / name, array, direction=OBLIQUE))
    assert isinstance(image, Image) and image.kind == "scalar" and image.ndim == 3
    np.testing.assert_array_equal(image.array, array)
    assert_geometry(image, SPACING, ORIGIN, OBLIQUE)
    assert image.metadata["format"] == "nifti" and image.metadata["dtype"] == "int16"
    assert image.source == str(tmp_path / name)


def test_nifti_2d(tmp_path):
    array = volume((12, 16), np.float32)
    image = read_image(write(tmp_path / "slice.nii.gz", array, direction=(0.0, 1.0, 1.0, 0.0)))
    assert image.ndim == 2 and image.metadata["squeezed"] is None
    np.testing.assert_array_equal(image.array, array)
    assert_geometry(image, SPACING[:2], ORIGIN[:2], (0, 1, 1, 0))


def test_nifti_singleton_last_axis_becomes_2d(tmp_path):
    array = volume((1, 12, 16))
    flip = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    image = read_image(write(tmp_path / "xy1.nii.gz", array, direction=flip))
    assert image.ndim == 2 and image.array.shape == (12, 16)
    np.testing.assert_array_equal(image.array, array[0])
    assert_geometry(image, SPACING[:2], ORIGIN[:2], (1, 0, 0, -1))
    assert image.metadata["squeezed"]["axis"] == 2 and image.metadata["squeezed"]["mode"] == "submatrix"


def test_nifti_singleton_middle_axis_keeps_x_and_z(tmp_path):
    """A coronal slice stored X×1×Z: the 2-D image spans index axes x and z, physical L and S."""
    array = volume((5, 1, 16))
    image = read_image(write(tmp_path / "x1z.nii", array))
    assert image.array.shape == (5, 16)
    np.testing.assert_array_equal(image.array, array[:, 0, :])
    assert_geometry(image, (SPACING[0], SPACING[2]), (ORIGIN[0], ORIGIN[2]), (1, 0, 0, 1))
    assert image.metadata["squeezed"]["axis"] == 1


def test_oblique_singleton_uses_in_plane_frame(tmp_path):
    """When the slice plane mixes in the dropped axis, the 2-D frame is the slice's own."""
    array = volume((1, 12, 16))
    image = read_image(write(tmp_path / "oblique.nii.gz", array, direction=OBLIQUE))
    assert image.metadata["squeezed"]["mode"] == "in-plane"
    d = np.asarray(OBLIQUE).reshape(3, 3)
    assert_geometry(image, SPACING[:2], (d[:, 0] @ ORIGIN, d[:, 1] @ ORIGIN), (1, 0, 0, 1))
    # in-plane distances are exact: voxel (i, j) lies at the same in-plane coordinates as in 3-D
    point3 = np.asarray(ORIGIN) + d @ (np.array([3, 7, 0]) * SPACING)
    point2 = image.geometry.index_to_physical(np.array([3, 7]))
    np.testing.assert_allclose(point2, [d[:, 0] @ point3, d[:, 1] @ point3], atol=1e-4)


def test_nifti_4d_frame(tmp_path):
    data = volume((16, 12, 5, 3), np.float32).astype(np.float32)
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-12.5, 40.0, 7.25)  # RAS
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "cine.nii.gz")
    image = read_image(tmp_path / "cine.nii.gz", frame=2)
    np.testing.assert_array_equal(image.array, data[..., 2].transpose(2, 1, 0))
    assert_geometry(image, SPACING, ORIGIN, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert image.metadata["n_frames"] == 3 and image.metadata["frame"] == 2 and image.metadata["dims"] == 4
    with pytest.raises(FrameRequiredError, match="3 frames"):
        read_image(tmp_path / "cine.nii.gz")


def test_nifti_2d_plus_time_frame_becomes_2d(tmp_path):
    data = volume((16, 12, 1, 4), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "cine2d.nii.gz")
    image = read_image(tmp_path / "cine2d.nii.gz", frame=3)
    assert image.ndim == 2
    np.testing.assert_array_equal(image.array, data[:, :, 0, 3].T)


def test_misnamed_files_are_read_by_content(tmp_path):
    array = volume()
    write(tmp_path / "real.nii.gz", array)
    shutil.copy(tmp_path / "real.nii.gz", tmp_path / "upload.bin")
    write(tmp_path / "real.mha", array)
    shutil.copy(tmp_path / "real.mha", tmp_path / "looks_like.nii")
    for name in ("upload.bin", "looks_like.nii"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, array)
    assert read_image(tmp_path / "looks_like.nii").metadata["format"] == "metaimage"


# ------------------------------------------------------------------------------ MetaImage / NRRD


@pytest.mark.parametrize("name", ["vol.mha", "vol.nrrd", "vol.nhdr", "vol.mhd"])
def test_metaimage_and_nrrd(tmp_path, name):
    array = volume(dtype=np.float32)
    image = read_image(write(tmp_path / name, array, direction=OBLIQUE))
    np.testing.assert_array_equal(image.array, array)
    assert_geometry(image, SPACING, ORIGIN, OBLIQUE)
    assert image.metadata["format"] == ("nrrd" if "nrrd" in name or "nhdr" in name else "metaimage")


def test_mhd_with_raw_inside_a_zip(tmp_path):
    array = volume()
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "brain.mhd", array, direction=OBLIQUE)
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["brain.mhd", "brain.raw"]
    archive = write_zip(tmp_path / "upload.zip", tmp_path / "src")
    image = read_image(archive)
    np.testing.assert_array_equal(image.array, array)
    assert_geometry(image, SPACING, ORIGIN, OBLIQUE)
    assert image.source.endswith("upload.zip/brain.mhd")


# ------------------------------------------------------------------------------------- DICOM


def test_dicom_series_folder_and_zip(tmp_path):
    array = volume()
    flipped = tuple((rotation(0.1, 0.2, -0.4) @ np.diag([1, -1, 1])).ravel())
    write_dicom_series(tmp_path / "series", array, direction=OBLIQUE)
    archive = write_zip(tmp_path / "series.zip", tmp_path / "series")
    for source in (tmp_path / "series", archive):
        image = read_image(source)
        np.testing.assert_array_equal(image.array, array)
        assert_geometry(image, SPACING, ORIGIN, OBLIQUE)
        assert image.metadata["format"] == "dicom" and image.metadata["files"] == 5
        assert image.metadata["series_description"] == "test series"
    # a det = -1 direction in-plane (row/column flipped) is a valid DICOM orientation too
    write_dicom_series(tmp_path / "flipped", array, direction=flipped)
    image = read_image(tmp_path / "flipped")
    d = np.asarray(flipped).reshape(3, 3)
    assert np.linalg.det(d) < 0  # slices run against the DICOM normal: read in normal order, reversed
    np.testing.assert_array_equal(image.array, array[::-1])
    last = np.asarray(ORIGIN) + d @ (np.array([0, 0, 4]) * SPACING)
    assert_geometry(image, SPACING, last, np.column_stack([d[:, 0], d[:, 1], np.cross(d[:, 0], d[:, 1])]))


def test_dicom_series_files_shuffled_and_in_subfolders(tmp_path):
    array = volume()
    files = write_dicom_series(tmp_path / "a", array, direction=OBLIQUE)
    for k, f in enumerate(files):  # names no longer in slice order, spread over two folders
        target = tmp_path / "b" / ("x" if k % 2 else "y") / f"{(7 * k) % 5}_{f.name[::-1]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)
    image = read_image(tmp_path / "b")
    np.testing.assert_array_equal(image.array, array)
    assert_geometry(image, SPACING, ORIGIN, OBLIQUE)


def test_single_dicom_file_is_2d(tmp_path):
    array = volume((1, 12, 16))
    (f,) = write_dicom_series(tmp_path / "one", array)
    image = read_image(f)
    assert image.ndim == 2
    np.testing.assert_array_equal(image.array, array[0])
    assert_geometry(image, SPACING[:2], ORIGIN[:2], (1, 0, 0, 1))


@pytest.mark.parametrize("descending", [False, True])
def test_enhanced_multiframe_dicom(tmp_path, descending):
    array = volume()
    path = enhanced_multiframe(tmp_path / "enhanced.dcm", array, descending=descending)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, array)
    assert np.all(np.asarray(image.geometry.spacing) > 0)
    header = read_header(path)
    assert header.size == (16, 12, 5) and header.spacing == image.geometry.spacing
    np.testing.assert_allclose(image.geometry.spacing, SPACING, atol=1e-5)
    d = np.asarray(OBLIQUE).reshape(3, 3)
    for k in range(array.shape[0]):  # every frame where its PlanePositionSequence puts it
        expected = np.asarray(ORIGIN) + (-1 if descending else 1) * k * SPACING[2] * d[:, 2]
        np.testing.assert_allclose(image.geometry.index_to_physical(np.array([0, 0, k])), expected, atol=1e-4)


def test_several_series_need_a_choice(tmp_path):
    first, second = volume(seed=1), volume(seed=2)
    write_dicom_series(tmp_path / "pack" / "t1", first, uid="1.2.826.0.1.3680043.9.7.1", description="T1 axial")
    write_dicom_series(tmp_path / "pack" / "t2", second[:4], uid="1.2.826.0.1.3680043.9.7.22", description="T2")
    archive = write_zip(tmp_path / "two.zip", tmp_path / "pack")
    with pytest.raises(MultipleSeriesError) as info:
        read_image(archive)
    message = str(info.value)
    assert "1.2.826.0.1.3680043.9.7.1 'T1 axial' (CT, 5 files)" in message
    assert "1.2.826.0.1.3680043.9.7.22 'T2' (CT, 4 files)" in message and "series=" in message
    assert {s["uid"] for s in info.value.series} == {"1.2.826.0.1.3680043.9.7.1", "1.2.826.0.1.3680043.9.7.22"}
    # GDCM's own scan finds the same series
    assert set(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path / "pack" / "t1"))) == {"1.2.826.0.1.3680043.9.7.1"}
    np.testing.assert_array_equal(read_image(archive, series="1.2.826.0.1.3680043.9.7.1").array, first)
    np.testing.assert_array_equal(read_image(archive, series="1.2.826.0.1.3680043.9.7.2").array, second[:4])
    assert read_image(tmp_path / "pack", series="1.2.826.0.1.3680043.9.7.22").metadata["files"] == 4


def test_series_ignores_non_image_dicom_and_junk(tmp_path):
    array = volume()
    write_dicom_series(tmp_path / "s", array)
    shutil.copy(PYDICOM_DATA / "test-SR.dcm", tmp_path / "s" / "report.dcm")
    (tmp_path / "s" / "README.txt").write_text("exported by PACS", encoding="utf-8")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\x00\x01junk")
    np.testing.assert_array_equal(read_image(tmp_path / "s").array, array)


# ------------------------------------------------------------------- real files from nibabel, pydicom


def lps(affine):
    flip = np.diag([-1.0, -1.0, 1.0])
    linear = flip @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return spacing, flip @ affine[:3, 3], linear / spacing


@pytest.mark.parametrize("name, frame", [("anatomical.nii", None), ("standard.nii.gz", None),
                                         ("example4d.nii.gz", 1), ("example_nifti2.nii.gz", 1),
                                         ("functional.nii", 7), ("reoriented_anat_moved.nii", None)])
def test_nibabel_test_data(name, frame):
    """Pixels and geometry agree with nibabel's reading of the same file (NIfTI-2 included)."""
    ref = nib.load(NIBABEL_DATA / name)
    image = read_image(NIBABEL_DATA / name, frame=frame)
    data = np.asanyarray(ref.dataobj)
    if frame is not None:
        data = data[..., frame]
    np.testing.assert_allclose(image.array, data.transpose(2, 1, 0))
    spacing, origin, direction = lps(ref.affine)
    np.testing.assert_allclose(image.geometry.spacing, ref.header.get_zooms()[:3], rtol=1e-5)
    np.testing.assert_allclose(image.geometry.spacing, spacing, rtol=1e-5)
    np.testing.assert_allclose(image.geometry.origin, origin, atol=1e-3)
    np.testing.assert_allclose(image.geometry.matrix, direction, atol=1e-4)
    assert image.metadata["nifti_version"] == (2 if "nifti2" in name else 1)
    if frame is None:  # voxels come from nibabel; SimpleITK, an independent reader, agrees on finite data
        np.testing.assert_allclose(image.array, sitk.GetArrayFromImage(sitk.ReadImage(str(NIBABEL_DATA / name))))


def test_nibabel_dicom_pair_as_a_series(tmp_path):
    """nibabel's 0.dcm/1.dcm: two slices of one MR series, 3 mm apart, slightly tilted orientation."""
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(NIBABEL_DATA / name, tmp_path / name)
    image = read_image(tmp_path)
    ref = [pydicom.dcmread(NIBABEL_DATA / n) for n in ("0.dcm", "1.dcm")]
    ref.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert image.array.shape == (2, 256, 256)
    for k, ds in enumerate(ref):
        np.testing.assert_array_equal(image.array[k], apply_modality_lut(ds.pixel_array, ds))
    np.testing.assert_allclose(image.geometry.spacing[:2], [float(v) for v in ref[0].PixelSpacing][::-1])
    np.testing.assert_allclose(image.geometry.spacing[2], 3.0, atol=1e-3)
    np.testing.assert_allclose(image.geometry.origin, [float(v) for v in ref[0].ImagePositionPatient], atol=1e-5)
    # SimpleITK's own series reader agrees on the geometry
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(tmp_path / n) for n in ("0.dcm", "1.dcm")])
    assert Geometry.of(reader.Execute()).close_to(image.geometry, tol=1e-3)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm"])
def test_pydicom_single_slices(name):
    ds = pydicom.dcmread(PYDICOM_DATA / name)
    image = read_image(PYDICOM_DATA / name)
    assert image.ndim == 2
    np.testing.assert_array_equal(image.array, apply_modality_lut(ds.pixel_array, ds))
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(image.geometry.spacing, (col_spacing, row_spacing))
    np.testing.assert_allclose(image.geometry.origin, [float(v) for v in ds.ImagePositionPatient[:2]])
    assert image.metadata["modality"] == ds.Modality and image.metadata["sop_class"].endswith("Image Storage")


def test_pydicom_multiframe_rtdose():
    ds = pydicom.dcmread(PYDICOM_DATA / "rtdose.dcm")
    image = read_image(PYDICOM_DATA / "rtdose.dcm")
    assert image.array.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (15, 10, 10)
    np.testing.assert_array_equal(image.array, ds.pixel_array)
    offsets = np.asarray(ds.GridFrameOffsetVector, dtype=float)
    np.testing.assert_allclose(image.geometry.spacing, [*[float(v) for v in ds.PixelSpacing][::-1],
                                                       abs(offsets[1] - offsets[0])])
    np.testing.assert_allclose(image.geometry.origin, [float(v) for v in ds.ImagePositionPatient])


# ------------------------------------------------------------------------------- header, labels, checks


def test_read_header_without_pixels(tmp_path):
    data = volume((16, 12, 5, 3), np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.9, 2.5, 1.0])), tmp_path / "cine.nii.gz")
    header = read_header(tmp_path / "cine.nii.gz")
    assert isinstance(header, ImageHeader)
    assert (header.format, header.dims, header.size, header.n_frames) == ("nifti", 4, (16, 12, 5, 3), 3)
    assert header.pixel_type == "float32" and header.n_components == 1 and header.image_ndim == 3
    np.testing.assert_allclose(header.spacing[:3], SPACING)
    assert check_header(header, frame=2) == (2,)
    write_dicom_series(tmp_path / "s", volume(), direction=OBLIQUE, uid="1.2.3.99")
    header = read_header(write_zip(tmp_path / "s.zip", tmp_path / "s"))
    assert (header.format, header.size, header.series_uid, header.pixel_type) == ("dicom", (16, 12, 5), "1.2.3.99",
                                                                                   "int16")
    np.testing.assert_allclose(header.direction, OBLIQUE, atol=1e-6)


@pytest.mark.parametrize("values, dtype", [([0.0, 1.0, 2.0], np.uint8), ([0.0, -1.0, 3.0], np.int8),
                                           ([0.0, 300.0], np.uint16), ([0, 70000.0], np.uint32)])
def test_float_labels_cast_to_smallest_integer(tmp_path, values, dtype):
    array = np.zeros((5, 12, 16), np.float32)
    array.flat[: len(values)] = values
    image = read_image(write(tmp_path / "mask.nii.gz", array), kind="label")
    assert image.kind == "label" and image.array.dtype == dtype
    np.testing.assert_array_equal(image.array, array.astype(dtype))
    assert image.metadata["labels"] == sorted({int(v) for v in values} | {0})


def test_integer_labels_and_empty_mask_accepted(tmp_path):
    mask = np.zeros((5, 12, 16), np.uint8)
    image = read_image(write(tmp_path / "empty.nii.gz", mask), kind="label")
    assert image.array.dtype == np.uint8 and image.metadata["labels"] == [0]
    image = read_image(write(tmp_path / "flat.nii.gz", np.full((5, 12, 16), 3.0, np.float32)), allow_constant=True)
    assert float(image.array.max()) == 3.0


def test_checks_pass_on_matching_pairs(tmp_path):
    array = volume(dtype=np.float32)
    image = read_image(write(tmp_path / "img.nii.gz", array, direction=OBLIQUE))
    mask = read_image(write(tmp_path / "mask.nii.gz", (array > 0).astype(np.uint8), direction=OBLIQUE), kind="label")
    check_mask(mask, image)
    check_pair(image, image.with_array(array[::-1].copy()))
    assert read_image(tmp_path / "img.nii.gz", max_voxels=16 * 12 * 5).size == (16, 12, 5)


def test_extract_zip_layout(tmp_path):
    write_zip(tmp_path / "nested.zip", members={"a/b/c.txt": "hello", "a/": "", "top.bin": b"\x00" * 10},
              compression=zipfile.ZIP_STORED)
    out = extract_zip(tmp_path / "nested.zip", tmp_path / "dest")
    assert out == tmp_path / "dest" / "nested"
    assert (out / "a" / "b" / "c.txt").read_text(encoding="utf-8") == "hello" and (out / "top.bin").stat().st_size == 10
    again = extract_zip((tmp_path / "nested.zip").read_bytes(), tmp_path / "dest", name="nested.zip")
    assert again == tmp_path / "dest" / "nested-1" and sorted(p.name for p in (tmp_path / "dest").iterdir()) == [
        "nested", "nested-1"]

"""Bad uploads: each is a real small file (or bytes) made here, refused with its own error class and message.

Every case asserts the class, a message fragment, an HTTP status the API can use and, for files, that
the message names the file. Archive cases also check that a failing extraction leaves nothing behind.
"""

import gzip
import os
import pickle
import shutil
import stat
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.io.archive import extract_zip, write_zip
from models.io.errors import (
    ArchiveTooLargeError,
    DicomNoPixelDataError,
    DimensionMismatchError,
    EmptyArchiveError,
    EmptyImageError,
    FrameOutOfRangeError,
    FrameRequiredError,
    HostileArchiveError,
    ImageError,
    ImageTooLargeError,
    InconsistentSeriesError,
    MaskGeometryError,
    MultipleSeriesError,
    NonFiniteValuesError,
    NonIntegerMaskError,
    NotAnImageError,
    UnknownSeriesError,
    UnreadableImageError,
    UnsafePathError,
    UnsupportedDimensionsError,
    UnsupportedFormatError,
    ValuesOutOfRangeError,
    VectorImageError,
)
from models.io.image import Geometry, Image
from models.io.readers import check_mask, check_pair, read_header, read_image
from models.io.readers.checks import FLOAT32_MAX, check_float32_range

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
SPACING, ORIGIN = (0.7, 0.9, 2.5), (1.0, 2.0, 3.0)


def volume(shape=(5, 12, 16), dtype=np.float32):
    return ((np.arange(np.prod(shape)) * 7919) % 301).reshape(shape).astype(dtype)


def write(path, array, spacing=SPACING, is_vector=False):
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder, array, uid, description="series", z_positions=None):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(array.shape[0]):
        piece = sitk.GetImageFromArray(array[k].astype(np.int16))
        piece.SetSpacing(SPACING[:2])
        z = z_positions[k] if z_positions is not None else ORIGIN[2] + k * SPACING[2]
        for tag, value in (("0008|0060", "MR"), ("0008|103e", description), ("0020|000e", uid),
                           ("0020|000d", "1.2.3.4"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", f"{ORIGIN[0]}\\{ORIGIN[1]}\\{z}"), ("0020|0013", str(k + 1)),
                           ("0008|0018", f"{uid}.{k + 1}")):
            piece.SetMetaData(tag, value)
        files.append(folder / f"IM{k}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(piece)
    return files


def dicom_dataset(path, sop_class, modality, pixels=None, rows=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, meta.MediaStorageSOPInstanceUID, modality
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    if rows:
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, rows, 16, 16, 15
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 1
    if pixels is not None:
        ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def copy(source, target):
    shutil.copy(source, target)
    return target


def rewrite_text(path, old, new):
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


CASES = []


def case(cls, match):
    def register(make):
        CASES.append(pytest.param(make, cls, match, id=make.__name__))
        return make

    return register


# --------------------------------------------------------------------------------- broken files


@case(UnreadableImageError, "empty \\(0 bytes\\)")
def empty_file(tmp):
    (tmp / "scan.nii").write_bytes(b"")
    return tmp / "scan.nii"


@case(UnreadableImageError, "not a NIfTI file")
def random_bytes_named_nii_gz(tmp):
    path = tmp / "scan.nii.gz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return path


@case(UnreadableImageError, "pixel data cannot be read|truncated|corrupt")
def truncated_nii_gz(tmp):
    path = write(tmp / "full.nii.gz", np.random.default_rng(1).normal(size=(5, 12, 16)).astype(np.float32))
    data = path.read_bytes()
    (tmp / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return tmp / "cut.nii.gz"


@case(UnreadableImageError, "truncated: the file has \\d+ bytes")
def truncated_nii_pixel_data(tmp):
    data = write(tmp / "full.nii", volume()).read_bytes()
    (tmp / "cut.nii").write_bytes(data[:-500])
    return tmp / "cut.nii"


@case(UnreadableImageError, "content is not a NIfTI image")
def gzip_of_garbage_named_nii_gz(tmp):
    (tmp / "scan.nii.gz").write_bytes(gzip.compress(os.urandom(4000)))
    return tmp / "scan.nii.gz"


@case(UnsupportedFormatError, "gzip-compressed file that is not a NIfTI")
def gzip_of_garbage_named_gz(tmp):
    (tmp / "scan.gz").write_bytes(gzip.compress(os.urandom(4000)))
    return tmp / "scan.gz"


@case(UnreadableImageError, "gzip-compressed but its data are corrupt")
def corrupt_gzip_stream(tmp):
    data = bytearray(gzip.compress(b"x" * 5000))
    data[12:40] = b"\xff" * 28
    (tmp / "scan.nii.gz").write_bytes(bytes(data))
    return tmp / "scan.nii.gz"


@case(NotAnImageError, "text file")
def text_file_named_nii(tmp):
    (tmp / "notes.nii").write_text("Patient 12, see attached images.\n", encoding="utf-8")
    return tmp / "notes.nii"


@case(NotAnImageError, "text file, not an image \\(12 bytes\\)")
def csv_file(tmp):
    (tmp / "table.csv").write_text("id,age\n1,40\n", encoding="utf-8")
    return tmp / "table.csv"


@case(NotAnImageError, "PDF document")
def pdf_file(tmp):
    (tmp / "report.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" + os.urandom(200))
    return tmp / "report.pdf"


@case(UnsupportedFormatError, "PNG picture")
def png_named_dcm(tmp):
    (tmp / "slice.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    return tmp / "slice.dcm"


@case(UnsupportedFormatError, "JPEG picture")
def jpeg_named_dcm(tmp):
    (tmp / "photo.dcm").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + os.urandom(300))
    return tmp / "photo.dcm"


@case(UnsupportedFormatError, "TIFF image")
def tiff_file(tmp):
    (tmp / "scan.tif").write_bytes(b"II*\x00" + os.urandom(300))
    return tmp / "scan.tif"


@case(UnsupportedFormatError, "unrecognised file format \\(extension .xyz\\).*supported formats: NIfTI")
def unsupported_extension(tmp):
    (tmp / "scan.xyz").write_bytes(bytes(range(256)) * 4)
    return tmp / "scan.xyz"


@case(UnreadableImageError, "no such file or folder")
def missing_path(tmp):
    return tmp / "nowhere.nii.gz"


# ------------------------------------------------------------------------------------------ DICOM


@case(DicomNoPixelDataError, "without pixel data \\(no PixelData")
def dicom_without_pixel_data(tmp):
    return dicom_dataset(tmp / "header_only.dcm", "1.2.840.10008.5.1.4.1.1.2", "CT", rows=16)


@case(NotAnImageError, "a DICOM structured report \\(Basic Text SR Storage, modality SR\\)")
def dicom_structured_report(tmp):
    return dicom_dataset(tmp / "report.dcm", "1.2.840.10008.5.1.4.1.1.88.11", "SR")


@case(DicomNoPixelDataError, "RT Structure Set Storage")
def dicom_rtstruct(tmp):
    return copy(PYDICOM_DATA / "rtstruct.dcm", tmp / "contours.dcm")


@case(UnreadableImageError, "truncated: the file holds 8130 of the 8192 bytes")
def truncated_dicom(tmp):
    return copy(PYDICOM_DATA / "MR_truncated.dcm", tmp / "mr.dcm")


@case(UnreadableImageError, "truncated: 100 bytes where 16×16 pixels")
def dicom_pixel_data_too_short(tmp):
    return dicom_dataset(tmp / "short.dcm", "1.2.840.10008.5.1.4.1.1.2", "CT", pixels=b"\x00" * 100, rows=16)


@case(VectorImageError, "3 components per voxel")
def rgb_dicom(tmp):
    return copy(PYDICOM_DATA / "examples_rgb_color.dcm", tmp / "rgb.dcm")


@case(InconsistentSeriesError, "non-uniform slice spacing.*slice may be missing")
def series_with_a_missing_slice(tmp):
    files = write_dicom_series(tmp / "series", volume(), "1.2.3.4.5")
    files[2].unlink()
    return tmp / "series"


@case(InconsistentSeriesError, "2 slices at the same position")
def series_with_duplicate_positions(tmp):
    write_dicom_series(tmp / "series", volume(), "1.2.3.4.5", z_positions=[0, 2.5, 5, 5, 7.5])
    return tmp / "series"


@case(InconsistentSeriesError, "different sizes")
def series_with_mixed_sizes(tmp):
    write_dicom_series(tmp / "series", volume(), "1.2.3.4.5")
    write_dicom_series(tmp / "other", volume((2, 8, 8)), "1.2.3.4.5", z_positions=[20, 22.5])
    for f in (tmp / "other").iterdir():
        shutil.move(f, tmp / "series" / f"x{f.name}")
    return tmp / "series"


@case(DicomNoPixelDataError, "only DICOM objects without pixel data")
def folder_with_only_reports(tmp):
    (tmp / "reports").mkdir()
    shutil.copy(PYDICOM_DATA / "test-SR.dcm", tmp / "reports" / "a.dcm")
    return tmp / "reports"


@case(UnknownSeriesError, "does not match this file's SeriesInstanceUID")
def single_dicom_wrong_series(tmp):
    (f,) = write_dicom_series(tmp / "s", volume((1, 8, 8)), "1.2.3.4.5")
    return f, {"series": "9.9"}


# ------------------------------------------------------------------------------- content problems


def four_d(tmp, name="cine.nii.gz", shape=(16, 12, 5, 3)):
    nib.save(nib.Nifti1Image(volume(shape), np.eye(4)), tmp / name)
    return tmp / name


@case(FrameRequiredError, "4-D image of size 16×12×5×3, i.e. 3 frames.*frame \\(0 to 2\\)")
def four_d_without_frame(tmp):
    return four_d(tmp)


@case(FrameOutOfRangeError, "frame=3 is out of range: the image has 3 frames")
def frame_out_of_range(tmp):
    return four_d(tmp), {"frame": 3}


@case(FrameOutOfRangeError, "frame=1 is out of range: the image has 1 frame\\b")
def frame_on_a_3d_image(tmp):
    return write(tmp / "vol.nii.gz", volume()), {"frame": 1}


@case(FrameRequiredError, "5-D image .* 6 frames")
def five_d_nifti(tmp):
    return four_d(tmp, "five.nii.gz", (8, 6, 4, 3, 2))


@case(NonFiniteValuesError, "1 NaN and 0 infinite voxels \\(first at index \\(3, 2, 1\\)\\)")
def nan_voxel(tmp):
    array = volume()
    array[1, 2, 3] = np.nan
    return write(tmp / "nan.nii.gz", array)


@case(NonFiniteValuesError, "0 NaN and 2 infinite")
def inf_voxels(tmp):
    array = volume()
    array[0, 0, :2] = [np.inf, -np.inf]
    return write(tmp / "inf.mha", array)


@case(ValuesOutOfRangeError, "2 voxels beyond ±3.403e\\+38, the range of 32-bit floats .*\\(first at index "
                             "\\(1, 0, 0\\)\\)")
def float64_beyond_float32(tmp):
    array = volume(dtype=np.float64)
    array[0, 0, 1], array[2, 3, 4] = 1e39, -1e300  # finite in float64, Inf once cast to float32
    return write(tmp / "huge.nii.gz", array)


@case(EmptyImageError, "zero-size axis \\(size 16×0×5\\)")
def zero_size_axis_nifti(tmp):
    nib.save(nib.Nifti1Image(np.zeros((16, 0, 5), np.float32), np.eye(4)), tmp / "empty.nii")
    return tmp / "empty.nii"


@case(EmptyImageError, "zero-size axis \\(DimSize = 16 0 5\\)")
def zero_size_axis_metaimage(tmp):
    path = write(tmp / "vol.mha", volume())
    return rewrite_text(path, b"DimSize = 16 12 5", b"DimSize = 16 0 5")


@case(EmptyImageError, "every voxel has the value 0: there is no contrast")
def all_zero_image(tmp):
    return write(tmp / "blank.nii.gz", np.zeros((5, 12, 16), np.float32))


@case(VectorImageError, "3 components per voxel")
def vector_image(tmp):
    return write(tmp / "field.mha", volume((5, 12, 16, 3)), is_vector=True)


@case(VectorImageError, "complex-valued voxels \\(complex64\\)")
def complex_image(tmp):
    nib.save(nib.Nifti1Image((volume() + 1j * volume()).astype(np.complex64), np.eye(4)), tmp / "kspace.nii")
    return tmp / "kspace.nii"


@case(VectorImageError, "2 components per voxel \\(float32\\)")
def two_channel_metaimage(tmp):
    return write(tmp / "kspace.mha", (volume() + 1j * volume()).astype(np.complex64))


@case(UnsupportedDimensionsError, "not a 2-D or 3-D image \\(size 1×1×40\\)")
def one_d_profile(tmp):
    return write(tmp / "profile.mha", volume((40, 1, 1)))


@case(ImageTooLargeError, "960 voxels \\(16×12×5\\), more than the limit of 500 voxels")
def too_many_voxels(tmp):
    return write(tmp / "big.nii.gz", volume()), {"max_voxels": 500}


@case(NonIntegerMaskError, "non-integer values, e.g. 0.5")
def float_mask_with_fractions(tmp):
    array = np.zeros((5, 12, 16), np.float32)
    array[2, 3:6, 4:8] = 0.5
    return write(tmp / "prob.nii.gz", array), {"kind": "label"}


@case(NonIntegerMaskError, "NaN/infinite")
def mask_with_nan(tmp):
    array = np.zeros((5, 12, 16), np.float32)
    array[0, 0, 0] = np.nan
    return write(tmp / "mask.nii.gz", array), {"kind": "label"}


# --------------------------------------------------------------------------- MetaImage and NRRD


@case(UnreadableImageError, "pixel data file 'vol.raw' \\(named by ElementDataFile\\) is missing.*together")
def mhd_without_raw(tmp):
    path = write(tmp / "vol.mhd", volume())
    (tmp / "vol.raw").unlink()
    return path


@case(UnreadableImageError, "'other.raw' \\(named by ElementDataFile\\) is missing")
def mhd_with_wrong_element_data_file(tmp):
    return rewrite_text(write(tmp / "vol.mhd", volume()), b"ElementDataFile = vol.raw", b"ElementDataFile = other.raw")


@case(UnsafePathError, "points outside the folder")
def mhd_pointing_outside(tmp):
    (tmp / "secret.raw").write_bytes(b"\x00" * 4000)
    (tmp / "up").mkdir()
    path = write(tmp / "up" / "vol.mhd", volume())
    return rewrite_text(path, b"ElementDataFile = vol.raw", b"ElementDataFile = ../secret.raw")


@case(UnsafePathError, "absolute path")
def mhd_absolute_data_file(tmp):
    return rewrite_text(write(tmp / "vol.mhd", volume()), b"ElementDataFile = vol.raw",
                        b"ElementDataFile = /etc/hostname")


@case(UnreadableImageError, "truncated: 'vol.raw' holds 3000 bytes but the header needs 3840")
def mhd_with_short_raw(tmp):
    path = write(tmp / "vol.mhd", volume())
    (tmp / "vol.raw").write_bytes((tmp / "vol.raw").read_bytes()[:3000])
    return path


@case(UnreadableImageError, "truncated: the file holds \\d+ bytes but the header needs")
def truncated_compressed_mha(tmp):
    image = sitk.GetImageFromArray(np.random.default_rng(3).normal(size=(5, 12, 16)).astype(np.float32))
    sitk.WriteImage(image, str(tmp / "full.mha"), useCompression=True)
    data = (tmp / "full.mha").read_bytes()
    (tmp / "cut.mha").write_bytes(data[: len(data) * 2 // 3])
    return tmp / "cut.mha"


@case(UnreadableImageError, "pixel data cannot be read \\(.*expected 3840 bytes")
def truncated_gzip_nrrd(tmp):
    image = sitk.GetImageFromArray(np.random.default_rng(4).normal(size=(5, 12, 16)).astype(np.float32))
    sitk.WriteImage(image, str(tmp / "full.nrrd"), useCompression=True)
    data = (tmp / "full.nrrd").read_bytes()
    (tmp / "cut.nrrd").write_bytes(data[: len(data) * 2 // 3])
    return tmp / "cut.nrrd"


@case(UnreadableImageError, "no ElementDataFile line")
def metaimage_header_without_data_line(tmp):
    (tmp / "vol.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 12 5\nElementType = MET_FLOAT\n",
                                 encoding="utf-8")
    return tmp / "vol.mhd"


@case(UnreadableImageError, "bad NRRD header: no 'sizes' field")
def nrrd_without_sizes(tmp):
    path = write(tmp / "vol.nrrd", volume())
    data = path.read_bytes()
    start = data.index(b"sizes:")
    end = data.index(b"\n", start)
    path.write_bytes(data[:start] + data[end + 1:])
    return path


@case(UnreadableImageError, "bad NRRD header: line 2 is not 'field: value'")
def nrrd_with_garbage_line(tmp):
    (tmp / "vol.nrrd").write_bytes(b"NRRD0004\nthis is not a field\ntype: float\n\n" + b"\x00" * 64)
    return tmp / "vol.nrrd"


@case(UnreadableImageError, "truncated: the file holds 64 bytes but the header needs 3840")
def nrrd_with_short_data(tmp):
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 16 12 5\nencoding: raw\nendian: little\n\n"
    (tmp / "vol.nrrd").write_bytes(header + b"\x00" * 64)
    return tmp / "vol.nrrd"


# ------------------------------------------------------------------------------------------ archives


@case(HostileArchiveError, "climbs out of the archive folder with '..'")
def zip_with_traversal(tmp):
    return write_zip(tmp / "evil.zip", members={"ok.txt": b"x", "../../escape.nii": b"y"})


@case(HostileArchiveError, "absolute path")
def zip_with_absolute_member(tmp):
    return write_zip(tmp / "evil.zip", members={zipfile.ZipInfo("/etc/cron.d/job"): b"x"})


@case(HostileArchiveError, "symbolic link")
def zip_with_symlink(tmp):
    link = zipfile.ZipInfo("scan.nii")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return write_zip(tmp / "links.zip", members={link: b"/etc/passwd"})


@case(HostileArchiveError, "compression ratio \\d+:1, limit 1000:1\\), typical of a zip bomb")
def zip_bomb_ratio(tmp):
    return write_zip(tmp / "bomb.zip", members={"zeros.nii": b"\x00" * (4 << 20)}, compression=zipfile.ZIP_BZIP2)


@case(ArchiveTooLargeError, "6 members, more than the limit of 5")
def zip_with_too_many_members(tmp):
    archive = write_zip(tmp / "many.zip", members={f"f{i}.txt": b"x" for i in range(6)})
    return lambda: extract_zip(archive, tmp / "out", max_members=5)


@case(ArchiveTooLargeError, "unpack to 20.0 KiB, more than the limit of 10.0 KiB")
def zip_too_large(tmp):
    archive = write_zip(tmp / "large.zip", members={"a.bin": os.urandom(10240), "b.bin": os.urandom(10240)})
    return lambda: extract_zip(archive, tmp / "out", max_total_bytes=10240)


@case(EmptyArchiveError, "the zip archive has no members")
def empty_zip(tmp):
    return write_zip(tmp / "empty.zip", members={})


@case(EmptyArchiveError, "holds no files")
def zip_with_only_folders(tmp):
    return write_zip(tmp / "folders.zip", members={"a/": b"", "a/b/": b""})


@case(NotAnImageError, "holds no image file \\(found: notes.txt, scan.zip\\)")
def zip_without_images(tmp):
    inner = write_zip(tmp / "inner.zip", members={"x.txt": b"x"}).read_bytes()
    return write_zip(tmp / "stuff.zip", members={"notes.txt": b"hello", "scan.zip": inner})


@case(UnreadableImageError, "not a valid zip archive or a corrupt one")
def truncated_zip(tmp):
    data = write_zip(tmp / "full.zip", members={"a.bin": os.urandom(5000)}).read_bytes()
    (tmp / "cut.zip").write_bytes(data[:3000])
    return tmp / "cut.zip"


@case(MultipleSeriesError, "holds 2 DICOM series: 1.2.3.1 'T1' \\(MR, 5 files\\); 1.2.3.2 'T2' \\(MR, 5 files\\)"
      ".*pass series=")
def zip_with_two_series(tmp):
    write_dicom_series(tmp / "s" / "a", volume(), "1.2.3.1", "T1")
    write_dicom_series(tmp / "s" / "b", volume(), "1.2.3.2", "T2")
    return write_zip(tmp / "two.zip", tmp / "s", compression=zipfile.ZIP_STORED)


@case(UnknownSeriesError, "series='1.2.3.9' matches none of the series here: 1.2.3.1 'T1'")
def unknown_series_uid(tmp):
    return zip_with_two_series(tmp), {"series": "1.2.3.9"}


@case(UnknownSeriesError, "series='1.2.3' matches 2 series")
def ambiguous_series_prefix(tmp):
    return zip_with_two_series(tmp), {"series": "1.2.3"}


@case(MultipleSeriesError, "holds 2 images: a.nii.gz \\(NIfTI\\); b.mha \\(MetaImage\\)")
def zip_with_two_images(tmp):
    write(tmp / "a.nii.gz", volume())
    write(tmp / "b.mha", volume())
    return write_zip(tmp / "pair.zip", members={"a.nii.gz": (tmp / "a.nii.gz").read_bytes(),
                                                "b.mha": (tmp / "b.mha").read_bytes()})


@case(UnreadableImageError, "pixel data cannot be read|truncated|corrupt")
def zip_with_corrupt_image(tmp):
    data = write(tmp / "a.nii.gz", np.random.default_rng(2).normal(size=(5, 12, 16)).astype(np.float32)).read_bytes()
    return write_zip(tmp / "one.zip", members={"scan/a.nii.gz": data[: len(data) // 2]})


@case(UnreadableImageError, "'vol.raw' \\(named by ElementDataFile\\) is missing")
def zip_with_mhd_but_no_raw(tmp):
    write(tmp / "vol.mhd", volume())
    return write_zip(tmp / "mhd.zip", members={"vol.mhd": (tmp / "vol.mhd").read_bytes()})


# ---------------------------------------------------------------------------------- pair and mask


def image(shape=(5, 12, 16), spacing=SPACING, source="image.nii.gz", dtype=np.float32):
    ndim = len(shape)
    return Image(volume(shape, dtype), Geometry(spacing[:ndim], (0.0,) * ndim, tuple(np.eye(ndim).ravel())),
                 source=source)


@case(MaskGeometryError, "mask grid \\(size 16×12×4, .*differs from the grid of its image image.nii.gz \\(size 16×12×5")
def mask_size_mismatch(tmp):
    return lambda: check_mask(image((4, 12, 16), source="mask.nii.gz", dtype=np.uint8), image())


@case(MaskGeometryError, "spacing \\(0.7, 0.9, 3\\) mm.*spacing \\(0.7, 0.9, 2.5\\) mm")
def mask_spacing_mismatch(tmp):
    return lambda: check_mask(image(spacing=(0.7, 0.9, 3.0), source="mask.nii.gz", dtype=np.uint8), image())


@case(NonIntegerMaskError, "mask holds \\d+ non-integer values, e.g. 0.25")
def in_memory_float_mask(tmp):
    mask = image(source="mask.nii.gz")
    mask.array[:] = 0.25
    return lambda: check_mask(mask, image())


@case(MaskGeometryError, "direction \\(1, 0, 0, 0, -1, 0, 0, 0, 1\\).*direction \\(1, 0, 0, 0, 1, 0")
def mask_direction_mismatch(tmp):
    mask = image(source="mask.nii.gz", dtype=np.uint8)
    mask.geometry = Geometry(mask.geometry.spacing, mask.geometry.origin, (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    return lambda: check_mask(mask, image())


@case(DimensionMismatchError, "mask is 2-D \\(size 16×12\\) but its image image.nii.gz is 3-D")
def mask_2d_for_3d_image(tmp):
    return lambda: check_mask(image((12, 16), source="mask.nii.gz", dtype=np.uint8), image())


@case(DimensionMismatchError, "fixed image fixed.nii is 2-D \\(size 16×12\\) but the moving image moving.nii is 3-D")
def pair_2d_vs_3d(tmp):
    return lambda: check_pair(image((12, 16), source="fixed.nii"), image(source="moving.nii"))


# ------------------------------------------------------------------------------------------- runner


@pytest.mark.parametrize("make, cls, match", CASES)
def test_bad_input(tmp_path, make, cls, match):
    target = make(tmp_path)
    kwargs = {}
    if isinstance(target, tuple):
        target, kwargs = target
    call = target if callable(target) else (lambda: read_image(target, **kwargs))
    with pytest.raises(cls, match=match) as info:
        call()
    error = info.value
    assert isinstance(error, ImageError) and isinstance(error, ValueError)
    assert error.http_status in (400, 413, 415, 422) and error.to_dict()["status"] == error.http_status
    assert " — " in str(error) or error.hint is None
    if not callable(target):
        assert target.name in str(error) and error.path is not None


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_status_codes():
    assert UnreadableImageError.http_status == 400 and HostileArchiveError.http_status == 400
    assert ImageTooLargeError.http_status == 413 and ArchiveTooLargeError.http_status == 413
    assert UnsupportedFormatError.http_status == 415 and NotAnImageError.http_status == 415
    assert FrameRequiredError.http_status == 422 and MaskGeometryError.http_status == 422
    assert issubclass(ArchiveTooLargeError, HostileArchiveError) and issubclass(DicomNoPixelDataError, NotAnImageError)


def test_errors_pickle_with_their_details(tmp_path):
    with pytest.raises(ImageTooLargeError) as info:
        read_image(write(tmp_path / "big.nii.gz", volume()), max_voxels=10)
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is ImageTooLargeError and str(clone) == str(info.value)
    assert clone.details == {"limit": 10, "voxels": 960} and clone.path == str(tmp_path / "big.nii.gz")


def test_read_header_refuses_early(tmp_path):
    with pytest.raises(UnreadableImageError, match="missing"):
        read_header(rewrite_text(write(tmp_path / "v.mhd", volume()), b"= v.raw", b"= gone.raw"))
    header = read_header(four_d(tmp_path))
    assert header.n_frames == 3 and header.dims == 4


def corrupt_crc_zip(path):
    """A zip whose second member inflates to more than its headers declare (sizes patched to 10 bytes)."""
    payload = b"A" * 5000
    write_zip(path, members={"good.txt": b"fine", "liar.bin": payload})
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.rindex(signature)  # the last local / central header is the liar's
        data[start + offset:start + offset + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_lying_member_size_is_stopped_and_nothing_is_left(tmp_path):
    archive = corrupt_crc_zip(tmp_path / "liar.zip")
    dest = tmp_path / "dest"
    with pytest.raises(UnreadableImageError, match="CRC"):
        extract_zip(archive, dest)
    assert list(dest.iterdir()) == []  # the member written first was removed with the staging folder


@pytest.mark.parametrize("maker", [zip_with_traversal, zip_with_symlink, zip_bomb_ratio, zip_with_absolute_member])
def test_failing_extraction_leaves_nothing(tmp_path, maker):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("untouched", encoding="utf-8")
    with pytest.raises(HostileArchiveError):
        extract_zip(maker(tmp_path), dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "escape.nii").exists() and not (tmp_path.parent / "escape.nii").exists()


def test_byte_limit_is_checked_before_writing(tmp_path):
    """Declared sizes over the budget are refused before the destination is even created."""
    archive = write_zip(tmp_path / "two.zip", members={"a.bin": os.urandom(6000), "b.bin": os.urandom(6000)})
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveTooLargeError):
        extract_zip(archive, dest, max_total_bytes=8000)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_float32_range_check_alone():
    """Only wider floats can exceed float32; the edge itself is accepted, one step past it is not."""
    edge = np.array([[FLOAT32_MAX, -FLOAT32_MAX], [0.0, 1.0]])
    check_float32_range(edge, "edge.nii")
    check_float32_range(np.array([[np.iinfo(np.int64).max, 0]]), "int64.nii")  # int64 fits in float32's range
    check_float32_range(np.array([[1.0, 2.0]], np.float32), "f32.nii")
    past = np.nextafter(FLOAT32_MAX, np.inf) * 2
    with pytest.raises(ValuesOutOfRangeError, match="1 voxels beyond") as info:
        check_float32_range(np.array([[0.0, -past]]), "past.nii")
    error = info.value
    assert error.http_status == 422 and error.code == "values_out_of_range" and error.path == "past.nii"
    assert error.details == {"count": 1, "limit": FLOAT32_MAX} and "Inf" not in error.problem


def test_a_float64_image_beyond_float32_is_not_called_infinite(tmp_path):
    """Before the range check these images were refused later as holding infinite voxels they do not hold."""
    array = volume(dtype=np.float64)
    array[0, 0, 0] = 1e200
    with pytest.raises(ValuesOutOfRangeError) as info:
        read_image(write(tmp_path / "huge.mha", array))
    assert not isinstance(info.value, NonFiniteValuesError) and "infinite" not in str(info.value)
    array[0, 0, 0] = 3e38  # inside float32's range: read, kept as float64
    assert read_image(write(tmp_path / "big.mha", array)).array.dtype == np.float64


SECRET = "root:$6$s3cr3t-hash:19000:0:99999:7:::"


@pytest.mark.parametrize("name, data", [
    ("shadow", (SECRET + "\n").encode()),
    ("shadow.nii", (SECRET + "\n").encode()),
    ("garbage.nrrd", b"NRRD0004\nthe s3cr3t is hunter2\ntype: float\n\n"),  # no colon: not a field
    ("badtype.nrrd", f"NRRD0004\ntype: {SECRET}\ndimension: 1\nsizes: 4\nencoding: raw\n\n".encode()),
    ("badenc.nrrd", f"NRRD0004\ntype: float\ndimension: 1\nsizes: 4\nencoding: {SECRET}\n\n".encode()),
    ("badtype.mha", f"ObjectType = Image\nNDims = 2\nDimSize = 2 2\nElementType = {SECRET}\n"
                    "ElementDataFile = LOCAL\n".encode()),
], ids=lambda value: value if isinstance(value, str) else "")
def test_refusals_never_quote_the_file(tmp_path, name, data):
    """A manifest or a misnamed upload may point the readers at any text: its words must not come back."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError) as info:
        read_image(tmp_path / name)
    said = f"{info.value} {info.value.to_dict()}".lower()  # readers upper-case some fields (ElementType)
    assert "s3cr3t" not in said and "hunter2" not in said

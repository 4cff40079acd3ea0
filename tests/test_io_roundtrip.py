"""One image saved as NIfTI, MetaImage, NRRD and a DICOM series reads back to the same physical image.

"Same physical image": every voxel centre lands on a voxel centre of the other reading, holding the
same value. Where a format can store the geometry as given (NIfTI, MetaImage, NRRD always; DICOM when
the slice axis follows the DICOM normal) the spacing, origin and direction match too. A DICOM series is
always read in the normal's order (row × column), so a volume whose slices run against it comes back
reversed along z with a correspondingly different (but physically identical) geometry.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from models.io.readers import read_image

FILE_FORMATS = ("img.nii.gz", "img.nii", "img.mha", "img.nrrd")


def write(path, array, spacing, origin, direction):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder, array, spacing, origin, direction):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    d, uid = direction, generate_uid()
    ds = lambda values: "\\".join(f"{float(v):.10g}" for v in values)  # noqa: E731 - DS: 16 characters at most
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in (("0008|0060", "MR"), ("0020|000e", uid), ("0020|000d", uid + ".0"),
                           ("0020|0037", ds((d[0], d[3], d[6], d[1], d[4], d[7]))),
                           ("0020|0032", ds(image.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0020|0013", str(k + 1)), ("0008|0018", f"{uid}.{k + 1}")):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


def volume(shape=(5, 12, 16)):
    values = (np.arange(np.prod(shape)) * 7919) % 3001 - 1500
    return values.reshape(shape).astype(np.int16)


def rotation_from_quaternion(q):
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def assert_same_physical_image(a, b, atol=1e-3):
    """Each voxel centre of ``a`` is a voxel centre of ``b`` with the same value (both grids cover the same)."""
    assert a.ndim == b.ndim and a.array.size == b.array.size
    index = np.stack(np.meshgrid(*[np.arange(n) for n in a.size], indexing="ij"), axis=-1).reshape(-1, a.ndim)
    points = a.geometry.index_to_physical(index)
    scaled = b.geometry.matrix * np.asarray(b.geometry.spacing)
    continuous = np.linalg.solve(scaled, (points - np.asarray(b.geometry.origin)).T).T
    rounded = np.round(continuous)
    assert np.abs(continuous - rounded).max() < atol
    other = rounded.astype(int)
    assert np.all(other >= 0) and np.all(other < np.asarray(b.size))
    np.testing.assert_array_equal(a.array[tuple(index[:, ::-1].T)], b.array[tuple(other[:, ::-1].T)])


def assert_same_geometry(image, spacing, origin, direction, atol=1e-4):
    np.testing.assert_allclose(image.geometry.spacing, spacing, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(image.geometry.origin, origin, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(image.geometry.direction, direction, atol=atol)


OBLIQUE = tuple(rotation_from_quaternion((0.9, 0.2, -0.3, 0.25)).ravel())
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # proper rotation about y: det +1
MIRRORED = tuple((rotation_from_quaternion((0.8, -0.1, 0.4, 0.3)) @ np.diag([1, 1, -1])).ravel())  # det -1
CASES = {
    "identity-iso": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
    "anisotropic": ((0.45, 0.8, 3.3), (-120.5, 88.25, -40.0), tuple(np.eye(3).ravel())),
    "oblique": ((0.7, 0.9, 2.5), (12.5, -40.0, 7.25), OBLIQUE),
    "flipped": ((1.2, 0.6, 4.0), (100.0, -20.0, 55.5), FLIPPED),
    "mirrored": ((0.5, 0.5, 1.5), (-3.0, 4.0, 5.0), MIRRORED),
}


@pytest.mark.parametrize("case", CASES)
def test_formats_agree(tmp_path, case):
    spacing, origin, direction = CASES[case]
    array = volume()
    readings = {name: read_image(write(tmp_path / name, array, spacing, origin, direction)) for name in FILE_FORMATS}
    readings["dicom"] = read_image(write_dicom_series(tmp_path / "dicom", array, spacing, origin, direction))
    for name in FILE_FORMATS:  # formats that store the geometry as given
        np.testing.assert_array_equal(readings[name].array, array)
        assert_same_geometry(readings[name], spacing, origin, direction)
    reference = readings["img.mha"]
    for image in readings.values():
        assert_same_physical_image(reference, image)
        assert_same_physical_image(image, reference)
    if np.linalg.det(np.reshape(direction, (3, 3))) > 0:
        assert_same_geometry(readings["dicom"], spacing, origin, direction)
        np.testing.assert_array_equal(readings["dicom"].array, array)


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0, 1.0), (0.0, -1.0, 1.0, 0.0), (-1.0, 0.0, 0.0, 1.0)])
def test_2d_formats_agree(tmp_path, direction):
    array = volume((12, 16))
    for name in ("img.nii.gz", "img.mha", "img.nrrd"):
        image = read_image(write(tmp_path / name, array, (0.6, 1.4), (5.0, -7.5), direction))
        np.testing.assert_array_equal(image.array, array)
        assert_same_geometry(image, (0.6, 1.4), (5.0, -7.5), direction)


@st.composite
def geometries(draw):
    spacing = tuple(draw(st.floats(0.2, 5.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-300.0, 300.0)) for _ in range(3))
    q = [draw(st.floats(-1.0, 1.0)) for _ in range(4)]
    if np.linalg.norm(q) < 0.1:
        q = [1.0, 0.0, 0.0, 0.0]
    flips = np.diag([draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    direction = rotation_from_quaternion(q) @ flips
    return spacing, origin, tuple(direction.ravel())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometries())
def test_random_geometry_round_trips(geometry):
    spacing, origin, direction = geometry
    array = volume((4, 6, 5))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nifti = read_image(write(tmp / "g.nii.gz", array, spacing, origin, direction))
        meta = read_image(write(tmp / "g.mha", array, spacing, origin, direction))
        dicom = read_image(write_dicom_series(tmp / "dicom", array, spacing, origin, direction))
    for image in (nifti, meta):
        np.testing.assert_array_equal(image.array, array)
        assert_same_geometry(image, spacing, origin, direction, atol=2e-4)
    assert_same_physical_image(meta, dicom, atol=2e-3)
    assert_same_physical_image(nifti, dicom, atol=2e-3)
    if np.linalg.det(np.reshape(direction, (3, 3))) > 0:
        assert_same_geometry(dicom, spacing, origin, direction, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(geometries(), st.integers(0, 2))
def test_singleton_axis_squeeze_keeps_in_plane_geometry(geometry, axis):
    """A 3-D grid with one singleton axis reads as 2-D: in-plane distances exact, LPS points kept when possible."""
    spacing, origin, direction = geometry
    shape = [4, 6, 5]
    shape[2 - axis] = 1  # NumPy order: ITK axis k is NumPy axis 2 - k
    array = volume(tuple(shape))
    with tempfile.TemporaryDirectory() as tmp:
        image = read_image(write(Path(tmp) / "s.mha", array, spacing, origin, direction))
    assert image.ndim == 2 and image.metadata["squeezed"]["axis"] == axis
    keep = [k for k in range(3) if k != axis]
    index2 = np.stack(np.meshgrid(*[np.arange(n) for n in image.size], indexing="ij"), axis=-1).reshape(-1, 2)
    index3 = np.zeros((len(index2), 3))
    index3[:, keep] = index2
    d = np.reshape(direction, (3, 3))
    points3 = np.asarray(origin) + (index3 * spacing) @ d.T
    points2 = image.geometry.index_to_physical(index2)
    np.testing.assert_array_equal(image.array.ravel(), array.ravel())
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(points2), dist(points3), atol=1e-6)
    if image.metadata["squeezed"]["mode"] == "submatrix":
        dropped = int(np.argmax(np.abs(d[:, axis])))
        np.testing.assert_allclose(points2, np.delete(points3, dropped, axis=1), atol=1e-6)

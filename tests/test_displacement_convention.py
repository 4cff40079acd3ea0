"""The displacement file's convention, checked against independent computations.

Our file must mean, for ITK/ANTs/Slicer: the fixed point ``p`` maps to ``p + u(p)`` in the moving
image, ``u`` in mm in LPS. Checked three ways, in 2D and 3D, for anisotropic spacing, oblique and
flipped directions and different fixed/moving grids:
1. on one grid, SimpleITK applying our file equals our own voxel warp (``models.warp``);
2. across grids, the warped image equals an analytic image sampled at ``p + u(p)`` computed by hand;
3. nibabel reads the documented layout and values.
"""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

from models.io.image import Geometry, Image
from models.io.writers import displacement_image
from models.resample import warp_physical
from models.warp import warp


def rotation(ndim: int, degrees: float, flip: bool) -> tuple[float, ...]:
    t = np.deg2rad(degrees)
    r = np.eye(ndim)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    if ndim == 3:  # tilt out of plane too: oblique, not just in-plane rotated
        s = np.deg2rad(15)
        r = r @ np.array([[1, 0, 0], [0, np.cos(s), -np.sin(s)], [0, np.sin(s), np.cos(s)]])
    if flip:
        r = r @ np.diag([-1.0] + [1.0] * (ndim - 1))
    return tuple(r.ravel())


def blobs(points_mm: np.ndarray) -> np.ndarray:
    """A smooth analytic image of physical position (wide Gaussians; linear interpolation is accurate)."""
    centres = [np.array(c) for c in ((10.0, -5.0, 3.0), (-8.0, 6.0, -2.0))]
    out = np.zeros(points_mm.shape[:-1])
    for c in centres:
        out += np.exp(-np.sum((points_mm - c[: points_mm.shape[-1]]) ** 2, axis=-1) / (2 * 15.0**2))
    return out


def physical_points(geometry: Geometry, shape: tuple[int, ...]) -> np.ndarray:
    """LPS points of every voxel, ``(*shape, ndim)`` in NumPy axis order of the grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return geometry.index_to_physical(index[..., ::-1])  # NumPy (z, y, x) -> ITK index (x, y, z)


def sample_image(geometry: Geometry, shape: tuple[int, ...]) -> Image:
    return Image(blobs(physical_points(geometry, shape)).astype(np.float32), geometry)


def smooth_field(shape: tuple[int, ...], amplitude: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.stack([gaussian_filter(rng.standard_normal(shape), 3.0) for _ in shape])
    return (amplitude * field / np.abs(field).max()).astype(np.float32)


def centred(spacing, direction, shape, centre_mm) -> Geometry:
    """A grid whose centre voxel sits at ``centre_mm`` whatever its orientation (so grids overlap)."""
    half = (np.asarray(tuple(reversed(shape))) - 1) / 2  # ITK index of the centre
    d = np.asarray(direction).reshape(len(spacing), len(spacing))
    origin = np.asarray(centre_mm) - d @ (np.asarray(spacing) * half)
    return Geometry(tuple(spacing), tuple(origin), tuple(direction))


CASES = {
    "2d": dict(fixed=centred((1.3, 0.7), rotation(2, 20, flip=True), (40, 36), (1.0, 0.5)), fixed_shape=(40, 36),
               moving=centred((0.9, 1.1), rotation(2, -35, flip=False), (44, 38), (0.0, 0.0)),
               moving_shape=(44, 38)),
    "3d": dict(fixed=centred((1.2, 0.8, 2.5), rotation(3, 30, flip=True), (12, 30, 26), (1.0, 0.0, -1.0)),
               fixed_shape=(12, 30, 26),
               moving=centred((1.0, 1.0, 2.0), rotation(3, -10, flip=False), (14, 32, 30), (0.0, 0.0, 0.0)),
               moving_shape=(14, 32, 30)),
}


@pytest.mark.parametrize("case", CASES)
def test_itk_applying_our_file_equals_our_voxel_warp_on_one_grid(case, tmp_path):
    geometry, shape = CASES[case]["fixed"], CASES[case]["fixed_shape"]
    moving = sample_image(geometry, shape)
    disp = smooth_field(shape, amplitude=2.0, seed=1)
    sitk.WriteImage(displacement_image(disp, moving.to_sitk()), str(tmp_path / "displacement.nii.gz"))
    sitk.WriteImage(moving.to_sitk(), str(tmp_path / "moving.nii.gz"))
    # What a user does with SimpleITK, from the files alone:
    field = sitk.ReadImage(str(tmp_path / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    reference = sitk.ReadImage(str(tmp_path / "moving.nii.gz"))
    itk = sitk.GetArrayFromImage(sitk.Resample(reference, reference, sitk.DisplacementFieldTransform(field),
                                               sitk.sitkLinear, 0.0))
    ours = warp(torch.from_numpy(moving.array)[None, None], torch.from_numpy(disp)[None])[0, 0].numpy()
    inner = tuple(slice(3, -3) for _ in shape)
    np.testing.assert_allclose(itk[inner], ours[inner], atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_warp_across_grids_samples_the_moving_image_at_p_plus_u(case, tmp_path):
    c = CASES[case]
    fixed = Image(np.zeros(c["fixed_shape"], np.float32), c["fixed"])
    moving = sample_image(c["moving"], c["moving_shape"])
    disp = smooth_field(c["fixed_shape"], amplitude=1.5, seed=2)
    field_mm = displacement_image(disp, fixed.to_sitk())
    warped = warp_physical(moving, field_mm, fixed).array
    # By hand: u_mm = D · (spacing ⊙ u_index), channels reversed from NumPy to ITK index order.
    u_index = np.moveaxis(disp[::-1], 0, -1)
    u_mm = (u_index * np.asarray(c["fixed"].spacing)) @ c["fixed"].matrix.T
    targets = physical_points(c["fixed"], c["fixed_shape"]) + u_mm
    expected = blobs(targets)
    # Compare where p + u falls at least one voxel inside the moving grid (ITK blends with the
    # zero outside within the last voxel; beyond the grid the output is 0 by contract).
    index = ((targets - np.asarray(c["moving"].origin)) @ c["moving"].matrix) / np.asarray(c["moving"].spacing)
    size = np.asarray(tuple(reversed(c["moving_shape"])))
    inside = np.all((index >= 1) & (index <= size - 2), axis=-1)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(warped[inside], expected[inside], atol=5e-3)
    assert np.all(warped[np.any((index < -1) | (index > size), axis=-1)] == 0)


@pytest.mark.parametrize("case", CASES)
def test_nibabel_reads_the_documented_layout_and_values(case, tmp_path):
    c = CASES[case]
    ndim, shape = len(c["fixed_shape"]), c["fixed_shape"]
    disp = smooth_field(shape, amplitude=2.0, seed=3)
    path = tmp_path / "displacement.nii.gz"
    sitk.WriteImage(displacement_image(disp, Image(np.zeros(shape, np.float32), c["fixed"]).to_sitk()), str(path))
    img = nib.load(path)
    assert img.header.get_intent()[0] == "vector"
    size = tuple(reversed(shape))  # ITK index order
    assert img.shape == (*size, *(1,) * (3 - ndim), 1, ndim)  # (X, Y, Z, 1, 3) / (X, Y, 1, 1, 2)
    data = img.get_fdata().reshape(*size, ndim)
    index = (3, 5, 2)[:ndim]  # an ITK index (x, y[, z])
    u_index = disp[(slice(None), *reversed(index))][::-1]  # our channels, reversed to ITK order
    expected_lps_mm = c["fixed"].matrix @ (np.asarray(c["fixed"].spacing) * u_index)
    np.testing.assert_allclose(data[index], expected_lps_mm, atol=1e-5)

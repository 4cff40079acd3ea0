"""The Jacobian map and the inverse field against independent computations.

The grids are oblique and anisotropic on purpose: that is where SimpleITK's own Jacobian filter
(which ignores the direction) is wrong, and where a mix-up of index and physical axes would show.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from models.field_maps import invert_field, jacobian_image, jacobian_summary, sample_field


def rotation(ndim: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if ndim == 2:
        return np.array([[c, -s], [s, c]])
    t = angle / 2  # a tilt out of the axial plane too; angle 0 is the axis-aligned grid
    tilt = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ tilt


def grid(size, spacing, angle, origin=None) -> sitk.Image:
    """A scalar image on an oblique, anisotropic grid (ITK size order)."""
    image = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(rotation(len(size), angle).ravel().tolist())
    image.SetOrigin(origin or [-7.0, 3.0, 11.0][:len(size)])
    return image


def points_of(image: sitk.Image) -> np.ndarray:
    """Every voxel's physical point, by SimpleITK (array order, ITK components)."""
    size = image.GetSize()
    flat = [image.TransformIndexToPhysicalPoint(index) for index in np.ndindex(*size)]
    return np.asarray(flat).reshape(*size, len(size)).transpose(*range(len(size) - 1, -1, -1), len(size))


def field_from(reference: sitk.Image, function) -> sitk.Image:
    """The displacement ``function(p)`` (mm, ITK order) sampled on ``reference``'s grid."""
    field = sitk.GetImageFromArray(function(points_of(reference)), isVector=True)
    field.CopyInformation(reference)
    return field


WAVE = (2.0, 25.0)  # amplitude (mm) and length scale: ‖∂u/∂p‖ = 0.08, smooth and invertible


def wave(points: np.ndarray) -> np.ndarray:
    """``u(p) = a·sin(p_x/λ)`` along x: ``det(I + ∂u/∂p) = 1 + (a/λ)·cos(p_x/λ)`` exactly."""
    a, scale = WAVE
    u = np.zeros_like(points)
    u[..., 0] = a * np.sin(points[..., 0] / scale)
    return u


@pytest.mark.parametrize("size, spacing", [((40, 30), (1.3, 0.7)), ((24, 20, 8), (1.2, 0.8, 3.0))],
                         ids=["2d", "3d"])
def test_jacobian_on_an_oblique_anisotropic_grid_matches_the_analytic_field(size, spacing):
    fixed = grid(size, spacing, angle=0.5)
    det = sitk.GetArrayFromImage(jacobian_image(field_from(fixed, wave)))
    a, scale = WAVE
    truth = 1 + (a / scale) * np.cos(points_of(fixed)[..., 0] / scale)
    inner = (slice(1, -1),) * len(size)  # central differences inside; one-sided at the edge
    assert np.abs(det[inner] - truth[inner]).max() < 2e-3
    assert det.dtype == np.float32 and jacobian_image(field_from(fixed, wave)).GetDirection() == fixed.GetDirection()


def test_an_affine_field_has_its_determinant_everywhere_and_sitk_disagrees_on_oblique_grids():
    """u(p) = A p: det(I + A) at every voxel. SimpleITK's filter is right on an axis-aligned grid only."""
    matrix = np.array([[0.10, 0.05, 0.0], [-0.04, -0.20, 0.03], [0.02, 0.0, 0.15]])
    expected = np.linalg.det(np.eye(3) + matrix)
    for angle in (0.0, 0.6):
        fixed = grid((16, 14, 6), (1.1, 0.9, 2.5), angle)
        field = field_from(fixed, lambda p: p @ matrix.T)
        ours = sitk.GetArrayFromImage(jacobian_image(field))
        assert np.allclose(ours, expected, atol=1e-5)
        theirs = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
        assert np.allclose(theirs[1:-1, 1:-1, 1:-1], expected, atol=1e-4) == (angle == 0.0)


def test_summary_counts_folding_and_the_spread_of_log_jacobian():
    det = np.array([2.0, 0.5, 1.0, -0.1, 0.0])
    summary = jacobian_summary(det)
    assert summary["folding_pct"] == 40.0
    assert summary["log_jacobian_std"] == pytest.approx(np.std(np.log([2.0, 0.5, 1.0])), abs=1e-5)
    assert (summary["jacobian_min"], summary["jacobian_max"]) == (-0.1, 2.0)


def test_sample_field_agrees_with_sitk_and_is_zero_outside():
    fixed = grid((20, 16, 6), (1.2, 0.8, 2.0), 0.4)
    field = field_from(fixed, wave)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    rng = np.random.default_rng(0)
    inside = points_of(fixed)[2:-2, 2:-2, 2:-2].reshape(-1, 3)[rng.choice(300, 40, replace=False)] + 0.3
    ours = sample_field(field, inside)
    theirs = np.array([np.subtract(transform.TransformPoint(tuple(p)), p) for p in inside])
    assert np.abs(ours - theirs).max() < 1e-6
    assert np.all(sample_field(field, np.array([[1e4, 1e4, 1e4]])) == 0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_inverse_composes_with_the_forward_map_to_the_identity(ndim):
    """Checked with SimpleITK's transforms, on a moving grid unlike the fixed one."""
    fixed = grid((40, 36, 10)[:ndim], (1.0, 0.8, 2.5)[:ndim], 0.3)
    moving = grid((34, 40, 9)[:ndim], (1.2, 0.9, 2.8)[:ndim], -0.2, origin=[-6.0, 2.0, 10.0][:ndim])
    field = field_from(fixed, wave)
    inverse = invert_field(field, moving)
    assert inverse.field.GetSize() == moving.GetSize() and inverse.field.GetDirection() == moving.GetDirection()
    assert inverse.residual_max_mm < 0.02 and inverse.iterations < 30
    forward = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    backward = sitk.DisplacementFieldTransform(sitk.Cast(inverse.field, sitk.sitkVectorFloat64))
    # A point well inside both grids: forward then backward lands where it started.
    centre = np.mean(points_of(fixed).reshape(-1, ndim), axis=0)
    for offset in np.random.default_rng(1).uniform(-5, 5, size=(10, ndim)):
        start = tuple(centre + offset)
        back = backward.TransformPoint(forward.TransformPoint(start))
        assert np.linalg.norm(np.subtract(back, start)) < 0.02



BULGE = (2.0, 10.0)  # a radial expansion, 3× at the centre (‖∂u/∂p‖ = 2); det > 0 everywhere


def bulge_radius(r: np.ndarray) -> np.ndarray:
    a, sigma = BULGE
    return r * (1 + a * np.exp(-(r / sigma) ** 2))


def bulge_inverse_radius(s: np.ndarray) -> np.ndarray:
    """The r with bulge_radius(r) = s, by bisection (the map is increasing in r)."""
    lo, hi = np.zeros_like(s), s.copy()
    for _ in range(60):
        mid = (lo + hi) / 2
        too_far = bulge_radius(mid) > s
        hi, lo = np.where(too_far, mid, hi), np.where(too_far, lo, mid)
    return (lo + hi) / 2


def radial(centre: np.ndarray, radius_map):
    def function(points: np.ndarray) -> np.ndarray:
        offset = points - centre
        s = np.linalg.norm(offset, axis=-1, keepdims=True)
        scale = np.divide(radius_map(s), s, out=np.ones_like(s), where=s > 1e-9)
        return offset * (scale - 1)
    return function


@pytest.fixture(scope="module")
def bulge():
    fixed = grid((100, 90), (0.5, 0.55), 0.25)
    moving = grid((92, 100), (0.52, 0.5), -0.1, origin=[-6.0, 2.0])
    centre = np.mean(points_of(fixed).reshape(-1, 2), axis=0)
    return fixed, moving, field_from(fixed, radial(centre, bulge_radius)), radial(centre, bulge_inverse_radius)


def test_a_threefold_expansion_is_inverted(bulge):
    """Plain fixed-point iteration ``v ← −u(q + v)`` needs ‖∂u/∂p‖ < 1 and diverges at the centre of a 3×
    expansion (the case of a basal cardiac slice); the safeguarded step converges. The solution matches
    the analytic inverse to within the error of sampling the forward field every 0.5 mm."""
    fixed, moving, field, truth = bulge
    assert jacobian_summary(sitk.GetArrayFromImage(jacobian_image(field)))["folding_pct"] == 0
    inverse = invert_field(field, moving)
    q, v = points_of(moving), sitk.GetArrayFromImage(inverse.field)
    assert np.abs(v + sample_field(field, q + v, "edge")).max() < 0.01  # the equation v(q) = −u(q + v(q))
    np.testing.assert_allclose(v[5:-5, 5:-5], truth(q)[5:-5, 5:-5], atol=0.15)
    assert inverse.start == "displacement" and inverse.residual_p99_mm < inverse.residual_max_mm < 0.6


def test_the_inverse_starts_from_the_guess_it_is_given(bulge):
    """The registration passes exp(−v) as the start: a start that already solves the equation comes back
    unchanged, and the report says where the inverse started."""
    fixed, moving, field, _ = bulge
    solved = invert_field(field, moving)
    again = invert_field(field, moving, solved.field)
    assert again.start == "velocity" and again.iterations < solved.iterations
    np.testing.assert_allclose(sitk.GetArrayFromImage(again.field), sitk.GetArrayFromImage(solved.field), atol=0.05)

"""Registering a pair end to end: different grids, the model's window, labels, slice-wise 3D, files to files."""

import json

import numpy as np
import pytest
import torch

from models.artifact import LoadedModel
from models.data.synthetic import PhantomConfig, make_phantom_pair
from models.intensity import IntensityConfig
from models.io.image import LABEL, Geometry, Image
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.register import register_images


def model_with_constant_field(ndim: int, shift_vox: float, train_shape=None, train_spacing=None) -> LoadedModel:
    """An estimator whose field is exactly ``shift_vox`` along the last axis (no integration), or 0."""
    config = EstimatorConfig(ndim=ndim, enc=(4, 4), dec=(4, 4, 4), int_steps=0)
    estimator = build_estimator(config)
    with torch.no_grad():
        estimator.flow.weight.zero_()
        estimator.flow.bias.zero_()
        estimator.flow.bias[-1] = shift_vox
    return LoadedModel(estimator.eval(), config, IntensityConfig(), train_shape, {}, train_spacing)


def phantom_images(size=48, spacing=(1.5, 1.5)):
    pair = make_phantom_pair(PhantomConfig(size=size, seed=4), 0)
    geometry = Geometry.identity(2, spacing)
    return (Image(pair.fixed, geometry), Image(pair.moving, geometry),
            Image(pair.fixed_mask, geometry, LABEL), Image(pair.moving_mask, geometry, LABEL))


def test_zero_field_across_grids_resamples_through_physical_space():
    fixed, moving, fixed_mask, moving_mask = phantom_images()
    # The moving image lives on a rotated, finer grid covering the same physical region.
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    moved_geometry = Geometry((0.75, 0.75), (70.5, 0.0), tuple(rot.ravel()))  # x = 70.5 - 0.75 j, y = 0.75 i
    from models.resample import resample_to

    moving_other = resample_to(moving, Image(np.zeros((96, 96), np.float32), moved_geometry))
    mask_other = resample_to(moving_mask, Image(np.zeros((96, 96), np.float32), moved_geometry))
    result = register_images(model_with_constant_field(2, 0.0), fixed, moving_other, mask_other, fixed_mask)
    assert np.all(result.disp_vox == 0)
    assert result.warped.same_grid(fixed) and result.warped_mask.same_grid(fixed)
    # Back on the fixed grid, the moving image and mask are where they were before the detour.
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(result.warped.array[inner] - moving.array[inner]).mean() < 0.02
    assert np.mean(result.warped_mask.array == moving_mask.array) > 0.98
    assert result.warped_mask.array.dtype == np.uint8
    assert result.report["dice"] == pytest.approx(result.report["dice_before"], abs=3.0)


def test_constant_field_moves_the_moving_image_by_that_many_voxels():
    fixed, moving, _, moving_mask = phantom_images()
    result = register_images(model_with_constant_field(2, 2.0), fixed, moving, moving_mask)
    assert np.allclose(result.disp_vox[1], 2.0) and np.allclose(result.disp_vox[0], 0.0)
    # warped(x) = moving(x + 2 along the last axis)
    np.testing.assert_allclose(result.warped.array[:, :-2], moving.array[:, 2:], atol=1e-5)
    assert np.array_equal(result.warped_mask.array[:, :-2], moving_mask.array[:, 2:])
    assert result.report["folding_pct"] == 0.0


def test_the_window_is_centred_on_the_mask_and_the_field_decays_outside_it():
    fixed, moving, _, moving_mask = phantom_images(size=64)
    # Trained on 16x16 windows at 3 mm: at 1.5 mm the window covers 32x32 native voxels.
    model = model_with_constant_field(2, 1.0, train_shape=(16, 16), train_spacing=(3.0, 3.0))
    result = register_images(model, fixed, moving, moving_mask)
    moved = np.isclose(result.disp_vox[1], 31 / 15)  # the window itself; outside, a decay towards 0
    assert 31 * 31 <= moved.sum() <= 33 * 33
    assert np.all(result.disp_vox[1][~moved] < 31 / 15) and result.report["jacobian"]["folding_pct"] == 0
    rows, cols = np.nonzero(moved)
    centroid = np.argwhere(moving_mask.array != 0).mean(axis=0)
    assert abs(rows.mean() - centroid[0]) < 1.5 and abs(cols.mean() - centroid[1]) < 1.5
    assert np.allclose(result.disp_vox[1][moved], 31 / 15)  # one model voxel in native voxels


def test_2d_model_on_a_3d_stack_registers_slice_by_slice():
    rng = np.random.default_rng(0)
    volume = Image(rng.random((4, 32, 32)).astype(np.float32), Geometry.identity(3, (1.0, 1.0, 6.0)))
    result = register_images(model_with_constant_field(2, 1.0), volume, volume)
    assert result.disp_vox.shape == (3, 4, 32, 32)
    assert np.all(result.disp_vox[0] == 0) and np.allclose(result.disp_vox[2], 1.0)


def test_dimension_errors():
    volume = Image(np.ones((4, 32, 32), np.float32), Geometry.identity(3))
    plane = Image(np.ones((32, 32), np.float32), Geometry.identity(2))
    with pytest.raises(ValueError, match="fixed is 3-D but moving is 2-D"):
        register_images(model_with_constant_field(2, 0.0), volume, plane)
    with pytest.raises(ValueError, match="a 3-D model cannot register 2-D images"):
        register_images(model_with_constant_field(3, 0.0), plane, plane)


# -- register_files: the pipeline the CLI and the worker share ------------------------------------

def write_inputs(folder, images) -> dict:
    """The images as NIfTI files by role."""
    import SimpleITK as sitk

    paths = {}
    for role, image in images.items():
        paths[role] = folder / f"{role}.nii.gz"
        sitk.WriteImage(image.to_sitk(), str(paths[role]))
    return paths


def test_register_files_writes_the_known_field_and_reports_each_phase(tmp_path):
    import SimpleITK as sitk

    from models.outputs import (
        DISPLACEMENT,
        DISPLACEMENT_UNITS,
        INVERSE_DISPLACEMENT,
        JACOBIAN,
        REPORT,
        WARPED,
        WARPED_MASK,
    )
    from models.register import PHASES, register_files

    fixed, moving, fixed_mask, moving_mask = phantom_images()  # 1.5 mm voxels
    inputs = write_inputs(tmp_path, {"fixed": fixed, "moving": moving, "moving_mask": moving_mask,
                                     "fixed_mask": fixed_mask})
    events = []

    def load() -> LoadedModel:
        events.append("load")
        return model_with_constant_field(2, 2.0)

    done = register_files(load, inputs, tmp_path / "out", model_fields={"model": "shift-2"}, on_phase=events.append)
    assert events == [PHASES[0], "load", *PHASES[1:]]  # the model loads inside its phase, then one phase each
    out = tmp_path / "out"
    names = {"displacement": DISPLACEMENT, "inverse_displacement": INVERSE_DISPLACEMENT, "jacobian": JACOBIAN,
             "warped": WARPED, "warped_mask": WARPED_MASK, "report": REPORT}
    assert sorted(p.name for p in out.iterdir()) == sorted(names.values())
    assert done.paths == {role: out / name for role, name in names.items()}
    # 2 voxels along x at 1.5 mm: 3 mm everywhere, in ITK's (x, y) component order.
    field_mm = sitk.GetArrayFromImage(sitk.ReadImage(str(out / DISPLACEMENT)))
    np.testing.assert_allclose(field_mm[..., 0], 3.0, atol=1e-5)
    np.testing.assert_allclose(field_mm[..., 1], 0.0, atol=1e-5)
    # A translation: its inverse is the opposite one (on the moving grid) and its Jacobian is 1.
    inverse_mm = sitk.GetArrayFromImage(sitk.ReadImage(str(out / INVERSE_DISPLACEMENT)))
    np.testing.assert_allclose(inverse_mm, np.broadcast_to([-3.0, 0.0], inverse_mm.shape), atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(out / JACOBIAN))), 1.0, atol=1e-5)
    warped_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / WARPED_MASK)))
    assert np.array_equal(warped_mask[:, :-2], moving_mask.array[:, 2:])
    report = json.loads((out / REPORT).read_text(encoding="utf-8"))
    assert report == done.report and report["model"] == "shift-2"
    assert report["displacement_units"] == DISPLACEMENT_UNITS and report["refine"]["steps_done"] == 0
    assert report["jacobian"]["folding_pct"] == 0 and report["jacobian"]["log_jacobian_std"] < 1e-5
    assert report["inverse"]["residual_max_mm"] < 1e-4
    assert report["dice"] != report["dice_before"]  # the fixed mask scored the field


def test_register_files_writes_nothing_when_an_input_is_refused(tmp_path):
    from models.io.errors import MaskGeometryError
    from models.register import register_files

    fixed, moving, _, moving_mask = phantom_images()
    off_grid = Image(moving_mask.array, Geometry.identity(2, (3.0, 3.0)), LABEL)
    inputs = write_inputs(tmp_path, {"fixed": fixed, "moving": moving, "moving_mask": off_grid})
    events = []
    with pytest.raises(MaskGeometryError):
        register_files(lambda: model_with_constant_field(2, 0.0), inputs, tmp_path / "out", model_fields={},
                       on_phase=events.append)
    assert events == ["loading_model", "reading_inputs"] and not (tmp_path / "out").exists()

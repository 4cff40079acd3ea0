"""The ``adacs`` CLI in-process: train (and resume), evaluate, register 2D/3D NIfTI, errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from models.data.synthetic import PhantomConfig, make_phantom_pair
from service.cli import main

TINY = ["--enc", "8,8", "--dec", "8,8,8"]


def train_args(out, epochs=1, data="synthetic:size=32,n=8,seed=0", extra=()):
    return ["train", "--data", data, "--arch", "voxelmorph", "--method", "adacs", "--epochs", str(epochs),
            "--steps-per-epoch", "2", "--warmup-epochs", "1", "--batch-size", "2", "--seed", "0",
            "--out", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_args(out)) == 0
    return out


def test_train_writes_model_checkpoints_history(run_dir, capsys):
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    assert [e["phase"] for e in history["epochs"]] == ["warmup-displacement", "warmup-scoring", "alternating"]
    assert all("val_dice" in e for e in history["epochs"])  # a validation set is derived for phantoms


def test_train_resumes_when_rerun_with_the_same_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, epochs=1)) == 0
    first = json.loads((out / "history.json").read_text(encoding="utf-8"))["epochs"]
    assert main(train_args(out, epochs=2)) == 0
    second = json.loads((out / "history.json").read_text(encoding="utf-8"))["epochs"]
    assert len(second) == 4 and second[:3] == first
    err = capsys.readouterr().err
    assert "upd" in err and "ep 4/4 alternating" in err  # the progress bar, resumed at the 4th epoch


def test_evaluate_report(run_dir, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--model", str(run_dir / "model"), "--data", "synthetic:size=32,n=3,seed=7",
                 "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for key in ("n_pairs", "dsc_mean", "dsc_std", "hd_mean", "asd_mean", "folding_pct_mean"):
        assert key in report["summary"]
    assert report["summary"]["n_pairs"] == 3 and len(report["pairs"]) == 3
    assert "evaluating" in capsys.readouterr().err  # the progress bar
    assert {"pair_id", "dsc", "hd", "asd", "folding_pct", "epe", "epe_myo", "dsc_paper"} <= set(report["pairs"][0])


def write(array, path, spacing, direction=None, origin=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def test_register_2d_outputs_keep_fixed_geometry_and_labels(run_dir, tmp_path, capsys):
    pair = make_phantom_pair(PhantomConfig(size=32, seed=3), 0)
    geometry = dict(spacing=(1.2, 0.8), direction=(0.0, 1.0, -1.0, 0.0), origin=(5.0, -3.0))
    paths = {name: write(getattr(pair, name), tmp_path / f"{name}.nii.gz", **geometry)
             for name in ("fixed", "moving", "moving_mask", "fixed_mask")}
    out = tmp_path / "out"
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(paths["fixed"]),
                 "--moving", str(paths["moving"]), "--moving-mask", str(paths["moving_mask"]),
                 "--fixed-mask", str(paths["fixed_mask"]), "--out", str(out)]) == 0
    fixed = sitk.ReadImage(str(paths["fixed"]))
    warped, mask = sitk.ReadImage(str(out / "warped.nii.gz")), sitk.ReadImage(str(out / "warped_mask.nii.gz"))
    field = sitk.ReadImage(str(out / "displacement.nii.gz"))
    for image in (warped, mask, field):
        assert image.GetSize() == fixed.GetSize()
        assert np.allclose(image.GetSpacing(), fixed.GetSpacing()) and np.allclose(image.GetDirection(),
                                                                                  fixed.GetDirection())
    assert field.GetNumberOfComponentsPerPixel() == 2
    labels = sitk.GetArrayFromImage(mask)
    assert labels.dtype == pair.moving_mask.dtype and set(np.unique(labels)) <= {0, 1, 2}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert {"predict_s", "total_s", "folding_pct", "dice", "model_load_s"} <= set(report)
    assert "registering" in capsys.readouterr().err  # the progress bar
    assert set(report["dice"]) == set(report["dice_before"]) == {"1", "2"}
    # ITK applies our field to the moving image and gets our warped image (the file's convention).
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    itk_warped = sitk.Resample(sitk.ReadImage(str(paths["moving"])), fixed, transform, sitk.sitkLinear, 0.0)
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(sitk.GetArrayFromImage(itk_warped)[inner],
                               sitk.GetArrayFromImage(warped)[inner], atol=1e-4)


def test_register_3d_stack_with_a_2d_model_slice_by_slice(run_dir, tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.random((3, 32, 32)).astype(np.float32)
    fixed = write(volume, tmp_path / "f.nii.gz", (1.0, 1.0, 5.0))
    moving = write(np.roll(volume, 1, axis=2), tmp_path / "m.nii.gz", (1.0, 1.0, 5.0))
    out = tmp_path / "out"
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(fixed), "--moving", str(moving),
                 "--out", str(out)]) == 0
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nii.gz")))
    assert field.shape == (3, 32, 32, 3)
    assert np.all(field[..., 2] == 0)  # no displacement across slices (z in ITK order is the last component)
    assert not (out / "warped_mask.nii.gz").exists()


def test_errors_exit_2_with_a_message(run_dir, tmp_path, capsys):
    assert main(train_args(tmp_path / "x", extra=["--method", "magic"])) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(tmp_path / "nope.nii.gz"),
                 "--moving", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image at all")
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(tmp_path / "bad.nii.gz"),
                 "--moving", str(tmp_path / "bad.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.nii.gz: is a text file, not" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path), "--data", "synthetic", "--out", str(tmp_path / "r.json")]) == 2
    assert "not a model artifact" in capsys.readouterr().err


def test_register_accepts_a_dicom_series_zip(run_dir, tmp_path, dicom_zip):
    volume = (np.random.default_rng(1).random((3, 32, 32)) * 1000).astype(np.int16)
    dicom_zip(volume, (1.0, 1.0, 4.0), tmp_path / "moving.zip")
    fixed = write(volume.astype(np.float32), tmp_path / "fixed.nii.gz", (1.0, 1.0, 4.0))
    out = tmp_path / "out"
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(fixed),
                 "--moving", str(tmp_path / "moving.zip"), "--out", str(out)]) == 0
    warped = sitk.ReadImage(str(out / "warped.nii.gz"))
    assert warped.GetSize() == (32, 32, 3)


def test_register_refuses_a_mask_on_another_grid(run_dir, tmp_path, capsys):
    image = write(np.random.default_rng(0).random((32, 32)).astype(np.float32), tmp_path / "i.nii.gz", (1.0, 1.0))
    mask = write(np.ones((30, 32), np.uint8), tmp_path / "m.nii.gz", (1.0, 1.0))
    assert main(["register", "--model", str(run_dir / "model"), "--fixed", str(image), "--moving", str(image),
                 "--moving-mask", str(mask), "--out", str(tmp_path / "o")]) == 2
    assert "m.nii.gz: the mask grid" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_register_names_the_series_of_a_multi_series_zip_and_takes_a_choice(run_dir, tmp_path, capsys, dicom_zip):
    volume = (np.random.default_rng(2).random((3, 32, 32)) * 1000).astype(np.int16)
    uids = ("1.2.826.0.1.3680043.2.1125.7.1", "1.2.826.0.1.3680043.2.1125.7.2")
    dicom_zip(volume, (1.0, 1.0, 4.0), tmp_path / "two.zip", uids)
    fixed = write(volume.astype(np.float32), tmp_path / "fixed.nii.gz", (1.0, 1.0, 4.0))
    args = ["register", "--model", str(run_dir / "model"), "--fixed", str(fixed), "--moving",
            str(tmp_path / "two.zip"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert all(uid in err for uid in uids) and "series" in err
    assert main([*args, "--moving-series", uids[1]]) == 0


@pytest.mark.parametrize("formats", [(".mha", ".nrrd", ".nii", ".mha"), (".nrrd", ".nii.gz", ".mha", ".nrrd")])
def test_register_reads_every_format_for_images_and_masks(run_dir, tmp_path, formats):
    pair = make_phantom_pair(PhantomConfig(size=32, seed=5), 0)
    names = ("fixed", "moving", "moving_mask", "fixed_mask")
    paths = {n: write(getattr(pair, n), tmp_path / f"{n}{ext}", (1.5, 1.5)) for n, ext in zip(names, formats)}
    out = tmp_path / "out"
    assert main(["register", "--model", str(run_dir / "model"), *sum(([f"--{n.replace('_', '-')}", str(p)]
                                                                      for n, p in paths.items()), []),
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["dice"]) == {"1", "2"}
    assert sitk.ReadImage(str(out / "warped_mask.nii.gz")).GetPixelID() == sitk.sitkUInt8


def test_the_readme_demo_registers_a_pair_clearly_better_than_no_registration(tmp_path):
    """The README's run command, end to end: an accuracy floor on the myocardium (label 2)."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "registration" / "report.json").read_text(encoding="utf-8"))
    assert report["dice"]["2"] > report["dice_before"]["2"] + 20, report
    assert report["folding_pct"] < 1.0

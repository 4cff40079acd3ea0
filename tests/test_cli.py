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


def test_train_parses_the_label_flags_and_defaults_from_one_place():
    from models.defaults import TRAIN_DEFAULTS
    from service.cli import build_parser

    args = build_parser().parse_args(train_args("out", extra=["--supervision", "labels", "--label-weight", "0.5",
                                                              "--labels", "2,3"]))
    assert (args.supervision, args.label_weight, args.labels) == ("labels", 0.5, (2, 3))
    plain = build_parser().parse_args(["train", "--data", "synthetic", "--out", "x"])
    assert (plain.supervision, plain.label_weight, plain.labels) == ("none", TRAIN_DEFAULTS.label_weight, None)
    assert (plain.epochs, plain.warmup_epochs, plain.steps_per_epoch, plain.lr, plain.scoring_lr) == \
        (TRAIN_DEFAULTS.epochs, TRAIN_DEFAULTS.warmup_epochs, TRAIN_DEFAULTS.steps_per_epoch, TRAIN_DEFAULTS.lr,
         TRAIN_DEFAULTS.scoring_lr)


@pytest.mark.parametrize(("flags", "words"), [
    (["--label-weight", "-1"], "--label-weight must be a finite number > 0"),
    (["--label-weight", "0"], "--label-weight must be a finite number > 0"),
    (["--label-weight", "nan"], "--label-weight must be a finite number > 0"),
    (["--labels", "0,2"], "integers >= 1 (0 is the background)"),
    (["--labels", "2,2"], "distinct"),
    (["--labels", "2,myo"], "comma-separated integer labels"),
    (["--supervision", "masks"], "invalid choice: 'masks'"),
])
def test_train_rejects_bad_label_flags_with_a_usage_error(tmp_path, capsys, flags, words):
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(tmp_path / "x", extra=["--supervision", "labels", *flags]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage: adacs train" in err and words in err, err
    assert not (tmp_path / "x").exists()


def test_train_refuses_labels_without_label_supervision(tmp_path, capsys):
    assert main(train_args(tmp_path / "x", extra=["--labels", "2"])) == 2
    assert "only with supervision 'labels'" in capsys.readouterr().err


def test_train_with_label_supervision_records_it_in_the_card(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, epochs=0, extra=["--method", "none", "--supervision", "labels", "--labels", "2",
                                                 "--label-weight", "0.5", "--quiet"])) == 0
    card = json.loads((out / "model" / "card.json").read_text(encoding="utf-8"))
    assert card["supervision"] == {**card["supervision"], "kind": "labels", "labels": [2], "label_weight": 0.5}
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))["epochs"]
    assert all("label_dice" in e for e in history)


# -- test-time refinement: --refine-steps / --refine-time-limit and the model card's default ----------------

def phantom_files(tmp_path):
    pair = make_phantom_pair(PhantomConfig(size=32, seed=3), 0)
    return {name: write(getattr(pair, name), tmp_path / f"{name}.nii.gz", (1.5, 1.5))
            for name in ("fixed", "moving", "moving_mask", "fixed_mask")}


def register_args(model, paths, out, *flags):
    return ["register", "--model", str(model), "--fixed", str(paths["fixed"]), "--moving", str(paths["moving"]),
            "--moving-mask", str(paths["moving_mask"]), "--fixed-mask", str(paths["fixed_mask"]), "--out", str(out),
            *flags]


def with_card_inference(model, tmp_path, inference):
    """A copy of ``model`` whose card asks for ``inference`` defaults."""
    import shutil

    copy = tmp_path / "carded"
    shutil.copytree(model, copy)
    card = json.loads((copy / "card.json").read_text(encoding="utf-8"))
    (copy / "card.json").write_text(json.dumps(card | {"inference": inference}), encoding="utf-8")
    return copy


def test_register_refines_with_the_flags_and_records_it(run_dir, tmp_path, capsys):
    paths = phantom_files(tmp_path)
    assert main(register_args(run_dir / "model", paths, tmp_path / "plain")) == 0
    assert main(register_args(run_dir / "model", paths, tmp_path / "refined", "--refine-steps", "12",
                              "--refine-time-limit", "60")) == 0
    plain = json.loads((tmp_path / "plain" / "report.json").read_text(encoding="utf-8"))["refine"]
    refined = json.loads((tmp_path / "refined" / "report.json").read_text(encoding="utf-8"))["refine"]
    assert plain["steps_requested"] == plain["steps_done"] == 0  # no flag, no card key: the network's answer
    assert refined["steps_requested"] == refined["steps_done"] == 12 and refined["time_limit_s"] == 60
    assert refined["stopped_by"] == "steps" and refined["image_term_after"] <= refined["image_term_before"]


def test_register_and_evaluate_take_the_card_default_and_the_flag_overrides_it(run_dir, tmp_path, capsys):
    model = with_card_inference(run_dir / "model", tmp_path, {"refine_steps": 7})
    paths = phantom_files(tmp_path)
    assert main(register_args(model, paths, tmp_path / "card")) == 0
    assert main(register_args(model, paths, tmp_path / "off", "--refine-steps", "0")) == 0
    read = lambda name: json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))  # noqa: E731
    assert read("card")["refine"]["steps_done"] == 7 and read("off")["refine"]["steps_done"] == 0
    data = "synthetic:size=32,n=2,seed=7"
    assert main(["evaluate", "--model", str(model), "--data", data, "--out", str(tmp_path / "card.json")]) == 0
    assert main(["evaluate", "--model", str(model), "--data", data, "--out", str(tmp_path / "three.json"),
                 "--refine-steps", "3"]) == 0
    card = json.loads((tmp_path / "card.json").read_text(encoding="utf-8"))
    three = json.loads((tmp_path / "three.json").read_text(encoding="utf-8"))
    assert card["summary"]["refine"]["steps_done_mean"] == 7 and three["summary"]["refine"]["steps_done_mean"] == 3
    assert [p["refine"]["steps_done"] for p in three["pairs"]] == [3, 3]


@pytest.mark.parametrize(("command", "flags", "words"), [
    ("register", ["--refine-steps", "-1"], "argument --refine-steps: expected an integer >= 0, got '-1'"),
    ("register", ["--refine-steps", "2.5"], "argument --refine-steps: expected an integer >= 0"),
    ("register", ["--refine-time-limit", "0"], "argument --refine-time-limit: expected a finite number of seconds"),
    ("evaluate", ["--refine-time-limit", "inf"], "argument --refine-time-limit: expected a finite number"),
    ("evaluate", ["--refine-steps", "many"], "argument --refine-steps: expected an integer >= 0, got 'many'"),
])
def test_bad_refine_flags_are_usage_errors(run_dir, tmp_path, capsys, command, flags, words):
    common = {"register": ["--fixed", "f.nii.gz", "--moving", "m.nii.gz"], "evaluate": ["--data", "synthetic"]}
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", str(run_dir / "model"), *common[command], "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"usage: adacs {command}" in err and words in err, err


def test_a_bad_card_default_is_an_error_naming_the_key(run_dir, tmp_path, capsys):
    model = with_card_inference(run_dir / "model", tmp_path, {"refine_steps": -4})
    assert main(register_args(model, phantom_files(tmp_path), tmp_path / "o")) == 2
    assert "model card: refine steps must be an integer >= 0, got -4" in capsys.readouterr().err


def test_register_pairs_runs_a_study_in_one_process_and_a_bad_pair_fails_alone(run_dir, tmp_path, capsys):
    rows = ["fixed,moving,fixed_mask,moving_mask,id"]
    for i in range(2):
        pair = make_phantom_pair(PhantomConfig(size=32, seed=4), i)
        for name in ("fixed", "moving", "fixed_mask", "moving_mask"):
            write(getattr(pair, name), tmp_path / f"p{i}_{name}.nii.gz", (1.5, 1.5))
        rows.append(f"p{i}_fixed.nii.gz,p{i}_moving.nii.gz,p{i}_fixed_mask.nii.gz,p{i}_moving_mask.nii.gz,case{i}")
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    rows.append("bad.nii.gz,p0_moving.nii.gz,,,broken")
    (tmp_path / "study.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["register", "--model", str(run_dir / "model"), "--pairs", str(tmp_path / "study.csv"),
                 "--out", str(out)]) == 1  # one pair failed
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 3 and summary["failed"] == ["broken"]
    lines = (out / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("id,status,seconds,folding_pct,dice_1,dice_2")
    assert lines[1].startswith("case0,succeeded,") and lines[3].startswith("broken,failed,")
    assert "not_an_image" in lines[3]
    # Each pair's files are those a single `adacs register` writes.
    single = tmp_path / "single"
    files = [f"--{role.replace('_', '-')}={tmp_path / f'p1_{role}.nii.gz'}"
             for role in ("fixed", "moving", "moving_mask", "fixed_mask")]
    assert main(["register", "--model", str(run_dir / "model"), *files, "--out", str(single)]) == 0
    assert (out / "case1" / "displacement.nii.gz").read_bytes() == (single / "displacement.nii.gz").read_bytes()


@pytest.mark.parametrize("argv, words", [
    (["--fixed", "f.nii.gz"], "give either --fixed and --moving"),
    (["--fixed", "f.nii.gz", "--moving", "m.nii.gz", "--pairs", "s.csv"], "give either --fixed and --moving"),
])
def test_register_needs_one_pair_or_a_csv(run_dir, tmp_path, capsys, argv, words):
    assert main(["register", "--model", str(run_dir / "model"), "--out", str(tmp_path / "o"), *argv]) == 2
    assert words in capsys.readouterr().err


def test_register_pairs_refuses_ids_that_are_not_folder_names(run_dir, tmp_path, capsys):
    pair = make_phantom_pair(PhantomConfig(size=32, seed=4), 0)
    write(pair.fixed, tmp_path / "f.nii.gz", (1.5, 1.5))
    write(pair.moving, tmp_path / "m.nii.gz", (1.5, 1.5))
    (tmp_path / "s.csv").write_text("fixed,moving,id\nf.nii.gz,m.nii.gz,../escape\n", encoding="utf-8")
    assert main(["register", "--model", str(run_dir / "model"), "--pairs", str(tmp_path / "s.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "ids name output folders" in capsys.readouterr().err and not (tmp_path / "escape").exists()

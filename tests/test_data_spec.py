"""The ``--data SPEC`` parser (models.data.spec): synthetic options and acdc-h5 paths."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.data.acdc_h5 import load_acdc_h5
from models.data.pairs import MYOCARDIUM, PairSample
from models.data.spec import describe_spec, load_pairs, supported_kinds

# ---------------------------------------------------------------------------------------------------
# a tiny ACDC folder: patient001 as slice files (train), patient002 as a volume (val)


def _slice(center: int, value: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:20, :20]
    label = np.zeros((20, 20), np.uint8)
    label[np.hypot(yy - center, xx - center) < 4] = MYOCARDIUM
    return np.full((20, 20), value, np.float32), label


def make_acdc(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    for frame, value in (("frame01", 0.2), ("frame02", 0.7)):
        for k in (1, 2):
            image, label = _slice(10, value)
            with h5py.File(data / f"patient001_{frame}_slice_{k}.h5", "w") as handle:
                handle["image"], handle["label"] = image, label
        image, label = _slice(8, value)
        with h5py.File(data / f"patient002_{frame}.h5", "w") as handle:
            handle["image"], handle["label"] = np.stack([image] * 3), np.stack([label] * 3)
    return root


def ids(pairs: list[PairSample]) -> list[str]:
    return [p.pair_id for p in pairs]


# ---------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_options_are_typed():
    from models.data.synthetic import PhantomConfig

    description = describe_spec("synthetic:n=3, size=32,noise=0.1,motion=2,seed=7")
    assert description["kind"] == "synthetic"
    config = description["config"]
    expected = dataclasses.asdict(PhantomConfig(n=3, size=32, noise=0.1, motion=2.0, seed=7))
    assert config == expected
    assert type(config["n"]) is int and type(config["size"]) is int and type(config["seed"]) is int
    assert type(config["noise"]) is float and type(config["motion"]) is float
    json.dumps(description)  # JSON-able for model cards


def test_synthetic_defaults_and_load():
    from models.data.synthetic import PhantomConfig

    assert describe_spec("synthetic") == {"kind": "synthetic", "config": dataclasses.asdict(PhantomConfig())}
    pairs = load_pairs("synthetic:n=3,size=24")
    assert len(pairs) == 3
    assert all(isinstance(p, PairSample) for p in pairs)


def test_synthetic_unknown_key_names_allowed_keys():
    with pytest.raises(ValueError, match=r"unknown synthetic option 'colour'.*allowed: .*size.*noise"):
        load_pairs("synthetic:n=2,colour=red")


@pytest.mark.parametrize("spec, message", [
    ("synthetic:n=three", r"n='three'.*int"),
    ("synthetic:size=2.5", r"size='2.5'.*int"),
    ("synthetic:noise=lots", r"noise='lots'.*float"),
    ("synthetic:n3", r"malformed synthetic option 'n3'"),
    ("synthetic:n=2,n=3", "given twice"),
])
def test_synthetic_bad_values(spec, message):
    with pytest.raises(ValueError, match=message):
        describe_spec(spec)


# ---------------------------------------------------------------------------------------------------
# acdc-h5


def test_acdc_h5_with_and_without_split(tmp_path):
    root = make_acdc(tmp_path)
    everything = load_pairs(f"acdc-h5:{root}")
    expected = [f"patient001_slice_{k}" for k in (1, 2)] + [f"patient002_slice_{k}" for k in (1, 2, 3)]
    assert ids(everything) == ids(load_acdc_h5(root)) == expected
    assert ids(load_pairs(f"acdc-h5:{root}:train")) == ["patient001_slice_1", "patient001_slice_2"]
    assert [p.subject_id for p in load_pairs(f"acdc-h5:{root}:val")] == ["patient002"] * 3
    assert ids(load_pairs(f"acdc-h5:{root}:all")) == ids(everything)
    assert everything[0].shape == (128, 128)  # default crop
    pair = everything[0]
    assert pair.moving.max() == pytest.approx(0.2) and pair.fixed.max() == pytest.approx(0.7)


def test_acdc_h5_crop_and_label_options(tmp_path):
    root = make_acdc(tmp_path)
    pairs = load_pairs(f"acdc-h5:{root}:val:crop=12")
    assert len(pairs) == 3 and all(p.shape == (12, 12) for p in pairs)
    assert all(p.shape == (20, 20) for p in load_pairs(f"acdc-h5:{root}:crop=none"))
    assert describe_spec(f"acdc-h5:{root}:train:crop=64:label=3") == {
        "kind": "acdc-h5",
        "path": str(root),
        "split": "train",
        "crop": 64,
        "label": 3,
    }
    assert load_pairs(f"acdc-h5:{root}:label=3") == []  # no LV label in this fixture
    with pytest.raises(ValueError, match="crop=big"):
        describe_spec(f"acdc-h5:{root}:crop=big")
    with pytest.raises(ValueError, match="crop must be positive"):
        describe_spec(f"acdc-h5:{root}:crop=0")


def test_acdc_h5_path_containing_colons(tmp_path):
    root = make_acdc(tmp_path / "odd:name")
    assert describe_spec(f"acdc-h5:{root}") == {
        "kind": "acdc-h5",
        "path": str(root),
        "split": "all",
        "crop": 128,
        "label": MYOCARDIUM,
    }
    assert len(load_pairs(f"acdc-h5:{root}")) == 5
    assert describe_spec(f"acdc-h5:{root}:val")["path"] == str(root)
    assert ids(load_pairs(f"acdc-h5:{root}:train:crop=16")) == ["patient001_slice_1", "patient001_slice_2"]
    # a trailing piece that is neither a split nor an option stays in the path
    assert describe_spec("acdc-h5:C:/data:test")["path"] == "C:/data:test"


def test_acdc_h5_path_ending_in_a_split_name(tmp_path):
    root = make_acdc(tmp_path / "odd:val")
    # the last piece is a split, so it is read as one; spell the split out to keep it in the path
    assert describe_spec(f"acdc-h5:{root}")["path"] == str(tmp_path / "odd")
    assert describe_spec(f"acdc-h5:{root}:all") == {
        "kind": "acdc-h5",
        "path": str(root),
        "split": "all",
        "crop": 128,
        "label": MYOCARDIUM,
    }
    assert len(load_pairs(f"acdc-h5:{root}:all")) == 5


def test_acdc_h5_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a path"):
        load_pairs("acdc-h5:")
    with pytest.raises(ValueError, match="needs a path"):
        load_pairs("acdc-h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pairs(f"acdc-h5:{tmp_path / 'missing'}:val")


# ---------------------------------------------------------------------------------------------------
# dispatch


def test_unknown_kind_lists_supported_kinds():
    assert supported_kinds()[:2] == ("synthetic", "acdc-h5")
    with pytest.raises(ValueError, match=r"unknown data spec kind 'mnist'.*synthetic, acdc-h5"):
        load_pairs("mnist:/data")
    with pytest.raises(ValueError, match=r"unknown data spec kind 'Synthetic'"):
        describe_spec("Synthetic")
    with pytest.raises(ValueError, match="empty data spec"):
        load_pairs("  ")

"""The inference artifact holds the displacement estimator alone and loads without the scoring network."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.artifact import load_artifact
from models.data.pairs import MYOCARDIUM
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.metrics import dice
from models.networks import scoring
from models.networks.estimator import EstimatorConfig
from models.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(method="adacs", epochs=1, warmup_epochs=1, steps_per_epoch=1, batch_size=2,
                      micro_batch_size=2, estimator=EstimatorConfig(enc=(8, 8), dec=(8, 8, 8)))
    result = train(cfg, make_phantom_dataset(PhantomConfig(size=32, n=4)), out,
                   val_pairs=make_phantom_dataset(PhantomConfig(size=32, n=2, seed=5)),
                   data_description={"train": {"kind": "synthetic"}})
    return out, result


def test_artifact_files_and_card(trained):
    out, result = trained
    model_dir = out / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["card.json", "config.json", "model.safetensors"]
    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    assert card["architecture"] == "voxelmorph" and card["method"] == "adacs"
    assert card["hyperparameters"]["alpha"] == 0.02 and card["data"]["train"] == {"kind": "synthetic"}
    assert "val_dice" in card["validation"] and "Research use only" in card["intended_use"]
    # The unregistered baseline beside it, from the validation pairs' own masks.
    val = make_phantom_dataset(PhantomConfig(size=32, n=2, seed=5))
    expected = np.mean([dice(p.moving_mask == MYOCARDIUM, p.fixed_mask == MYOCARDIUM) for p in val])
    assert card["validation"]["val_dice_identity"] == pytest.approx(expected)
    assert 0 < card["validation"]["val_dice_identity"] < 100
    assert card["training"]["displacement_updates"] == 2


def test_artifact_holds_no_scoring_tensor(trained):
    out, result = trained
    tensors = load_file(out / "model" / "model.safetensors")
    assert set(tensors) == set(result.estimator.state_dict())
    # The scoring network's parameters are not in the file under any name: compare tensor shapes too.
    scorer_shapes = sorted(tuple(v.shape) for v in scoring.ScoringNet(2, (8, 8), (8, 8, 8)).state_dict().values())
    head_shape = (1, 8, 3, 3)  # the scoring head (one output channel) has no twin in the estimator
    assert head_shape in scorer_shapes and head_shape not in [tuple(v.shape) for v in tensors.values()]


def test_loading_never_builds_the_scoring_network(trained, monkeypatch):
    out, result = trained

    def forbidden(*args, **kwargs):
        raise AssertionError("the scoring network was built on the inference path")

    monkeypatch.setattr(scoring.ScoringNet, "__init__", forbidden)
    model = load_artifact(out / "model")
    moving, fixed = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.estimator(moving, fixed).disp, result.estimator.eval()(moving, fixed).disp)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model artifact: config.json is missing"):
        load_artifact(tmp_path)

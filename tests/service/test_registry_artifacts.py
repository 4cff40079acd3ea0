"""service/registry/artifact_check.py: only a displacement estimator's artifact enters the registry."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from service.registry import InvalidArtifact, check_artifact_dir, list_models, register_version
from service.registry.safetensors_header import read_safetensors_header


def test_a_good_artifact_passes(make_artifact):
    info = check_artifact_dir(make_artifact())
    assert info.config["estimator"]["arch"] == "voxelmorph" and len(info.tensor_names) == 6


def test_scoring_tensors_are_refused_and_nothing_is_stored(session, store, make_artifact, tensors):
    tensors = tensors | {"scorer.head.weight": np.zeros((1, 16, 3, 3), np.float32)}
    del tensors["flow.bias"]  # same count as the estimator: the key alone must be caught
    with pytest.raises(InvalidArtifact, match="holds scoring-network tensors \\(scorer.head.weight\\); only the "
                                              "displacement estimator may be registered"):
        register_version(session, store, "cardiac", make_artifact(tensors=tensors))
    assert list_models(session) == [] and list((store.root / "objects").iterdir()) == []


@pytest.mark.parametrize("key", ["scoring.backbone.down.0.conv.weight", "module.scorer.head.bias", "score_net.w"])
def test_every_spelling_of_the_scoring_network_is_refused(make_artifact, tensors, key):
    tensors[key] = tensors.pop("flow.bias")
    with pytest.raises(InvalidArtifact, match="scoring-network tensors"):
        check_artifact_dir(make_artifact(tensors=tensors))


def test_tensor_count_must_match_the_config(make_artifact, tensors):
    tensors = tensors | {"backbone.extra.0.conv.weight": np.zeros((4, 4, 3, 3), np.float32)}
    with pytest.raises(InvalidArtifact, match="holds 7 tensors but the estimator in config.json has 6"):
        check_artifact_dir(make_artifact(tensors=tensors))
    declared = {"format": 1, "n_tensors": 7, "estimator": {"arch": "transmorph"}}
    assert len(check_artifact_dir(make_artifact(tensors=tensors, config=declared, metadata={})).tensor_names) == 7
    with pytest.raises(InvalidArtifact, match="unknown architecture 'morphnet'"):
        check_artifact_dir(make_artifact(config={"format": 1, "estimator": {"arch": "morphnet"}}, metadata={}))


@pytest.mark.parametrize("extra", ["scorer.safetensors", "checkpoints", ".DS_Store"])
def test_anything_besides_the_three_files_is_refused(make_artifact, extra):
    directory = make_artifact()
    (directory / extra).mkdir() if extra == "checkpoints" else (directory / extra).write_bytes(b"x")
    with pytest.raises(InvalidArtifact, match=f"holds \\['{extra}'\\] besides the artifact.*scoring network"):
        check_artifact_dir(directory)


def test_missing_files_and_bad_json(make_artifact, tmp_path):
    directory = make_artifact()
    (directory / "card.json").unlink()
    with pytest.raises(InvalidArtifact, match=r"lacks \['card.json'\]"):
        check_artifact_dir(directory)
    (directory / "card.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InvalidArtifact, match="card.json must hold a JSON object, not list"):
        check_artifact_dir(directory)
    (directory / "card.json").write_text("{", encoding="utf-8")
    with pytest.raises(InvalidArtifact, match="card.json is not valid JSON"):
        check_artifact_dir(directory)
    with pytest.raises(InvalidArtifact, match="artifact format 2, expected 1"):
        check_artifact_dir(make_artifact(config={"format": 2, "estimator": {"arch": "voxelmorph"}}))
    with pytest.raises(InvalidArtifact, match="is not a directory"):
        check_artifact_dir(tmp_path / "nowhere")


def test_damaged_weights_are_refused(make_artifact):
    directory = make_artifact()
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-4])
    with pytest.raises(InvalidArtifact, match="truncated or padded"):
        check_artifact_dir(directory)
    weights.write_bytes((10**9).to_bytes(8, "little") + data[8:])
    with pytest.raises(InvalidArtifact, match="header length 1000000000 does not fit"):
        check_artifact_dir(directory)
    weights.write_bytes(b"abc")
    with pytest.raises(InvalidArtifact, match="too short"):
        check_artifact_dir(directory)


def test_weights_saved_for_another_architecture(make_artifact):
    with pytest.raises(InvalidArtifact, match="saved for architecture 'transmorph' but config.json describes "
                                              "'voxelmorph'"):
        check_artifact_dir(make_artifact(metadata={"arch": "transmorph"}))


def test_header_reader_reports_names_dtypes_and_shapes(tmp_path):
    save_file({"a": np.zeros((2, 3), np.float16), "b": np.zeros(4, np.int64)}, str(tmp_path / "w.safetensors"),
              metadata={"k": "v"})
    header = read_safetensors_header(tmp_path / "w.safetensors")
    assert {n: (t.dtype, t.shape) for n, t in header.tensors.items()} == {"a": ("F16", (2, 3)), "b": ("I64", (4,))}
    assert header.metadata == {"k": "v"}


def test_links_are_refused(make_artifact, tmp_path):
    directory = make_artifact()
    shutil.move(directory / "card.json", tmp_path / "card.json")
    (directory / "card.json").symlink_to(tmp_path / "card.json")
    with pytest.raises(InvalidArtifact, match="must be a regular file"):
        check_artifact_dir(directory)
    assert json.loads((tmp_path / "card.json").read_text(encoding="utf-8"))["method"] == "adacs"

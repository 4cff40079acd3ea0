"""Every displacement estimator (VoxelMorph, TransMorph, DiffuseMorph) in 2D and 3D, its artifact and the CLI."""

import json
import math

import pytest
import SimpleITK as sitk
import torch

from models.artifact import load_artifact, save_artifact
from models.intensity import IntensityConfig
from models.networks import scoring
from models.networks.diffusemorph import alpha_bar_linear, noise_target, timestep_embedding
from models.networks.estimator import (
    ARCHITECTURES,
    EstimatorConfig,
    build_estimator,
    resolve_options,
)
from service.cli import main

ARCHS = ("voxelmorph", "transmorph", "diffusemorph")
SHAPES = {2: (32, 32), 3: (16, 16, 16)}
# Small sizes, so that the file runs in seconds; in 3D, TransMorph's 1/8 grid (2³) is smaller than a window.
TINY_OPTIONS = {"voxelmorph": {}, "transmorph": {"embed_dim": 12, "depths": [2, 2], "num_heads": [2, 2]},
                "diffusemorph": {"features": [8, 8], "time_dim": 8}}


def tiny_config(arch: str, ndim: int) -> EstimatorConfig:
    return EstimatorConfig(arch=arch, ndim=ndim, enc=(8, 8), dec=(8, 8, 8), options=TINY_OPTIONS[arch])


def pair(ndim: int, batch: int = 2, shape=None) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(ndim)
    shape = shape or SHAPES[ndim]
    return torch.rand(batch, 1, *shape, generator=generator), torch.rand(batch, 1, *shape, generator=generator)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_reaches_every_parameter(arch, ndim):
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(arch=arch, ndim=ndim)).train()  # the default sizes
    moving, fixed = pair(ndim)
    deformation = estimator(moving, fixed)
    for field in (deformation.disp, deformation.disp_inv):
        assert field.shape == (2, ndim, *SHAPES[ndim]) and torch.isfinite(field).all()
    assert deformation.vel.shape == (2, ndim, *(s // 2 for s in SHAPES[ndim]))
    loss = (deformation.disp * torch.randn_like(deformation.disp)).mean()
    if arch == "diffusemorph":  # the diffusion network's ε head learns only through the denoising loss
        assert deformation.aux_loss is not None and deformation.aux_loss.dim() == 0
        loss = loss + deformation.aux_loss
    else:
        assert deformation.aux_loss is None
    loss.backward()
    starved = [name for name, p in estimator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert starved == []


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_the_first_field_is_near_identity(arch, ndim):
    torch.manual_seed(0)
    estimator = build_estimator(tiny_config(arch, ndim)).eval()
    with torch.no_grad():
        deformation = estimator(*pair(ndim))
    assert deformation.disp.abs().max() < 1e-2 and deformation.disp_inv.abs().max() < 1e-2  # voxels


@pytest.mark.parametrize("arch", ["transmorph", "diffusemorph"])
def test_any_input_size_gives_a_field_of_that_size(arch):
    estimator = build_estimator(tiny_config(arch, 2)).eval()
    with torch.no_grad():  # 30 and 37 are no multiple of TransMorph's 4·2 (padded inside, cropped back)
        assert estimator(*pair(2, batch=1, shape=(30, 37))).disp.shape == (1, 2, 30, 37)


def test_voxelmorph_keeps_its_state_dict_keys():
    """Existing VoxelMorph artifacts must load: the keys may not change with the new seam."""
    keys = list(build_estimator(EstimatorConfig(enc=(4, 4), dec=(4, 4, 4))).state_dict())
    assert keys == [f"backbone.{part}.{i}.conv.{kind}" for part, n in (("down", 2), ("up", 2), ("extra", 1))
                    for i in range(n) for kind in ("weight", "bias")] + ["flow.weight", "flow.bias"]


def test_builders_and_their_errors():
    assert set(ARCHITECTURES) == set(ARCHS)
    estimator = build_estimator(EstimatorConfig(arch="transmorph", ndim=3))
    assert estimator.flow.weight.shape[:2] == (3, 16)  # a 3-channel field from 3D convolutions
    with pytest.raises(ValueError, match=r"unknown architecture 'swin'; known: \['diffusemorph', 'transmorph', "
                                         r"'voxelmorph'\]"):
        build_estimator(EstimatorConfig(arch="swin"))
    with pytest.raises(ValueError, match=r"unknown options \['embed'\] for architecture 'transmorph'; known: "
                                         r"\['embed_dim', "):
        build_estimator(EstimatorConfig(arch="transmorph", options={"embed": 48}))
    with pytest.raises(ValueError, match="stage 1 has 48 channels, not divisible by 5 heads"):
        build_estimator(EstimatorConfig(arch="transmorph", options={"num_heads": [2, 5, 8]}))
    with pytest.raises(ValueError, match="0 < beta_start <= beta_end < 1"):
        build_estimator(EstimatorConfig(arch="diffusemorph", options={"beta_start": 0.1, "beta_end": 0.01}))
    with pytest.raises(ValueError, match="voxelmorph takes no options"):
        build_estimator(EstimatorConfig(options={"embed_dim": 48}))


def test_resolve_options_spells_out_the_defaults_and_survives_json():
    config = resolve_options(EstimatorConfig(arch="transmorph", options={"embed_dim": 48}))
    assert config.options["embed_dim"] == 48 and config.options["depths"] == [2, 2, 2]
    assert EstimatorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert resolve_options(EstimatorConfig()) == EstimatorConfig()


def test_noise_schedule_known_answers():
    assert alpha_bar_linear(2, 0.1, 0.5).tolist() == pytest.approx([0.9, 0.45])
    fixed, noise = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    expected = math.sqrt(0.25) * 1.0 + math.sqrt(0.75) * 2.0
    assert torch.allclose(noise_target(fixed, torch.tensor([0.25]), noise), torch.full_like(fixed, expected))
    assert timestep_embedding(torch.tensor([0]), 4).tolist() == [[0.0, 0.0, 1.0, 1.0]]  # sin 0, cos 0


def test_diffusemorph_train_mode_draws_from_the_seeded_global_rng():
    estimator = build_estimator(tiny_config("diffusemorph", 2)).train()
    moving, fixed = pair(2)
    losses = []
    for _ in range(2):
        torch.manual_seed(7)
        losses.append(estimator(moving, fixed).aux_loss)
    assert torch.equal(losses[0], losses[1]) and losses[0] > 0  # reproducible when the trainer seeds torch
    assert not torch.equal(estimator(moving, fixed).aux_loss, losses[0])  # a fresh draw otherwise


def test_diffusemorph_eval_is_one_deterministic_noise_free_pass():
    estimator = build_estimator(tiny_config("diffusemorph", 2)).eval()
    moving, fixed = pair(2)
    rng = torch.random.get_rng_state()
    with torch.no_grad():
        first, second = estimator(moving, fixed), estimator(moving, fixed)
    assert torch.equal(torch.random.get_rng_state(), rng)  # no noise and no timestep was drawn
    assert first.aux_loss is None and second.aux_loss is None
    assert torch.equal(first.disp, second.disp)


@pytest.fixture(scope="module", params=ARCHS)
def artifact(request, tmp_path_factory):
    """A tiny 2D artifact of each architecture, its config resolved as the trainer should store it."""
    torch.manual_seed(0)
    config = resolve_options(tiny_config(request.param, 2))
    estimator = build_estimator(config)
    directory = save_artifact(tmp_path_factory.mktemp("model") / request.param, estimator, config,
                              IntensityConfig(), {"method": "none", "data": "none: random weights for tests"},
                              train_shape=(32, 32), train_spacing_mm=(1.5, 1.5))
    return directory, estimator.eval(), config


def test_artifact_round_trips_without_the_scoring_network(artifact, monkeypatch):
    directory, estimator, config = artifact

    def forbidden(*args, **kwargs):
        raise AssertionError("the scoring network was built on the inference path")

    monkeypatch.setattr(scoring.ScoringNet, "__init__", forbidden)
    model = load_artifact(directory)
    assert model.config == config and not model.estimator.training
    moving, fixed = pair(2)
    with torch.no_grad():
        assert torch.equal(model.estimator(moving, fixed).disp, estimator(moving, fixed).disp)


def test_artifact_registers_through_the_cli(artifact, image_pair, tmp_path, capsys):
    directory, _, _ = artifact
    out = tmp_path / "out"
    assert main(["register", "--model", str(directory), "--fixed", str(image_pair["fixed"]),
                 "--moving", str(image_pair["moving"]), "--out", str(out)]) == 0
    fixed = sitk.ReadImage(str(image_pair["fixed"]))
    assert sitk.ReadImage(str(out / "warped.nii.gz")).GetSize() == fixed.GetSize()
    assert sitk.ReadImage(str(out / "displacement.nii.gz")).GetNumberOfComponentsPerPixel() == 2


@pytest.mark.parametrize("arch", ["transmorph", "diffusemorph"])
def test_cli_trains_the_new_architectures(arch, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic:n=8,size=32", "--arch", arch, "--method", "none", "--epochs", "1",
                 "--warmup-epochs", "0", "--steps-per-epoch", "2", "--batch-size", "2", "--enc", "8,8",
                 "--dec", "8,8,8", "--quiet", "--out", str(out)]) == 0
    assert load_artifact(out / "model").config.arch == arch

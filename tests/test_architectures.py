"""Every displacement estimator (VoxelMorph, TransMorph, DiffuseMorph, the Laplacian pyramid) in 2D and 3D, its
artifact, the registry's check of it, the trainer and the CLI."""

import json
import math
import shutil
from dataclasses import replace

import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file, save_file

from models.artifact import load_artifact, save_artifact
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.intensity import IntensityConfig
from models.losses import background_mask
from models.networks import scoring
from models.networks.diffusemorph import alpha_bar_linear, noise_target, timestep_embedding
from models.networks.estimator import EstimatorConfig
from models.networks.pyramid import PyramidOptions, downsample_image, image_pyramid, level_shapes
from models.networks.registry import ARCHITECTURES, build_estimator, resolve_options
from models.trainer import TrainConfig, train
from models.warp import warp
from service.cli import main
from service.registry import InvalidArtifact, check_artifact_dir

ARCHS = ("voxelmorph", "transmorph", "diffusemorph", "pyramid")
SHAPES = {2: (32, 32), 3: (16, 16, 16)}
# Small sizes, so that the file runs in seconds; in 3D, TransMorph's 1/8 grid (2³) is smaller than a window.
TINY_OPTIONS = {"voxelmorph": {}, "transmorph": {"embed_dim": 12, "depths": [2, 2], "num_heads": [2, 2]},
                "diffusemorph": {"features": [8, 8], "time_dim": 8}, "pyramid": {"features": [8, 8, 8], "blocks": 1}}


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


@pytest.mark.parametrize("arch", ["transmorph", "diffusemorph", "pyramid"])
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
    with pytest.raises(ValueError, match=r"unknown architecture 'swin'; known: \['diffusemorph', 'pyramid', "
                                         r"'transmorph', 'voxelmorph'\]"):
        build_estimator(EstimatorConfig(arch="swin"))
    with pytest.raises(ValueError, match=r"unknown options \['embed'\] for architecture 'transmorph'; known: "
                                         r"\['embed_dim', "):
        build_estimator(EstimatorConfig(arch="transmorph", options={"embed": 48}))
    with pytest.raises(ValueError, match="stage 1 has 48 channels, not divisible by 5 heads"):
        build_estimator(EstimatorConfig(arch="transmorph", options={"num_heads": [2, 5, 8]}))
    with pytest.raises(ValueError, match="0 < beta_start <= beta_end < 1"):
        build_estimator(EstimatorConfig(arch="diffusemorph", options={"beta_start": 0.1, "beta_end": 0.01}))
    with pytest.raises(ValueError, match=r"features needs one positive integer width per level, got \(\)"):
        build_estimator(EstimatorConfig(arch="pyramid", options={"features": []}))
    with pytest.raises(ValueError, match=r"integer width per level, got \(16, 8.5\)"):
        build_estimator(EstimatorConfig(arch="pyramid", options={"features": [16, 8.5]}))
    with pytest.raises(ValueError, match="need blocks >= 0 and deep_supervision >= 0; got -1, 0.0"):
        build_estimator(EstimatorConfig(arch="pyramid", options={"blocks": -1}))
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


@pytest.mark.parametrize("arch", ["transmorph", "diffusemorph", "pyramid"])
def test_cli_trains_the_new_architectures(arch, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic:n=8,size=32", "--arch", arch, "--method", "none", "--epochs", "1",
                 "--warmup-epochs", "0", "--steps-per-epoch", "2", "--batch-size", "2", "--enc", "8,8",
                 "--dec", "8,8,8", "--quiet", "--out", str(out)]) == 0
    assert load_artifact(out / "model").config.arch == arch


def test_the_registry_accepts_the_artifact_and_refuses_it_tampered(artifact, tmp_path):
    directory, _, config = artifact
    info = check_artifact_dir(directory)
    assert info.config["estimator"]["arch"] == config.arch
    count = len(info.tensor_names)
    tampered = shutil.copytree(directory, tmp_path / "tampered")
    weights = load_file(tampered / "model.safetensors")
    del weights[sorted(weights)[0]]
    save_file(weights, str(tampered / "model.safetensors"), metadata={"format": "1", "arch": config.arch})
    with pytest.raises(InvalidArtifact, match=f"holds {count - 1} tensors but the estimator in config.json has "
                                              f"{count}: the weights and the config do not belong together"):
        check_artifact_dir(tampered)


@pytest.mark.parametrize("artifact", ["pyramid"], indirect=True)
def test_the_registry_reads_the_pyramids_size_from_its_options(artifact, tmp_path):
    directory, _, _ = artifact
    count = len(check_artifact_dir(directory).tensor_names)
    cases = [({"features": [8, 8, 8, 8], "blocks": 1}, f"has {count + 16 + 2}: the weights"),  # one more level
             ({"features": [8, 8, 8], "blocks": 2}, f"has {count + 3 * 4}: the weights"),  # one more block a level
             ({"features": "8,8,8"}, "pyramid options need a list 'features' and an integer")]
    for i, (options, message) in enumerate(cases):
        tampered = shutil.copytree(directory, tmp_path / f"tampered-{i}")
        meta = json.loads((tampered / "config.json").read_text(encoding="utf-8"))
        meta["estimator"]["options"] = options
        (tampered / "config.json").write_text(json.dumps(meta), encoding="utf-8")
        with pytest.raises(InvalidArtifact, match=message):
            check_artifact_dir(tampered)


# --- the Laplacian pyramid (models/networks/pyramid.py) -------------------------------------------------------

def test_level_shapes_halve_and_stop_at_two_voxels():
    assert level_shapes((32, 37), 3) == [(8, 9), (16, 18), (32, 37)]
    assert level_shapes((4, 4, 4), 3) == [(2, 2, 2), (2, 2, 2), (4, 4, 4)]
    assert level_shapes((16, 16), 1) == [(16, 16)]


def test_the_image_pyramid_samples_where_the_fields_grid_puts_each_voxel():
    """Coarse voxel ``i`` holds the image at fine coordinate ``i·(N-1)/(n-1)``, as ``resize_field`` assumes."""
    ramp = torch.arange(33.0).view(1, 1, 33, 1).expand(1, 1, 33, 8)  # the value is the index along axis 0
    for image in image_pyramid(ramp, level_shapes((33, 8), 3))[:-1]:
        n = image.shape[2]
        expected = torch.arange(n, dtype=torch.float32) * 32 / (n - 1)
        # Inside, the box blur leaves a linear ramp unchanged; at the border it averages fewer voxels.
        assert torch.allclose(image[0, 0, 1:-1, 0], expected[1:-1], atol=1e-4)
    flat = torch.full((1, 1, 9, 9, 9), 0.7)  # count_include_pad=False: no darkened border
    assert torch.allclose(downsample_image(flat, (4, 4, 4)), torch.full((1, 1, 4, 4, 4), 0.7))


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_pyramid_leaves_an_identical_pair_alone(ndim):
    torch.manual_seed(0)
    estimator = build_estimator(EstimatorConfig(arch="pyramid", ndim=ndim)).eval()  # the default sizes
    image = pair(ndim)[0]
    with torch.no_grad():
        deformation = estimator(image, image)
    assert deformation.disp.abs().max() < 1e-3 and deformation.disp_inv.abs().max() < 1e-3  # voxels


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_coarsest_velocity_reaches_the_field_in_full_resolution_voxels(ndim):
    """Known answer: a constant coarse velocity of 0.5 coarse voxels is a translation of 0.5·(N-1)/(N/4-1)."""
    estimator = build_estimator(tiny_config("pyramid", ndim)).eval()
    n = SHAPES[ndim][0]
    with torch.no_grad():
        estimator.levels[0].flow.bias.copy_(torch.tensor([0.5] + [0.0] * (ndim - 1)))  # along axis 0
        deformation = estimator(*pair(ndim))
    assert torch.allclose(deformation.vel[:, 0], torch.tensor(0.5 * (n // 2 - 1) / (n // 4 - 1)), atol=1e-3)
    # Scaling and squaring pulls zeros in from beyond the far end of axis 0: read the near half.
    inside = (slice(None), 0, slice(0, n // 2))
    assert torch.allclose(deformation.disp[inside], torch.tensor(0.5 * (n - 1) / (n // 4 - 1)), atol=1e-3)
    assert deformation.disp[:, 1:].abs().max() < 1e-3


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_pyramids_disp_inv_inverts_disp(ndim):
    torch.manual_seed(0)
    estimator = build_estimator(tiny_config("pyramid", ndim)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(estimator.levels[0].flow.weight, std=0.5)  # a smooth field of about a voxel
        deformation = estimator(*pair(ndim))
        round_trip = deformation.disp + warp(deformation.disp_inv, deformation.disp)  # φ⁻¹∘φ − id
    largest = deformation.disp.abs().max()
    assert largest > 0.5
    assert round_trip[(slice(None), slice(None), *(slice(4, -4),) * ndim)].abs().max() < 0.1 * largest


def test_the_pyramid_without_integration_returns_its_velocity_as_the_displacement():
    estimator = build_estimator(replace(tiny_config("pyramid", 2), int_steps=0)).eval()
    with torch.no_grad():
        estimator.levels[0].flow.bias.fill_(0.5)
        deformation = estimator(*pair(2))
    assert deformation.vel.shape == (2, 2, *SHAPES[2])  # the full-resolution field, as VoxelMorph's
    assert torch.equal(deformation.disp, deformation.vel) and torch.equal(deformation.disp_inv, -deformation.vel)
    assert torch.allclose(deformation.disp, torch.tensor(0.5 * 31 / 7), atol=1e-3)


def test_deep_supervision_is_the_coarse_levels_data_term_in_train_mode_only():
    torch.manual_seed(0)
    options = {**TINY_OPTIONS["pyramid"], "deep_supervision": 0.5}
    estimator = build_estimator(EstimatorConfig(arch="pyramid", options=options)).train()
    moving, fixed = pair(2)
    shapes = level_shapes(SHAPES[2], 3)
    coarse = list(zip(image_pyramid(moving, shapes), image_pyramid(fixed, shapes)))[:-1]
    # A fresh pyramid barely moves, so each coarse term is the unregistered pair's masked MSE.
    expected = 0.5 * sum((background_mask(m, f) * (m - f) ** 2).mean() for m, f in coarse) / len(coarse)
    aux_loss = estimator(moving, fixed).aux_loss
    assert aux_loss.dim() == 0 and aux_loss.item() == pytest.approx(expected.item(), rel=1e-3)
    aux_loss.backward()
    assert estimator.levels[0].flow.weight.grad.abs().sum() > 0
    assert estimator.levels[-1].flow.weight.grad is None  # the finest level answers to the trainer's loss only
    with torch.no_grad():
        assert estimator.eval()(moving, fixed).aux_loss is None
    assert PyramidOptions().deep_supervision == 0.0  # off unless asked for


@pytest.mark.parametrize(("method", "ndim", "options"),
                         [("none", 2, {"deep_supervision": 0.5}), ("adacs", 2, {}), ("adacs", 3, {})])
def test_the_pyramid_trains_with_any_method(method, ndim, options, tmp_path):
    pairs = make_phantom_dataset(PhantomConfig(dims=ndim, size=SHAPES[ndim][0], n=4, seed=0))
    estimator = EstimatorConfig(arch="pyramid", ndim=ndim, enc=(4, 4), dec=(4, 4, 4),
                                options={**TINY_OPTIONS["pyramid"], **options})
    cfg = TrainConfig(method=method, epochs=1, warmup_epochs=1, steps_per_epoch=1, batch_size=2,
                      micro_batch_size=2, estimator=estimator)
    history = train(cfg, pairs, tmp_path, val_pairs=pairs[:2]).history
    assert all(math.isfinite(h["loss_de"]) for h in history if "loss_de" in h)
    model = load_artifact(tmp_path / "model")
    assert model.config == resolve_options(estimator)
    # Two displacement updates moved every level's flow head off its N(0, 1e-5) start.
    assert all(level.flow.weight.abs().max() > 5e-5 for level in model.estimator.levels)

"""The baselines and ablations: losses against the SPEC on hand-computed examples, their stop-gradients,
the variance network, and every method trained end to end (trainer and CLI) into an artifact that
loads without any training-time network."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.artifact import load_artifact
from models.baselines import (
    adaframe_data_term,
    adaframe_weight,
    adareg_smoothness,
    adareg_weight,
    beta_nll_data_term,
    nll_data_term,
    weighted_smoothness,
)
from models.checkpoint import load_checkpoint
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.inference import predict_disp, stack_pairs
from models.losses import smoothness
from models.networks import scoring, variance
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.networks.variance import LOG_VAR_BOUND, VarianceNet
from models.objectives import (
    EQ3,
    EQ3_4,
    EQ9,
    METHODS,
    BaselineConstants,
    Direction,
    Method,
    directions,
    displacement_loss,
    log_var_maps,
    scoring_objective,
)
from models.trainer import (
    PHASE_ALTERNATING,
    PHASE_DISPLACEMENT,
    PHASE_WARMUP_DISPLACEMENT,
    PHASE_WARMUP_SCORING,
    TrainConfig,
    train,
)
from models.training.steps import displacement_update
from service.cli import main

TINY = EstimatorConfig(enc=(8, 8), dec=(8, 8, 8))
LN2 = math.log(2.0)


def grid(values) -> torch.Tensor:
    """A ``(1, 1, 2, 2)`` tensor from four values in row-major order."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


# --- NLL and β-NLL ------------------------------------------------------------------------------------------

R, S, BG = [0.5, 2.0, 1.0, 4.0], [0.0, LN2, 2 * LN2, 0.0], [1.0, 1.0, 1.0, 0.0]


def test_nll_value_and_both_inputs_receive_gradients():
    residual, log_var = grid(R).requires_grad_(), grid(S).requires_grad_()
    loss = nll_data_term(residual, grid(BG), log_var)
    # Per voxel r/(2e^s) + s/2: 0.5/2; 2/4 + ln2/2; 1/8 + ln2; the last is masked out. Mean over 4 voxels.
    assert loss.item() == pytest.approx((0.25 + 0.5 + LN2 / 2 + 0.125 + LN2) / 4)
    loss.backward()
    # ∂/∂s = B·(1/2 − r/(2e^s))/4, ∂/∂r = B/(2e^s)/4: s is trained too (jointly), r is not detached.
    assert log_var.grad.flatten().tolist() == pytest.approx([0.0625, 0.0, 0.09375, 0.0])
    assert residual.grad.flatten().tolist() == pytest.approx([0.125, 0.0625, 0.03125, 0.0])


def test_beta_nll_factor_passes_no_gradient():
    residual, log_var = grid(R).requires_grad_(), grid(S).requires_grad_()
    loss = beta_nll_data_term(residual, grid(BG), log_var, beta=0.5)
    weight = [1.0, math.sqrt(2.0), 2.0, 1.0]  # e^{s/2}
    assert loss.item() == pytest.approx((0.25 + weight[1] * (0.5 + LN2 / 2) + weight[2] * (0.125 + LN2)) / 4)
    loss.backward()
    # Only the NLL's own gradient, scaled by the constant e^{βs}. Voxel 1 sits at the NLL's optimum
    # (e^s = r): its gradient is 0 only because e^{βs} is detached (else β·e^{βs}·nll ≠ 0 would remain).
    assert log_var.grad.flatten().tolist() == pytest.approx([0.0625, 0.0, 2 * 0.09375, 0.0])
    assert residual.grad.flatten().tolist() == pytest.approx([0.125, weight[1] * 0.0625, 2 * 0.03125, 0.0])


def test_beta_nll_with_beta_zero_is_the_nll():
    residual, log_var = torch.rand(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    bg = torch.ones_like(residual)
    assert beta_nll_data_term(residual, bg, log_var, beta=0.0).item() == \
        pytest.approx(nll_data_term(residual, bg, log_var).item())


def test_nll_rejects_a_log_variance_of_another_shape():
    with pytest.raises(ValueError, match=r"log_var must have the residual's shape \(1, 1, 2, 2\), got \(1, 1, 4\)"):
        nll_data_term(grid(R), grid(BG), torch.zeros(1, 1, 4))


# --- AdaReg ------------------------------------------------------------------------------------------------

def test_adareg_weight_hand_computed_and_detached():
    residual = grid([0.0, 0.1, 0.2, 0.5]).requires_grad_()
    bg = grid(BG)
    w = adareg_weight(residual, bg, sigma=1.0)
    global_residual = (0.0 + 0.1 + 0.2) / 4  # R̄ = mean(B·r) over all of Ω, masked voxel included as 0
    expected = [1 - math.exp(-r / global_residual) for r in (0.0, 0.1, 0.2, 0.5)]
    assert w.flatten().tolist() == pytest.approx(expected)
    assert not w.requires_grad
    expected_sigma2 = [1 - math.exp(-r / (2 * global_residual)) for r in (0.0, 0.1, 0.2, 0.5)]
    assert adareg_weight(residual, bg, sigma=2.0).flatten().tolist() == pytest.approx(expected_sigma2)
    assert adareg_weight(torch.zeros(1, 1, 2, 2), bg).flatten().tolist() == [0.0] * 4  # perfect fit: finite


def test_weighted_smoothness_pools_the_weight_to_the_velocity_grid():
    vel = torch.zeros(1, 2, 2, 2)
    vel[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    # Full-resolution weight whose 2x2 blocks average to [[1, 0], [0.5, 0]].
    weight = torch.kron(torch.tensor([[1.0, 0.0], [0.5, 0.0]]), torch.ones(2, 2)).view(1, 1, 4, 4)
    # Along H: differences 2 (col 0) and 3 (col 1), edge weights (1+0.5)/2 and 0: (0.75·4 + 0)/4 entries.
    # Along W: differences 1 (row 0) and 2 (row 1), edge weights 0.5 and 0.25: (0.5·1 + 0.25·4)/4 entries.
    expected = (0.75 + 0.375) / 2 * 2  # mean over axes, times int_downsize
    assert weighted_smoothness(vel, weight, int_downsize=2).item() == pytest.approx(expected)


@pytest.mark.parametrize("shape, vel_shape", [((4, 4), (2, 2)), ((5, 7), (2, 3)), ((6, 6, 6), (3, 3, 3))])
def test_weighted_smoothness_with_unit_weight_is_r_of_u(shape, vel_shape):
    vel = torch.randn(2, len(shape), *vel_shape)
    assert torch.equal(weighted_smoothness(vel, torch.ones(2, 1, *shape), 2), smoothness(vel, 2))


def test_adareg_smoothness_gives_no_gradient_to_the_residual():
    residual = torch.rand(1, 1, 8, 8, requires_grad=True)
    vel = torch.randn(1, 2, 4, 4, requires_grad=True)
    adareg_smoothness(vel, residual, torch.ones_like(residual), int_downsize=2).backward()
    assert residual.grad is None and vel.grad is not None


# --- AdaFrame ----------------------------------------------------------------------------------------------

def test_adaframe_weight_normalises_per_image_over_the_mask():
    first = [0.1, 0.2, 0.3, 5.0]
    residual = torch.tensor([first, [10 * v for v in first]]).view(2, 1, 2, 2)
    bg = torch.tensor([BG, BG]).view(2, 1, 2, 2)
    w = adaframe_weight(residual, bg, a=2.0, b=1.5)
    r = np.array(first[:3])  # the statistics see only the voxels with B = 1 (population std)
    normalised = (np.array(first) - r.mean()) / r.std()
    expected = 1.0 - 1.0 / (1.0 + np.exp(-2.0 * (normalised - 1.5)))
    np.testing.assert_allclose(w[0].flatten().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(w[1].flatten().numpy(), expected, rtol=1e-5)  # per image: scale-free
    assert w[0, 0, 1, 1].item() < 1e-6  # the masked-out outlier would be down-weighted, were it counted


def test_adaframe_data_term_value_and_detached_weight():
    residual = torch.tensor([0.1, 0.2, 0.3, 5.0]).view(1, 1, 2, 2).requires_grad_()
    bg = grid(BG)
    w = adaframe_weight(residual, bg)
    loss = adaframe_data_term(residual, bg)
    assert loss.item() == pytest.approx((bg * w * residual).sum().item() / 4)
    loss.backward()
    assert torch.allclose(residual.grad, bg * w / 4)  # ∂/∂r = B·w/N: w is a constant


def test_constants_default_to_the_spec():
    assert BaselineConstants() == BaselineConstants(beta_nll=0.5, adareg_sigma=1.0, adaframe_a=2.0, adaframe_b=1.5)
    assert TrainConfig().constants == BaselineConstants()


# --- the ablations' scoring objectives ---------------------------------------------------------------------

def _direction(residuals) -> Direction:
    """A direction whose residual is ``residuals`` (target 0, warped √r) with the whole grid in the mask."""
    warped = grid(residuals).sqrt()
    return Direction(target=torch.zeros_like(warped), warped=warped, bg=torch.ones_like(warped))


ALPHA, RESIDUALS = 0.02, [0.004, 0.01, 0.02, 0.03]


def _optimised_scores(terms) -> torch.Tensor:
    """Minimise the scoring objective over a free map ``S = sigmoid(logit)`` from ``S = 0.5``."""
    logit = torch.zeros(1, 1, 2, 2, requires_grad=True)
    optimizer = torch.optim.Adam([logit], lr=0.05)
    direction = _direction(RESIDUALS)
    for _ in range(1500):
        optimizer.zero_grad()
        scoring_objective([direction], [torch.sigmoid(logit)], m_t=0.0, alpha=ALPHA, terms=terms).total.backward()
        optimizer.step()
    return torch.sigmoid(logit).detach()


def test_scs_alone_drives_every_score_towards_zero():
    score = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    loss = scoring_objective([_direction(RESIDUALS)], [score], m_t=1.0, alpha=ALPHA, terms=EQ3)
    assert loss.total.item() == loss.scs.item()  # no L_reg, no L_tv
    loss.total.backward()
    assert torch.allclose(score.grad, grid(RESIDUALS) / 4)  # ∂/∂S = B·r/N ≥ 0: descent lowers every score
    assert _optimised_scores(EQ3).max().item() < 0.05  # Table 3's degenerate all-zero map


def test_scs_plus_reg_has_the_closed_form_minimiser():
    # Per voxel S·r + α·(S − 1)² is least at S* = 1 − r/(2α): 0.9, 0.75, 0.5, 0.25 here.
    expected = torch.tensor([1 - r / (2 * ALPHA) for r in RESIDUALS]).view(1, 1, 2, 2)
    assert torch.allclose(_optimised_scores(EQ3_4), expected, atol=0.01)


def test_ablations_weigh_the_terms_of_eq9():
    score = torch.rand(1, 1, 2, 2)
    full, no_tv = (scoring_objective([_direction(RESIDUALS)], [score], m_t=2.0, alpha=ALPHA, terms=t)
                   for t in (EQ9, EQ3_4))
    assert full.total.item() == pytest.approx(full.scs.item() + ALPHA * full.reg.item() + full.tv.item())
    assert full.tv.item() > 0 and no_tv.tv.item() == 0.0
    assert no_tv.total.item() == pytest.approx(no_tv.scs.item() + ALPHA * no_tv.reg.item())
    assert METHODS["adacs"].scoring == EQ9 and METHODS["adacs-scs-only"].scoring == EQ3
    assert METHODS["adacs-no-tv"].scoring == EQ3_4


@pytest.mark.parametrize("terms", [EQ9, EQ3, EQ3_4])
def test_no_scoring_objective_reaches_the_estimator(terms):
    torch.manual_seed(0)
    estimator = build_estimator(TINY)
    scorer = scoring.ScoringNet(2, TINY.enc, TINY.dec)
    moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    dirs = directions(moving, fixed, estimator(moving, fixed), bidir=True)  # graph through θ kept on purpose
    loss = scoring_objective(dirs, [scorer(d.target) for d in dirs], m_t=1.0, alpha=ALPHA, terms=terms)
    grads = torch.autograd.grad(loss.total, list(estimator.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


# --- the variance network and the joint update --------------------------------------------------------------

@pytest.mark.parametrize("shape", [(24, 20), (12, 12, 12)])
def test_variance_net_starts_at_unit_variance(shape):
    torch.manual_seed(0)
    net = VarianceNet(len(shape), TINY.enc, TINY.dec)
    log_var = net(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
    assert log_var.shape == (2, 1, *shape) and log_var.abs().max().item() < 1e-3


def test_variance_net_output_is_bounded_and_inputs_are_checked():
    net = VarianceNet(2, TINY.enc, TINY.dec)
    torch.nn.init.constant_(net.head.bias, -1e3)
    assert net(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)).min().item() >= -LOG_VAR_BOUND
    with pytest.raises(ValueError, match=r"target \(1, 1, 8, 8\) and warped \(1, 1, 8, 9\) must match"):
        net(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_variance_reads_a_detached_warp_and_nll_trains_both_networks():
    torch.manual_seed(0)
    estimator, net = build_estimator(TINY), VarianceNet(2, TINY.enc, TINY.dec)
    moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    deformation = estimator(moving, fixed)
    dirs = directions(moving, fixed, deformation, bidir=True)
    log_vars = log_var_maps(net, dirs)
    grads = torch.autograd.grad(torch.stack(log_vars).sum(), list(estimator.parameters()), allow_unused=True,
                                retain_graph=True)
    assert all(g is None for g in grads)  # θ does not learn by steering the variance network's input
    method = METHODS["nll"]
    loss = displacement_loss(dirs, deformation, 0.01, 2, log_vars, data_term=method.data_term,
                             regulariser=method.regulariser)
    for params in (list(estimator.parameters()), list(net.parameters())):
        assert all(g is not None for g in torch.autograd.grad(loss.total, params, retain_graph=True))


def test_joint_update_steps_both_networks():
    torch.manual_seed(0)
    estimator, net = build_estimator(TINY), VarianceNet(2, TINY.enc, TINY.dec)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (estimator, net)]
    cfg = TrainConfig(method="nll", batch_size=4, micro_batch_size=2, estimator=TINY)
    micro = [(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)) for _ in range(2)]
    logs = displacement_update(estimator, None, torch.optim.Adam(estimator.parameters()), micro, cfg,
                               net, torch.optim.Adam(net.parameters()))
    for module, state in zip((estimator, net), before):
        assert not all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
    assert abs(logs["log_var_mean"]) < 1e-3 and "aux" not in logs


# --- the estimator's own loss (DiffuseMorph's seam) ---------------------------------------------------------

class WithAuxLoss(torch.nn.Module):
    """An estimator that also reports ``aux_loss = extra²`` (as DiffuseMorph reports its denoising loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_estimator(TINY)
        self.extra = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, moving, fixed):
        deformation = self.inner(moving, fixed)
        deformation.aux_loss = self.extra**2
        return deformation


def test_aux_loss_is_added_to_the_total_and_logged():
    torch.manual_seed(0)
    estimator = WithAuxLoss()
    micro = [(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))]
    cfg = TrainConfig(method="none", batch_size=2, micro_batch_size=2, estimator=TINY)
    logs = displacement_update(estimator, None, torch.optim.SGD(estimator.parameters(), lr=0.1), micro, cfg)
    assert logs["aux"] == pytest.approx(4.0)
    assert logs["loss_de"] == pytest.approx(logs["data"] + cfg.lam * logs["smooth"] + 4.0)
    assert estimator.extra.item() == pytest.approx(2.0 - 0.1 * 4.0)  # its gradient 2·extra reached it


def test_a_deformation_without_the_aux_field_still_works():
    vel = torch.zeros(1, 2, 4, 4)
    deformation = SimpleNamespace(vel=vel, disp=torch.zeros(1, 2, 8, 8), disp_inv=torch.zeros(1, 2, 8, 8))
    moving = torch.rand(1, 1, 8, 8)
    loss = displacement_loss(directions(moving, moving, deformation, bidir=False), deformation, 0.01, 2)
    assert loss.aux is None and loss.total.item() == pytest.approx(0.0, abs=1e-12)


# --- every method end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=8, seed=0))


def tiny_config(method: str, **overrides) -> TrainConfig:
    settings = dict(epochs=1, warmup_epochs=1, steps_per_epoch=2, batch_size=4, micro_batch_size=2, estimator=TINY)
    return TrainConfig(method=method, **{**settings, **overrides})


def _forbid_training_networks(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a training-time network was built on the inference path")

    monkeypatch.setattr(scoring.ScoringNet, "__init__", forbidden)
    monkeypatch.setattr(variance.VarianceNet, "__init__", forbidden)


def _check_artifact(model_dir, method: str, estimator, pairs, monkeypatch) -> None:
    assert sorted(p.name for p in model_dir.iterdir()) == ["card.json", "config.json", "model.safetensors"]
    assert set(load_file(model_dir / "model.safetensors")) == set(estimator.state_dict())
    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    assert card["method"] == method and card["method_description"] == METHODS[method].description
    _forbid_training_networks(monkeypatch)
    model = load_artifact(model_dir)
    moving, fixed = stack_pairs(pairs[:2], model.intensity)
    disp = predict_disp(model.estimator, moving, fixed)
    assert disp.shape == (2, 2, 32, 32) and torch.isfinite(disp).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_its_artifact_holds_the_estimator_alone(method, pairs, tmp_path, monkeypatch):
    result = train(tiny_config(method), pairs, tmp_path, val_pairs=pairs[:2])
    phases = [h["phase"] for h in result.history]
    if METHODS[method].scoring is not None:
        assert phases == [PHASE_WARMUP_DISPLACEMENT, PHASE_WARMUP_SCORING, PHASE_ALTERNATING]
        assert {"loss_se", "scs", "reg", "tv"} <= set(result.history[-1])
    else:
        assert phases == [PHASE_DISPLACEMENT, PHASE_DISPLACEMENT]  # W + E epochs: AdaCS's displacement budget
    assert sum(2 for h in result.history if "loss_de" in h) == 4
    assert all(math.isfinite(h["loss_de"]) for h in result.history if "loss_de" in h)
    state = load_checkpoint(tmp_path / "checkpoints")
    has_auxiliary = METHODS[method].auxiliary is not None
    assert (state["auxiliary"] is not None) == has_auxiliary == (state["opt_auxiliary"] is not None)
    assert (state["scorer"] is not None) == (METHODS[method].scoring is not None)
    if has_auxiliary:
        assert "log_var_mean" in result.history[-1]
    _check_artifact(tmp_path / "model", method, result.estimator, pairs, monkeypatch)


def test_variance_tensors_stay_out_of_the_artifact(pairs, tmp_path):
    result = train(tiny_config("nll", epochs=0), pairs, tmp_path)
    weights = load_file(tmp_path / "model" / "model.safetensors")
    auxiliary = load_checkpoint(tmp_path / "checkpoints")["auxiliary"]
    assert set(weights) == set(result.estimator.state_dict())
    # The variance head (one output channel) has no twin in the estimator, and no tensor is shared.
    assert tuple(auxiliary["head.weight"].shape) == (1, 8, 3, 3)
    assert (1, 8, 3, 3) not in [tuple(v.shape) for v in weights.values()]
    assert not any(torch.equal(a, w) for a in auxiliary.values() for w in weights.values() if a.shape == w.shape)


def test_a_new_method_plugs_in_without_touching_the_trainer(pairs, tmp_path, monkeypatch):
    def l1_data(d, _, c):
        return (d.bg * (d.warped - d.target).abs()).mean()

    monkeypatch.setitem(METHODS, "l1", Method("l1", "L1 data term", data_term=l1_data))
    result = train(tiny_config("l1", epochs=0), pairs, tmp_path)
    assert [h["phase"] for h in result.history] == [PHASE_DISPLACEMENT]
    card = json.loads((tmp_path / "model" / "card.json").read_text(encoding="utf-8"))
    assert card["method"] == "l1" and card["method_description"] == "L1 data term"


def test_a_method_reads_one_map():
    with pytest.raises(ValueError, match="from the scoring network or from an auxiliary network, not both"):
        Method("both", "", scoring=EQ9, auxiliary=METHODS["nll"].auxiliary)


def test_resume_refuses_other_baseline_constants(pairs, tmp_path):
    train(tiny_config("adaframe", epochs=0, steps_per_epoch=1), pairs, tmp_path)
    with pytest.raises(ValueError, match="adaframe_b: checkpoint 1.5 vs now 2.0"):
        train(tiny_config("adaframe", epochs=0, steps_per_epoch=1, adaframe_b=2.0), pairs, tmp_path)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_through_the_cli(method, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic:size=32,n=4,seed=0", "--val-data", "none", "--method", method,
                 "--arch", "voxelmorph", "--epochs", "1", "--warmup-epochs", "1", "--steps-per-epoch", "1",
                 "--batch-size", "2", "--enc", "8,8", "--dec", "8,8,8", "--quiet", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == \
        (3 if METHODS[method].scoring is not None else 2)
    _check_artifact(out / "model", method, build_estimator(TINY), make_phantom_dataset(PhantomConfig(size=32, n=2)),
                    monkeypatch)


@pytest.mark.parametrize("method", ["nll", "adareg", "adaframe"])
def test_baselines_train_in_3d(method, tmp_path):
    from models.warp import warp

    pairs = make_phantom_dataset(PhantomConfig(dims=3, size=24, n=4, seed=0))
    cfg = tiny_config(method, warmup_epochs=0, steps_per_epoch=2)
    result = train(cfg, pairs, tmp_path, val_pairs=pairs[:2])
    assert result.estimator.flow.weight.shape[:2] == (3, 8)  # a 3-channel field from 3D convolutions
    assert math.isfinite(result.history[-1]["loss_de"])
    # Better than no registration, by the image term: two updates are too few to move a nearest-neighbour
    # warped mask (val Dice stays the identity's). 0.988 of the identity's for each method when written.
    moving, fixed = stack_pairs(pairs[:2], cfg.intensity)
    warped = warp(moving, predict_disp(result.estimator, moving, fixed))
    assert ((warped - fixed) ** 2).mean() < 0.995 * ((moving - fixed) ** 2).mean()

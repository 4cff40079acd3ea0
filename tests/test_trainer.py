"""Algorithm 1: phases, which network moves when, stop-gradients, m_t, exact resume, accuracy floor."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.losses import mean_squared_gradient, momentum_update
from models.networks.estimator import EstimatorConfig
from models.networks.registry import build_estimator
from models.networks.scoring import ScoringNet
from models.objectives import directions, displacement_loss, scoring_objective
from models.trainer import (
    PHASE_ALTERNATING,
    PHASE_DISPLACEMENT,
    PHASE_WARMUP_DISPLACEMENT,
    PHASE_WARMUP_SCORING,
    ProgressEvent,
    TrainConfig,
    displacement_updates,
    displacement_updates_before,
    lr_factor,
    train,
)
from models.training.steps import displacement_update, scoring_update
from models.training.validation import warmup_warnings

TINY = EstimatorConfig(enc=(8, 8), dec=(8, 8, 8))


def tiny_config(**overrides) -> TrainConfig:
    base = TrainConfig(method="adacs", epochs=1, warmup_epochs=1, steps_per_epoch=2, batch_size=4,
                       micro_batch_size=2, estimator=TINY)
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=8, seed=0))


def test_phases_in_order_and_equal_displacement_budgets(pairs, tmp_path):
    adacs = train(tiny_config(), pairs, tmp_path / "adacs")
    vanilla = train(tiny_config(method="none"), pairs, tmp_path / "none")
    assert [h["phase"] for h in adacs.history] == [PHASE_WARMUP_DISPLACEMENT, PHASE_WARMUP_SCORING,
                                                   PHASE_ALTERNATING]
    assert [h["phase"] for h in vanilla.history] == [PHASE_DISPLACEMENT, PHASE_DISPLACEMENT]
    count = lambda hist: sum(1 for h in hist if "loss_de" in h) * 2  # noqa: E731
    assert count(adacs.history) == count(vanilla.history) == 4
    assert "loss_se" not in adacs.history[0] and "loss_de" not in adacs.history[1]
    assert {"loss_de", "loss_se"} <= set(adacs.history[2])


def test_each_phase_moves_only_its_network(pairs, tmp_path):
    cfg = tiny_config()
    snapshots = []

    def snapshot(event):
        if event.kind == "epoch":
            state = load_checkpoint(tmp_path / "run" / "checkpoints")
            snapshots.append((state["estimator"], state["scorer"]))

    train(cfg, pairs, tmp_path / "run", callback=snapshot)
    torch.manual_seed(cfg.seed)  # rebuild the initial networks exactly as the trainer does
    estimator0 = build_estimator(replace(TINY, ndim=2)).state_dict()
    scorer0 = ScoringNet(2, TINY.enc, TINY.dec).state_dict()
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    (est1, sc1), (est2, sc2), (est3, sc3) = snapshots
    assert not same(estimator0, est1) and same(scorer0, sc1)  # warm-up 1: displacement alone
    assert same(est1, est2) and not same(sc1, sc2)  # warm-up 2: scoring alone, estimator frozen
    assert not same(est2, est3) and not same(sc2, sc3)  # alternating: both


def _nets():
    torch.manual_seed(0)
    return build_estimator(replace(TINY, ndim=2)), ScoringNet(2, TINY.enc, TINY.dec)


def test_no_gradient_of_scoring_loss_reaches_the_estimator():
    estimator, scorer = _nets()
    moving, fixed = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    dirs = directions(moving, fixed, estimator(moving, fixed), bidir=True)  # graph through θ kept on purpose
    scores = [scorer(d.target) for d in dirs]
    loss = scoring_objective(dirs, scores, m_t=1.0, alpha=0.02)
    grads = torch.autograd.grad(loss.total, list(estimator.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    assert all(g is not None for g in torch.autograd.grad(loss.total, list(scorer.parameters())))


def test_no_gradient_of_displacement_loss_reaches_the_scorer():
    estimator, scorer = _nets()
    moving, fixed = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    deformation = estimator(moving, fixed)
    dirs = directions(moving, fixed, deformation, bidir=True)
    scores = [scorer(d.target) for d in dirs]  # graph through ϕ kept on purpose
    loss = displacement_loss(dirs, deformation, lam=0.01, int_downsize=2, scores=scores)
    grads = torch.autograd.grad(loss.total, list(scorer.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    assert all(g is not None for g in torch.autograd.grad(loss.total, list(estimator.parameters())))


def test_update_steps_leave_the_other_network_untouched():
    estimator, scorer = _nets()
    cfg = tiny_config()
    micro = [(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)) for _ in range(2)]
    scorer_before = {k: v.clone() for k, v in scorer.state_dict().items()}
    displacement_update(estimator, scorer, torch.optim.Adam(estimator.parameters()), micro, cfg)
    assert all(p.grad is None for p in scorer.parameters())
    assert all(torch.equal(v, scorer_before[k]) for k, v in scorer.state_dict().items())
    estimator.zero_grad(set_to_none=True)
    estimator_before = {k: v.clone() for k, v in estimator.state_dict().items()}
    scoring_update(estimator, scorer, torch.optim.Adam(scorer.parameters()), micro, 1.0, cfg)
    assert all(p.grad is None for p in estimator.parameters())
    assert all(torch.equal(v, estimator_before[k]) for k, v in estimator.state_dict().items())


def test_scoring_residuals_come_from_the_estimator_as_it_registers():
    """The scoring step reads ``f_θ`` in eval mode (DiffuseMorph's train forward noises its target),
    the displacement step in train mode, and both leave the estimator's mode as they found it."""
    estimator, scorer = _nets()
    cfg = tiny_config()
    micro = [(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))]
    seen: list[bool] = []
    estimator.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    estimator.train()
    scoring_update(estimator, scorer, torch.optim.Adam(scorer.parameters()), micro, 1.0, cfg)
    assert seen == [False] and estimator.training
    displacement_update(estimator, scorer, torch.optim.Adam(estimator.parameters()), micro, cfg)
    assert seen == [False, True] and estimator.training


def test_m_t_follows_the_recurrence_of_the_logged_means(pairs, tmp_path):
    cfg = tiny_config(steps_per_epoch=3)
    history = train(cfg, pairs, tmp_path / "run").history
    m_t = 0.0
    for record in history:
        for point in record["trace"]:
            if record["phase"] == PHASE_WARMUP_SCORING:
                assert point["m_t"] == m_t  # frozen while only the scoring network trains
                continue
            m_t = momentum_update(m_t, point["mu"], record["epoch"], cfg.kappa, cfg.beta)
            assert point["m_t"] == pytest.approx(m_t, rel=1e-12)
    assert history[-1]["m_t"] == pytest.approx(m_t)


class Interrupt(Exception):
    pass


def interrupt_after_epoch(cfg, pairs, out: Path, epoch: int) -> None:
    """Train ``cfg`` into ``out`` and stop it (as a killed worker would) once epoch ``epoch`` is saved."""
    def stop(event):
        if event.kind == "epoch" and event.epoch == epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, pairs, out, callback=stop)


def test_interrupted_and_resumed_run_equals_uninterrupted(pairs, tmp_path):
    cfg = tiny_config()
    full = train(cfg, pairs, tmp_path / "full")

    interrupt_after_epoch(tiny_config(), pairs, tmp_path / "resumed", 1)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints")["epoch"] == 2
    resumed = train(tiny_config(), pairs, tmp_path / "resumed")
    full_state, resumed_state = full.estimator.state_dict(), resumed.estimator.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    for a, b in zip(full.history, resumed.history):
        assert a["loss_de" if "loss_de" in a else "loss_se"] == b["loss_de" if "loss_de" in b else "loss_se"]
        assert a["m_t"] == b["m_t"]


def test_resume_refuses_different_settings(pairs, tmp_path):
    train(tiny_config(epochs=0, lr=1e-4), pairs, tmp_path / "run")
    with pytest.raises(ValueError, match="lr: checkpoint 0.0001 vs now 0.001"):
        train(tiny_config(lr=1e-3), pairs, tmp_path / "run")


def test_config_errors_name_the_setting(pairs, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        train(tiny_config(method="magic"), pairs, tmp_path)
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        train(tiny_config(batch_size=5), pairs, tmp_path)


def test_training_beats_identity_on_phantoms(tmp_path):
    """Accuracy floor: a few dozen updates must clearly improve on no registration."""
    train_pairs = make_phantom_dataset(PhantomConfig(size=48, n=32, seed=0))
    val_pairs = make_phantom_dataset(PhantomConfig(size=48, n=8, seed=1))
    cfg = tiny_config(method="none", warmup_epochs=0, epochs=6, steps_per_epoch=10, batch_size=8,
                      micro_batch_size=8, lr=1e-3, estimator=EstimatorConfig(enc=(16, 32, 32), dec=(32, 32, 32, 16)))
    history = train(cfg, train_pairs, tmp_path, val_pairs=val_pairs).history
    from models.inference import warp_labels  # identity Dice, computed the same way as validation
    from models.metrics import dice

    identity = np.mean([dice(p.moving_mask == 2, p.fixed_mask == 2) for p in val_pairs])
    assert warp_labels(val_pairs[0].moving_mask, torch.zeros(2, 48, 48)).tolist() == \
        val_pairs[0].moving_mask.tolist()
    assert history[-1]["val_dice"] > identity + 10, (identity, [h["val_dice"] for h in history])
    assert history[-1]["val_folding_pct"] < 1.0


def test_adacs_trains_in_3d(tmp_path):
    from models.inference import predict_disp, stack_pairs
    from models.warp import warp

    pairs = make_phantom_dataset(PhantomConfig(dims=3, size=24, n=4, seed=0))
    cfg = tiny_config(steps_per_epoch=1)
    result = train(cfg, pairs, tmp_path, val_pairs=pairs[:2])
    assert [h["phase"] for h in result.history][-1] == PHASE_ALTERNATING
    assert result.estimator.flow.weight.shape[:2] == (3, 8)  # a 3-channel field from 3D convolutions
    # Better than no registration. Two updates move the field by less than the half voxel that would
    # change a nearest-neighbour warped mask (val Dice stays the identity's), so the image term the
    # estimator trains on is the measure: 0.987 of the identity's when written.
    moving, fixed = stack_pairs(pairs[:2], cfg.intensity)
    warped = warp(moving, predict_disp(result.estimator, moving, fixed))
    assert ((warped - fixed) ** 2).mean() < 0.995 * ((moving - fixed) ** 2).mean()
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_interrupted_and_resumed_nll_run_equals_uninterrupted(pairs, tmp_path):
    """A method with an auxiliary network (NLL's variance U-Net and its Adam) resumes bit for bit too."""
    cfg = lambda: tiny_config(method="nll", epochs=2)  # noqa: E731  3 displacement epochs
    full = train(cfg(), pairs, tmp_path / "full")

    interrupt_after_epoch(cfg(), pairs, tmp_path / "resumed", 1)
    resumed = train(cfg(), pairs, tmp_path / "resumed")
    full_state, resumed_state = full.estimator.state_dict(), resumed.estimator.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    full_aux, resumed_aux = (load_checkpoint(tmp_path / run / "checkpoints")["auxiliary"]
                             for run in ("full", "resumed"))
    assert all(torch.equal(full_aux[k], resumed_aux[k]) for k in full_aux)
    assert [h["loss_de"] for h in full.history] == [h["loss_de"] for h in resumed.history]
    assert [h["log_var_mean"] for h in full.history] == [h["log_var_mean"] for h in resumed.history]


def test_a_checkpoint_from_before_the_baselines_still_resumes(pairs, tmp_path):
    """Checkpoints written before the baselines existed lack their settings and networks: they resume."""
    full = train(tiny_config(), pairs, tmp_path / "full")

    interrupt_after_epoch(tiny_config(), pairs, tmp_path / "old", 1)
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    for key in ("auxiliary", "opt_auxiliary"):
        del state[key]
    for key in ("beta_nll", "adareg_sigma", "adaframe_a", "adaframe_b", "auxiliary_lr"):
        del state["train_config"][key]
    torch.save(state, path)
    resumed = train(tiny_config(), pairs, tmp_path / "old")
    full_state, resumed_state = full.estimator.state_dict(), resumed.estimator.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


@pytest.mark.parametrize(("int_steps", "factor"), [(0, 1), (7, 2)])
def test_smoothness_is_scaled_by_int_downsize_only_where_the_estimator_uses_it(int_steps, factor):
    """With ``int_steps = 0`` the estimator's flow is the full-resolution displacement (``int_downsize``
    unused), so ``R(u)`` must not be doubled; with integration it is the SPEC's ``× int_downsize``."""
    config = replace(TINY, ndim=2, int_steps=int_steps, int_downsize=2)
    torch.manual_seed(0)
    estimator = build_estimator(config)
    micro = [(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))]
    with torch.no_grad():
        vel = estimator(*micro[0]).vel
    assert vel.shape[-1] == 32 // factor  # the velocity's grid: full resolution without integration
    logs = displacement_update(estimator, None, torch.optim.Adam(estimator.parameters()), micro,
                               tiny_config(estimator=config))
    assert logs["smooth"] == pytest.approx(mean_squared_gradient(vel).item() * factor, rel=1e-5)


def test_warmup_warning_only_when_val_dice_has_not_left_the_identity():
    cfg = tiny_config(warmup_epochs=3)
    stuck, moved = {"val_dice": 60.5}, {"val_dice": 61.5}
    assert warmup_warnings(2, 5, cfg, moved, identity=60.0, updates=6) == []
    assert warmup_warnings(1, 5, cfg, stuck, identity=60.0, updates=4) == []  # not the warm-up's end
    assert warmup_warnings(2, 5, cfg, {}, identity=None, updates=6) == []  # nothing to compare with
    (warning,) = warmup_warnings(2, 5, cfg, stuck, identity=60.0, updates=6)
    assert "60.50 %" in warning and "identity's 60.00 %" in warning and "after the warm-up (6 updates)" in warning
    (warning,) = warmup_warnings(4, 5, tiny_config(warmup_epochs=0), stuck, identity=60.0, updates=10)
    assert "after training" in warning


def test_a_run_that_cannot_move_is_warned_in_progress_and_card(pairs, tmp_path):
    import json

    events: list[ProgressEvent] = []
    cfg = tiny_config(method="none", lr=1e-12, warmup_epochs=1, epochs=1)
    train(cfg, pairs, tmp_path, val_pairs=pairs[:4], callback=events.append)
    first_epoch = [e for e in events if e.epoch == 0]
    assert all(e.warnings == [] for e in first_epoch if e.kind == "step")  # not before it is known
    assert len(first_epoch[-1].warnings) == 1 and "has not left the identity" in first_epoch[-1].warnings[0]
    assert all(e.warnings == first_epoch[-1].warnings for e in events if e.epoch == 1)  # and it stays
    card = json.loads((tmp_path / "model" / "card.json").read_text(encoding="utf-8"))
    assert card["warnings"] == first_epoch[-1].warnings
    assert card["validation"]["val_dice"] == pytest.approx(card["validation"]["val_dice_identity"], abs=0.01)


def test_training_defaults_come_from_one_place():
    """The trainer's, the CLI's and the API's defaults are one set (models/defaults.py)."""
    from dataclasses import fields

    from models.defaults import TRAIN_DEFAULTS, default_micro_batch_size
    from service.api.schemas import TrainingHyperparameters
    from service.cli import build_parser

    trainer = TrainConfig()
    api = TrainingHyperparameters()
    cli = build_parser().parse_args(["train", "--data", "synthetic", "--out", "x"])
    assert trainer.estimator.arch == api_job_defaults()["architecture"] == cli.arch == TRAIN_DEFAULTS.arch
    assert api_job_defaults()["method"] == TRAIN_DEFAULTS.method
    for f in fields(TRAIN_DEFAULTS):
        expected = getattr(TRAIN_DEFAULTS, f.name)
        if f.name == "arch":
            continue  # the estimator's config holds it (checked above)
        assert getattr(trainer, f.name) == expected, f.name
        if f.name in TrainingHyperparameters.model_fields and f.name != "micro_batch_size":
            assert getattr(api, f.name) == (list(expected) if isinstance(expected, tuple) else expected), f.name
        if hasattr(cli, f.name) and f.name != "micro_batch_size":
            assert getattr(cli, f.name) == expected, f.name
    assert default_micro_batch_size(trainer.batch_size) == trainer.micro_batch_size
    # The measured recipe of issue 12: 1000 displacement updates at lr 1e-3, the scoring net at 1e-4.
    assert (trainer.lr, trainer.scoring_lr) == (1e-3, 1e-4)
    assert (2 * trainer.warmup_epochs) * trainer.steps_per_epoch == 1000
    assert (trainer.warmup_epochs + trainer.epochs) * trainer.steps_per_epoch == 1000


def test_cosine_schedule_known_answers():
    assert [lr_factor(k, 4, "cosine") for k in (0, 2, 4, 9)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert lr_factor(3, 4, "constant") == 1.0
    cfg = tiny_config(warmup_epochs=2, epochs=2, steps_per_epoch=3)  # AdaCS: 2 disp, 2 scoring-only, 2 alternating
    assert displacement_updates(cfg) == 12
    assert [displacement_updates_before(e, 0, cfg) for e in range(6)] == [0, 3, 6, 6, 6, 9]
    assert displacement_updates_before(5, 2, cfg) == 11  # the last one
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        tiny_config(lr_schedule="step").validate()


@pytest.mark.parametrize("method", ["adacs", "none"])
def test_cosine_schedule_sets_each_update_and_survives_a_resume(pairs, tmp_path, method):
    """The rate of every update is lr·factor of its position; a resumed run continues the curve exactly."""
    cfg = tiny_config(method=method, lr_schedule="cosine", lr=1e-3)
    full = train(cfg, pairs, tmp_path / "full")
    state = load_checkpoint(tmp_path / "full" / "checkpoints")
    last = displacement_updates(cfg) - 1
    assert state["opt_de"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * lr_factor(last, last + 1, "cosine"))

    interrupt_after_epoch(replace(cfg), pairs, tmp_path / "resumed", 0)
    resumed = train(replace(cfg), pairs, tmp_path / "resumed")
    assert all(torch.equal(a, b) for a, b in zip(full.estimator.state_dict().values(),
                                                 resumed.estimator.state_dict().values()))
    constant = train(replace(cfg, lr_schedule="constant"), pairs, tmp_path / "constant")
    assert not all(torch.equal(a, b) for a, b in zip(full.estimator.state_dict().values(),
                                                     constant.estimator.state_dict().values()))


def api_job_defaults() -> dict:
    from service.api.schemas import TrainingJobCreate

    return TrainingJobCreate(dataset_id="d", model_name="m").model_dump()

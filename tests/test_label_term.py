"""Label-assisted training: the soft Dice term, where its gradient goes, and training runs that use it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.data.synthetic import BLOOD_POOL, PhantomConfig, make_phantom_dataset, make_phantom_pair
from models.defaults import SUPERVISIONS, TRAIN_DEFAULTS
from models.losses import one_hot_labels, soft_dice_loss
from models.networks.estimator import Deformation, EstimatorConfig
from models.networks.registry import ARCHITECTURES, build_estimator
from models.networks.scoring import ScoringNet
from models.objectives import SUPERVISION_TERMS, Direction, directions, displacement_loss, label_dice, label_term
from models.trainer import PHASE_WARMUP_SCORING, Batch, TrainConfig, train
from models.training.steps import displacement_update, scoring_update

TINY = EstimatorConfig(enc=(8, 8), dec=(8, 8, 8))
MYO = 2


def tiny_config(**overrides) -> TrainConfig:
    base = TrainConfig(method="adacs", epochs=1, warmup_epochs=1, steps_per_epoch=2, batch_size=4,
                       micro_batch_size=2, estimator=TINY, supervision="labels")
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=8, seed=0))


def _masks(pair) -> tuple[torch.Tensor, torch.Tensor]:
    """A phantom pair's (moving, fixed) label maps as ``(1, 1, H, W)`` integer tensors."""
    return (torch.from_numpy(pair.moving_mask.astype(np.int64))[None, None],
            torch.from_numpy(pair.fixed_mask.astype(np.int64))[None, None])


# --- the pure loss -------------------------------------------------------------------------------------------

def test_soft_dice_known_answers():
    square = torch.zeros(1, 1, 8, 8)
    square[..., 2:6, 2:6] = 1.0
    assert soft_dice_loss(square, square).item() == pytest.approx(0.0, abs=1e-7)  # identical: 0
    disjoint = torch.roll(square, 4, dims=-1)
    assert soft_dice_loss(square, disjoint).item() == 1.0
    half = torch.roll(square, 2, dims=-1)  # 8 of the 16 pixels overlap: Dice 2·8/32
    assert soft_dice_loss(square, half).item() == pytest.approx(0.5)


def test_soft_dice_leaves_out_labels_absent_from_both_masks():
    """A label absent from a sample is not a perfect 1 diluting the others, and nothing present is 0."""
    square = torch.zeros(1, 1, 8, 8)
    square[..., 2:6, 2:6] = 1.0
    half = torch.roll(square, 2, dims=-1)
    empty = torch.zeros_like(square)
    two_channels = soft_dice_loss(torch.cat([square, empty], 1), torch.cat([half, empty], 1))
    assert two_channels.item() == pytest.approx(0.5)
    nothing = torch.zeros(2, 3, 8, 8, requires_grad=True)
    loss = soft_dice_loss(nothing, torch.zeros(2, 3, 8, 8))
    assert loss.item() == 0.0 and loss.requires_grad


def test_one_hot_channels_follow_the_chosen_labels():
    mask = torch.tensor([[0, 1], [2, 3]])[None, None]
    channels = one_hot_labels(mask, (2, 3))
    assert channels.shape == (1, 2, 2, 2)
    assert channels[0, 0].tolist() == [[0, 0], [1, 0]] and channels[0, 1].tolist() == [[0, 0], [0, 1]]


# --- the term on a direction ---------------------------------------------------------------------------------

def test_label_term_is_zero_for_identical_masks_and_the_identity_field():
    pair = make_phantom_pair(PhantomConfig(size=32, seed=0), 0)
    mask = _masks(pair)[1]
    d = Direction(target=None, warped=None, bg=None, disp=torch.zeros(1, 2, 32, 32), source_mask=mask,
                  target_mask=mask)
    assert label_dice(d, (BLOOD_POOL, MYO)).item() == pytest.approx(0.0, abs=1e-6)


def test_label_term_falls_as_a_phantom_pair_is_aligned():
    """Along the path from the identity to the phantom's exact backward field, the term only falls."""
    pair = make_phantom_pair(PhantomConfig(size=64, seed=0, noise=0.0), 0)
    moving_mask, fixed_mask = _masks(pair)
    truth = torch.from_numpy(pair.disp_gt.astype(np.float32))[None]
    values = [label_dice(Direction(target=None, warped=None, bg=None, disp=share * truth, source_mask=moving_mask,
                                   target_mask=fixed_mask), (BLOOD_POOL, MYO)).item()
              for share in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < values[0] / 3, values  # the true field removes most of the disagreement


def test_label_term_needs_the_masks():
    d = Direction(target=None, warped=None, bg=None, disp=torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="needs both masks"):
        label_dice(d, (MYO,))


def test_supervision_names_are_the_ones_the_api_and_cli_offer():
    assert tuple(SUPERVISION_TERMS) == SUPERVISIONS
    assert SUPERVISION_TERMS["none"](0.3, (MYO,)) == ()
    (term,) = SUPERVISION_TERMS["labels"](0.3, (MYO,))
    assert term.name == "label_dice" and term.weight == 0.3


# --- gradients ---------------------------------------------------------------------------------------------

def _nets():
    torch.manual_seed(0)
    return build_estimator(replace(TINY, ndim=2)), ScoringNet(2, TINY.enc, TINY.dec)


def _phantom_batch(n: int = 2, size: int = 32) -> Batch:
    pairs = make_phantom_dataset(PhantomConfig(size=size, n=n, seed=3))
    image = lambda name: torch.from_numpy(np.stack([getattr(p, name) for p in pairs]))[:, None].float()  # noqa: E731
    label = lambda name: torch.from_numpy(np.stack([getattr(p, name) for p in pairs]))[:, None]  # noqa: E731
    return Batch(image("moving"), image("fixed"), label("moving_mask"), label("fixed_mask"))


@pytest.mark.parametrize("bidir", [True, False])
def test_label_term_gradient_reaches_the_estimator(bidir):
    estimator, _ = _nets()
    batch = _phantom_batch()
    deformation = estimator(batch.moving, batch.fixed)
    dirs = directions(batch.moving, batch.fixed, deformation, bidir, batch.masks)
    loss = displacement_loss(dirs, deformation, lam=0.01, int_downsize=2, extras=[label_term((MYO,), 0.3)])
    term = loss.extras["label_dice"]
    names, params = zip(*estimator.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(term, params, allow_unused=True)))
    assert all(g is not None for g in grads.values())
    # From the flow head back to the first convolution: the term trains the whole estimator.
    assert grads["flow.weight"].abs().sum() > 0 and grads[names[0]].abs().sum() > 0
    assert loss.total.item() == pytest.approx(loss.data.item() + 0.01 * loss.smooth.item() + 0.3 * term.item(),
                                              rel=1e-5)


def test_label_term_averages_both_directions_when_bidirectional():
    """The backward direction (fixed mask warped by ``disp_inv``) counts as much as the forward one."""
    estimator, _ = _nets()
    batch = _phantom_batch()
    deformation = estimator(batch.moving, batch.fixed)
    forward, backward = directions(batch.moving, batch.fixed, deformation, True, batch.masks)
    assert torch.equal(backward.source_mask, batch.fixed_mask) and backward.disp is deformation.disp_inv
    loss = displacement_loss([forward, backward], deformation, 0.01, 2, extras=[label_term((MYO,), 1.0)])
    expected = (label_dice(forward, (MYO,)) + label_dice(backward, (MYO,))) / 2
    assert loss.extras["label_dice"].item() == pytest.approx(expected.item())


def test_the_scoring_network_gets_no_gradient_from_the_label_term():
    """The scores weigh the image term only: with a graph through ϕ, the label term leaves ϕ untouched."""
    estimator, scorer = _nets()
    batch = _phantom_batch()
    deformation = estimator(batch.moving, batch.fixed)
    dirs = directions(batch.moving, batch.fixed, deformation, True, batch.masks)
    scores = [scorer(d.target) for d in dirs]  # graph through ϕ kept on purpose
    loss = displacement_loss(dirs, deformation, 0.01, 2, scores, extras=[label_term((MYO,), 0.3)])
    grads = torch.autograd.grad(loss.total, list(scorer.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


def test_the_scoring_update_is_the_same_with_or_without_masks():
    """AdaCS's Eq. 9 step reads no mask: label-assisted AdaCS trains the same scoring network."""
    estimator, scorer = _nets()
    batch = _phantom_batch()
    cfg = tiny_config()
    start = {k: v.clone() for k, v in scorer.state_dict().items()}
    with_masks = scoring_update(estimator, scorer, torch.optim.Adam(scorer.parameters()), [batch], 0.5, cfg)
    after_masks = {k: v.clone() for k, v in scorer.state_dict().items()}
    scorer.load_state_dict(start)
    without = scoring_update(estimator, scorer, torch.optim.Adam(scorer.parameters()),
                             [(batch.moving, batch.fixed)], 0.5, cfg)
    assert with_masks == without
    assert all(torch.equal(after_masks[k], v) for k, v in scorer.state_dict().items())


# --- training ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["adacs", "none"])
def test_label_supervised_training_runs_and_is_recorded(pairs, tmp_path, method):
    import json

    result = train(tiny_config(method=method, labels=(MYO,)), pairs, tmp_path, val_pairs=pairs[:2])
    displacement_epochs = [h for h in result.history if h["phase"] != PHASE_WARMUP_SCORING]
    assert displacement_epochs and all(0.0 <= h["label_dice"] <= 1.0 for h in displacement_epochs)
    assert all("label_dice" not in h for h in result.history if h["phase"] == PHASE_WARMUP_SCORING)
    card = json.loads((tmp_path / "model" / "card.json").read_text(encoding="utf-8"))
    assert card["supervision"]["kind"] == "labels" and card["supervision"]["labels"] == [MYO]
    assert card["supervision"]["label_weight"] == TRAIN_DEFAULTS.label_weight == 0.05
    assert card["hyperparameters"]["supervision"] == "labels" and card["hyperparameters"]["labels"] == [MYO]


def test_default_labels_are_every_foreground_label_of_the_masks(pairs, tmp_path):
    import json

    train(tiny_config(method="none", epochs=0), pairs, tmp_path)
    card = json.loads((tmp_path / "model" / "card.json").read_text(encoding="utf-8"))
    assert card["supervision"]["labels"] == [BLOOD_POOL, MYO] and card["supervision"]["labels_asked"] is None


def test_an_unsupervised_run_is_unchanged_by_the_masks_it_does_not_read(pairs, tmp_path):
    """Same seed, supervision off: bit-identical to a run on pairs without masks (the draws did not move)."""
    unlabelled = [replace(p, moving_mask=None, fixed_mask=None) for p in pairs]
    cfg = tiny_config(method="none", supervision="none")
    a = train(cfg, pairs, tmp_path / "a").estimator.state_dict()
    b = train(cfg, unlabelled, tmp_path / "b").estimator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_dataset_without_masks_is_refused_up_front(pairs, tmp_path):
    unlabelled = [replace(p, moving_mask=None) if i % 2 else p for i, p in enumerate(pairs)]
    with pytest.raises(ValueError, match=r"needs both masks of every training pair, and 4 of 8 have none"):
        train(tiny_config(), unlabelled, tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # refused before anything trained
    with pytest.raises(ValueError, match=r"labels \[7\] are in no training mask"):
        train(tiny_config(labels=(MYO, 7)), pairs, tmp_path)


@pytest.mark.parametrize(("overrides", "words"), [
    ({"supervision": "masks"}, "unknown supervision 'masks'"),
    ({"label_weight": -1.0}, "label_weight must be a finite number > 0"),
    ({"label_weight": float("nan")}, "label_weight must be a finite number > 0"),
    ({"labels": (0, 2)}, "integers >= 1"),
    ({"labels": (2, 2)}, "distinct"),
    ({"labels": ()}, "at least one label"),
    ({"supervision": "none", "labels": (2,)}, "only with supervision 'labels'"),
])
def test_bad_supervision_settings_are_refused(overrides, words):
    with pytest.raises(ValueError, match=words):
        tiny_config(**overrides).validate()


def test_labels_from_a_job_row_list_are_a_tuple():
    assert tiny_config(labels=[1, 2]).labels == (1, 2)
    assert tiny_config(labels=[1, 2]).to_dict()["labels"] == [1, 2]


def test_deformation_without_masks_still_trains_images_only():
    """An extra term list left empty is Eq. 1/2 exactly, whatever the directions carry."""
    estimator, _ = _nets()
    batch = _phantom_batch()
    deformation: Deformation = estimator(batch.moving, batch.fixed)
    plain = displacement_loss(directions(batch.moving, batch.fixed, deformation, True), deformation, 0.01, 2)
    with_masks = displacement_loss(directions(batch.moving, batch.fixed, deformation, True, batch.masks),
                                   deformation, 0.01, 2)
    assert plain.total.item() == with_masks.total.item() and with_masks.extras == {}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_label_term_trains_every_architecture(arch):
    """One displacement update with the label term: logged, and it moves the estimator (any backbone)."""
    config = replace(TINY, arch=arch, ndim=2)
    torch.manual_seed(0)
    estimator = build_estimator(config)
    before = {k: v.clone() for k, v in estimator.state_dict().items()}
    logs = displacement_update(estimator, None, torch.optim.Adam(estimator.parameters(), lr=1e-3),
                               [_phantom_batch()], tiny_config(estimator=config), extras=[label_term((MYO,), 0.3)])
    assert 0.0 < logs["label_dice"] < 1.0
    assert any(not torch.equal(before[k], v) for k, v in estimator.state_dict().items())


def test_label_term_in_3d():
    pair = make_phantom_pair(PhantomConfig(dims=3, size=24, seed=0), 0)  # at 16³ the thin shell is under-resolved
    moving_mask, fixed_mask = _masks(pair)
    identity = Direction(target=None, warped=None, bg=None, disp=torch.zeros(1, 3, 24, 24, 24),
                         source_mask=fixed_mask, target_mask=fixed_mask)
    assert label_dice(identity, (BLOOD_POOL, MYO)).item() == pytest.approx(0.0, abs=1e-6)
    truth = torch.from_numpy(pair.disp_gt.astype(np.float32))[None]
    moved = Direction(target=None, warped=None, bg=None, disp=truth, source_mask=moving_mask, target_mask=fixed_mask)
    unmoved = replace(moved, disp=torch.zeros_like(truth))
    assert label_dice(moved, (BLOOD_POOL, MYO)).item() < 0.8 * label_dice(unmoved, (BLOOD_POOL, MYO)).item()

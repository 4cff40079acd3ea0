"""Training across processes (models/training/distributed.py) on the CPU with gloo: two processes at
half the batch each train what one process trains, a two-process checkpoint resumes in one process,
a cancellation on rank 0 stops every rank, and a failing rank fails the launch with its traceback."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from models.checkpoint import load_checkpoint
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.networks.estimator import EstimatorConfig
from models.trainer import TrainConfig
from models.training.data import sample_micro_batches
from models.training.distributed import Group, check_devices, launch, train_on_devices

# AdaCS (two networks, two optimisers, the alternating update) on a U-Net small enough for seconds;
# lr 1e-2 so that validation Dice moves within the few updates.
CFG = TrainConfig(method="adacs", epochs=1, warmup_epochs=1, steps_per_epoch=3, batch_size=4, micro_batch_size=2,
                  lr=1e-2, scoring_lr=1e-3, estimator=EstimatorConfig(arch="voxelmorph", enc=(8, 8), dec=(8, 8, 8)))
LOGGED = ("loss_de", "data", "smooth", "loss_se", "scs", "reg", "tv", "score_mean", "m_t", "mu")


@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=8, seed=0))


@pytest.fixture(scope="module")
def val_pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=4, seed=1))


@pytest.fixture(scope="module")
def runs(pairs, val_pairs, tmp_path_factory):
    """The same run in one process and in two (batch 4 = 2 × 2 pairs, one micro-batch each)."""
    root = tmp_path_factory.mktemp("ddp")
    return {n: train_on_devices(n, CFG, pairs, root / f"devices{n}", val_pairs=val_pairs) for n in (1, 2)}


def test_two_processes_train_what_one_process_trains(runs):
    one, two = runs[1].history, runs[2].history
    assert [h["phase"] for h in two] == [h["phase"] for h in one] and len(one) == 3
    for a, b in zip(one, two):
        for key in (k for k in LOGGED if a.get(k) is not None):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["epoch"], key)
        assert b["val_dice"] == pytest.approx(a["val_dice"], abs=0.05)
    assert one[-1]["val_dice"] != one[0]["val_dice"]  # validation moved: the comparison means something
    weights1, weights2 = runs[1].estimator.state_dict(), runs[2].estimator.state_dict()
    assert max((weights1[k] - weights2[k]).abs().max().item() for k in weights1) < 1e-5


def test_rank_0_writes_the_bare_modules(runs):
    state = load_checkpoint(runs[2].out_dir / "checkpoints")
    for key in ("estimator", "scorer"):
        assert not any(name.startswith("module.") for name in state[key]), key
    assert state["epoch"] == 3 and state["global_step"] == 9
    assert (runs[2].out_dir / "model" / "card.json").is_file()


def test_a_two_process_checkpoint_resumes_in_one_process(runs, pairs, val_pairs, tmp_path):
    """Two more main epochs from each run's checkpoint, in one process: the same continuation."""
    longer = replace(CFG, epochs=2)
    resumed = {}
    for n in (1, 2):
        shutil.copytree(runs[n].out_dir / "checkpoints", tmp_path / f"from{n}" / "checkpoints")
        resumed[n] = train_on_devices(1, longer, pairs, tmp_path / f"from{n}", val_pairs=val_pairs).history
    assert len(resumed[2]) == 4 and resumed[2][-1]["updates"] == 12
    for key in ("loss_de", "loss_se", "m_t"):
        assert resumed[2][-1][key] == pytest.approx(resumed[1][-1][key], rel=1e-5)
    assert resumed[2][-1]["val_dice"] == pytest.approx(resumed[1][-1]["val_dice"], abs=0.05)


class Cancelled(Exception):
    pass


def test_a_cancellation_on_rank_0_stops_every_rank(pairs, tmp_path):
    def cancel_in_epoch_2(event):
        if event.kind == "step" and event.global_step == 4:
            raise Cancelled("job cancelled")

    with pytest.raises(Cancelled):
        train_on_devices(2, CFG, pairs, tmp_path, callback=cancel_in_epoch_2)
    assert load_checkpoint(tmp_path / "checkpoints")["epoch"] == 1  # the last completed checkpoint
    assert not dist.is_initialized()


def _fail_on_rank_1() -> None:
    if dist.get_rank() == 1:
        raise ValueError("rank one broke")
    dist.barrier()


def test_a_failing_rank_fails_the_launch_with_its_traceback(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the other rank imports this module
    with pytest.raises(RuntimeError, match="rank 1 failed") as error:
        launch(2, "cpu", _fail_on_rank_1, ())
    assert "ValueError: rank one broke" in str(error.value)
    assert not dist.is_initialized()


def test_the_shares_of_a_draw_are_the_one_process_micro_batches(pairs):
    moving = torch.arange(8.0).reshape(8, 1, 1, 1)

    def draw(cfg, rank, world_size):
        micro = sample_micro_batches(torch.Generator().manual_seed(3), moving, moving, cfg, torch.device("cpu"),
                                     shard=(rank, world_size))
        return [batch.moving.flatten().tolist() for batch in micro]

    cfg = replace(CFG, batch_size=8, micro_batch_size=2)
    assert draw(cfg, 0, 2) + draw(cfg, 1, 2) == draw(cfg, 0, 1)  # four micro-batches, two per rank
    assert [len(b) for b in draw(cfg, 0, 4)] == [2]
    cfg = replace(CFG, batch_size=8, micro_batch_size=4)  # 8 pairs over 4 ranks: one micro-batch of 2 each
    shares = [draw(cfg, rank, 4) for rank in range(4)]
    assert [len(s[0]) for s in shares] == [2] * 4 and sum(shares, []) == [sum(draw(cfg, 0, 1), [])[i:i + 2]
                                                                          for i in range(0, 8, 2)]


def test_devices_are_checked_before_anything_starts():
    with pytest.raises(ValueError, match="batch_size 6 must be a multiple of devices 4"):
        check_devices(4, 6, "cpu")
    with pytest.raises(ValueError, match="devices must be >= 1"):
        check_devices(0, 4, "cpu")
    check_devices(2, 4, "cpu")


def test_one_process_is_a_group_of_one():
    group = Group.current()
    assert group == Group() and group.is_main
    assert group.mean({"loss": 1.5}) == {"loss": 1.5} and group.any(True) and not group.any(False)
    assert group.broadcast("state") == "state" and group.device(torch.device("cuda")) == torch.device("cuda")

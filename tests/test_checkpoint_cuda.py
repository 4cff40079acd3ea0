"""Checkpoints keep the random generators a run draws from, so a resumed run draws what an uninterrupted one would.

DiffuseMorph draws a timestep and noise in every training forward, on the run's device: from torch's
CPU generator on the CPU, from the device's generator on a GPU (models/checkpoint.py saves both). A
tiny DiffuseMorph training is interrupted after its first epoch and resumed, and its draws are held
to the uninterrupted run's, exactly. The CUDA run is marked ``gpu`` and skipped where no CUDA device
is present (the one allowed skip); the CPU run and the unit tests below it run everywhere.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer import Interrupt, tiny_config  # tests/ is on sys.path (rootdir-relative test modules)

from models.checkpoint import load_checkpoint, restore_rng, rng_state
from models.data.synthetic import PhantomConfig, make_phantom_dataset
from models.networks.diffusemorph import DiffusionUNet
from models.networks.estimator import EstimatorConfig
from models.trainer import train

DIFFUSE = EstimatorConfig(arch="diffusemorph", enc=(8, 8), dec=(8, 8, 8), options={"features": [8, 8], "time_dim": 8})
ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def pairs():
    return make_phantom_dataset(PhantomConfig(size=32, n=8, seed=0))


def generator_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


@pytest.fixture
def draws(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every ``(timesteps, noised target)`` DiffuseMorph's diffusion network is given while training,
    on the CPU. Both are elementwise functions of the draws and the data, so they are bit for bit
    reproducible on any device, where the weights a GPU's backward atomics produce are not."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = DiffusionUNet.forward

    def spy(self, moving, target, t):
        if self.training:
            seen.append((t.cpu(), target.detach().cpu()))
        return forward(self, moving, target, t)

    monkeypatch.setattr(DiffusionUNet, "forward", spy)
    return seen


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_GPU)])
def test_a_resumed_diffusemorph_run_draws_the_uninterrupted_runs_noise(device, pairs, draws, tmp_path):
    cfg, dev = tiny_config(method="none", warmup_epochs=0, epochs=2, estimator=DIFFUSE, device=device), \
        torch.device(device)
    after_first_epoch = []

    def remember(event):
        if event.kind == "epoch" and event.epoch == 0:
            after_first_epoch.append(generator_state(dev))

    full = train(cfg, pairs, tmp_path / "full", callback=remember)
    full_draws, full_end = list(draws), generator_state(dev)
    draws.clear()

    def stop_after_first_epoch(event):
        if event.kind == "epoch" and event.epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, pairs, tmp_path / "resumed", callback=stop_after_first_epoch)
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints")["rng"]
    assert set(saved) == ({"sampler", "torch", "cuda"} if device == "cuda" else {"sampler", "torch"})
    assert torch.equal(saved["cuda" if device == "cuda" else "torch"], after_first_epoch[0])
    resumed = train(cfg, pairs, tmp_path / "resumed")

    assert len(full_draws) == len(draws) == 8  # 2 epochs × 2 updates × 2 micro-batches, on each side
    for (t_full, target_full), (t_resumed, target_resumed) in zip(full_draws, draws):
        assert torch.equal(t_full, t_resumed) and torch.equal(target_full, target_resumed)
    assert torch.equal(generator_state(dev), full_end)
    if device == "cpu":  # the CPU's kernels are deterministic, so the weights are equal too
        full_state, resumed_state = full.estimator.state_dict(), resumed.estimator.state_dict()
        assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
        assert [h["loss_de"] for h in full.history] == [h["loss_de"] for h in resumed.history]


def test_rng_state_round_trips_the_cpu_generators():
    sampler = torch.Generator().manual_seed(3)
    state = rng_state(sampler, torch.device("cpu"))
    assert set(state) == {"sampler", "torch"}  # a CPU run saves no CUDA state, and starts no CUDA
    drawn = torch.rand(4), torch.rand(4, generator=sampler)
    restore_rng(state, sampler, torch.device("cpu"))
    again = torch.rand(4), torch.rand(4, generator=sampler)
    assert all(torch.equal(a, b) for a, b in zip(drawn, again))


def test_a_cuda_run_saves_and_restores_its_devices_generator(monkeypatch):
    """The CUDA branch, on any machine: torch.cuda's two calls are recorded instead of made (the GPU
    test above makes them)."""
    calls, cuda_state = [], torch.tensor([7], dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", state, device)))
    sampler, gpu = torch.Generator(), torch.device("cuda", 1)

    state = rng_state(sampler, gpu)
    assert state["cuda"] is cuda_state and calls == [("get", gpu)]
    restore_rng(state, sampler, gpu)
    assert calls[1] == ("set", cuda_state, gpu)
    restore_rng({k: v for k, v in state.items() if k != "cuda"}, sampler, gpu)  # a checkpoint from before
    assert len(calls) == 2  # nothing to restore: the generator keeps what the seed gave it
    rng_state(sampler, torch.device("cpu"))
    restore_rng(state, sampler, torch.device("cpu"))
    assert len(calls) == 2  # a CPU run never asks torch.cuda

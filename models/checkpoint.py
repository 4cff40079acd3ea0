"""Training checkpoints that resume exactly.

One file, ``checkpoints/last.pt``, replaced atomically at the end of every epoch, holding both
networks, both optimisers, the loop state (next epoch, update count, ``m_t``), the history and the
random generators; ``last.json`` beside it repeats the loop state for humans and for the service.
Restoring it at an epoch boundary makes an interrupted run continue bit for bit like an
uninterrupted one (tests/test_trainer.py checks this on the CPU). The generators are the batch
sampler's, torch's CPU one and, for a run on CUDA, that device's: DiffuseMorph draws its timesteps
and noise on the device, so a resumed GPU run would otherwise draw the seed's noise again
(tests/test_checkpoint_cuda.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.io.atomic import atomic_write, write_json_atomic

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "rng_state", "restore_rng"]

CHECKPOINT_NAME = "last.pt"


def save_checkpoint(directory: Path, state: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Replace ``last.pt`` with ``state`` and ``last.json`` with ``summary``, each atomically."""
    with atomic_write(directory / CHECKPOINT_NAME) as handle:
        torch.save(state, handle)
    write_json_atomic(directory / "last.json", summary)
    return directory / CHECKPOINT_NAME


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``directory``, or None when there is none yet."""
    path = directory / CHECKPOINT_NAME
    if not path.is_file():
        return None
    # Only tensors, numbers, strings and containers are stored, so the safe loader suffices.
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(sampler: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The random generators a run draws from: the batch ``sampler``, torch's CPU generator and, for a
    run on a CUDA ``device``, that device's generator. A CPU run saves no CUDA state (and starts no CUDA)."""
    state = {"sampler": sampler.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], sampler: torch.Generator, device: torch.device) -> None:
    """Put the generators back as :func:`rng_state` found them.

    A checkpoint written before CUDA states were saved, or on the CPU, has none: a CUDA run resumed
    from it keeps the generator its seed gave it, the best there is (it was never bit for bit then).
    """
    sampler.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

"""Training checkpoints that resume exactly.

One file, ``checkpoints/last.pt``, replaced atomically at the end of every epoch, holding both
networks, both optimisers, the loop state (next epoch, update count, ``m_t``), the history and the
random generators; ``last.json`` beside it repeats the loop state for humans and for the service.
Restoring it at an epoch boundary makes an interrupted run continue bit for bit like an
uninterrupted one (tests/test_trainer.py checks this).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.artifact import write_json_atomic

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_NAME = "last.pt"


def save_checkpoint(directory: Path, state: dict[str, Any], summary: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_NAME}.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_NAME)
    write_json_atomic(directory / "last.json", summary)
    return directory / CHECKPOINT_NAME


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``directory``, or None when there is none yet."""
    path = directory / CHECKPOINT_NAME
    if not path.is_file():
        return None
    # Only tensors, numbers, strings and containers are stored, so the safe loader suffices.
    return torch.load(path, map_location="cpu", weights_only=True)

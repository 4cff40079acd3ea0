"""Fixtures for the service's state: a migrated database on SQLite *and* PostgreSQL, a store, artifacts.

Each backend's schema is migrated once per session; tests then get a clean copy (a copied SQLite
file, a truncated PostgreSQL database), which keeps the suite fast while every test runs on both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.db import make_engine, make_session_factory
from service.storage import LocalArtifactStore


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def estimator_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The 6 tensors of a 2D VoxelMorph estimator with ``enc=(4,)``, ``dec=(4,)``."""
    rng = np.random.default_rng(seed)
    shapes = {"backbone.down.0.conv.weight": (4, 2, 3, 3), "backbone.down.0.conv.bias": (4,),
              "backbone.up.0.conv.weight": (4, 4, 3, 3), "backbone.up.0.conv.bias": (4,),
              "flow.weight": (2, 8, 3, 3), "flow.bias": (2,)}
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


@pytest.fixture
def tensors() -> dict[str, np.ndarray]:
    """A fresh copy of the tiny estimator's tensors, to edit before ``make_artifact(tensors=...)``."""
    return estimator_tensors()


@pytest.fixture
def make_artifact(tmp_path: Path) -> Callable[..., Path]:
    """``make_artifact(seed=0, tensors=None, config=None, card=None, name=...)`` -> a model artifact folder."""
    counter = iter(range(10**6))

    def make(seed: int = 0, tensors: dict[str, np.ndarray] | None = None, config: dict | None = None,
             card: dict | None = None, metadata: dict[str, str] | None = None) -> Path:
        directory = tmp_path / f"artifact-{next(counter)}"
        directory.mkdir()
        save_file(estimator_tensors(seed) if tensors is None else tensors, str(directory / "model.safetensors"),
                  metadata={"format": "1", "arch": "voxelmorph"} if metadata is None else metadata)
        config = config or {"format": 1, "estimator": {"arch": "voxelmorph", "ndim": 2, "enc": [4], "dec": [4],
                                                       "int_steps": 7, "int_downsize": 2, "options": {}}}
        (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (directory / "card.json").write_text(json.dumps(card or {"method": "adacs", "seed": seed}), encoding="utf-8")
        return directory

    return make

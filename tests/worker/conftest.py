"""Fixtures for the worker: a migrated database (SQLite and PostgreSQL), a tiny registered model,
an image pair made here, and jobs laid out as the API lays them out (``worker.tasks.registration``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.config import Settings
from service.db import Job, JobKind, get_engine, session_scope
from service.registry import promote, register_version
from service.storage import LocalArtifactStore

MODEL = "tiny"
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")


def engine_of(settings: Settings):
    """The engine the worker's code uses for ``settings`` (``get_engine`` caches by its arguments)."""
    return get_engine(settings.database_url, settings.db_busy_timeout_ms)


def _register_model(settings: Settings, model_dir: Path) -> str:
    with session_scope(engine_of(settings)) as session:
        version = register_version(session, LocalArtifactStore(settings.artifact_dir), MODEL, model_dir)
        promote(session, MODEL, version.version, "production")
        return version.sha256


def _create_job(settings: Settings, files: dict[str, Path], **params: Any) -> str:
    job = Job(kind=JobKind.REGISTRATION)
    with session_scope(engine_of(settings)) as session:
        session.add(job)
        session.flush()
        folder = LocalArtifactStore(settings.artifact_dir).job_dir(job.id) / "inputs"
        folder.mkdir()
        for role, path in files.items():
            shutil.copyfile(path, folder / f"{role}.nii.gz")
        job.params = {"model": MODEL, "inputs": {role: f"inputs/{role}.nii.gz" for role in files}} | params
        return job.id


def _load_job(settings: Settings, job_id: str) -> Job | None:
    with session_scope(engine_of(settings)) as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job


@pytest.fixture(scope="session")
def register_model(model_dir: Path) -> Callable[[Settings], str]:
    """``register_model(settings)``: the tiny model as ``tiny`` version 1 in production; its sha256."""
    return lambda settings: _register_model(settings, model_dir)


@pytest.fixture(scope="session")
def create_job(image_pair: dict[str, Path]) -> Callable[..., str]:
    """``create_job(settings, files=None, **params)``: a queued job laid out as the API lays it out
    (``files`` by role under ``job_dir/inputs/``, then the row); ``files`` defaults to the image pair,
    ``params`` override the job's."""
    return lambda settings, files=None, **params: _create_job(settings, files or image_pair, **params)


@pytest.fixture(scope="session")
def load_job() -> Callable[[Settings, str], Job | None]:
    return _load_job


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Iterator[Settings]:
    """Settings on each backend, with heartbeats short enough for a test to see."""
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, heartbeat_interval_s=0.2,
                        progress_min_interval_s=0.0)
    yield settings
    engine_of(settings).dispose()

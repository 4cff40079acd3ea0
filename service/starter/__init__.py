"""The bundled starter model: so that a first registration works before anyone has trained anything.

``acdc-voxelmorph-adacs/`` is a model artifact (config, weights, card) made by
``python -m service.starter.train_starter_model`` (2D VoxelMorph trained with AdaCS on the ACDC
train split; research use only, see its card). :func:`install_starter_model` registers it as
``starter`` version 1 and labels it ``production``, once: a registry that already has a ``starter``
model (the user's own, or the bundled one) is left alone. ``adacs serve`` and the API container call
it after migrating the database.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STARTER_DIR", "STARTER_NAME", "install_starter_model"]

STARTER_DIR = Path(__file__).resolve().parent / "acdc-voxelmorph-adacs"
STARTER_NAME = "starter"


def install_starter_model(settings, name: str = STARTER_NAME, directory: Path = STARTER_DIR) -> str | None:
    """Register the bundled model as ``name`` if the registry has no such model; its ref, or None."""
    from sqlalchemy import select

    from service.db import Model, get_engine, session_scope
    from service.registry import PRODUCTION, promote, register_version
    from service.storage import LocalArtifactStore

    if not directory.is_dir():
        return None
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    with session_scope(engine) as session:
        if session.scalar(select(Model.id).where(Model.name == name)) is not None:
            return None
        version = register_version(session, LocalArtifactStore(settings.artifact_dir), name, directory)
        promote(session, name, version.version, PRODUCTION)
        return version.ref

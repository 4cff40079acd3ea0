"""The bundled starter model: so that a first registration works before anyone has trained anything.

``acdc-2d/`` is a model artifact (config, weights, card) made by
``python -m service.starter.train_starter_model`` (a 2D coarse-to-fine estimator trained on the ACDC
train split; research use only, see its card). :func:`install_starter_model` registers it as the
``starter`` model's next version and labels it ``production``. A registry whose ``starter`` is the
user's own (a production version that was not bundled) is left alone; one whose production starter
is an older bundled version gets the new one, so upgrading the package upgrades the default model.
``adacs serve`` and the API container call it after migrating the database.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STARTER_DIR", "STARTER_NAME", "install_starter_model"]

STARTER_DIR = Path(__file__).resolve().parent / "acdc-2d"
STARTER_NAME = "starter"
# Names of bundles shipped before cards said "bundled": true (the first starter, 0.1.0).
_OLD_BUNDLES = frozenset({"acdc-voxelmorph-adacs"})


def _bundled(card: dict) -> bool:
    return bool(card.get("bundled")) or card.get("name") in _OLD_BUNDLES


def install_starter_model(settings, name: str = STARTER_NAME, directory: Path = STARTER_DIR) -> str | None:
    """Register the bundled model as ``name``'s production version where it belongs; its ref, or None."""
    from service.db import get_engine, session_scope
    from service.registry import PRODUCTION, NotFound, get_model, promote, register_version, resolve
    from service.storage import LocalArtifactStore

    if not directory.is_dir():
        return None
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    with session_scope(engine) as session:
        try:
            get_model(session, name)
        except NotFound:
            current = None  # a fresh registry: install
        else:
            try:
                current = resolve(session, f"{name}@{PRODUCTION}")
            except NotFound:
                return None  # someone took the label off: their choice stands
            if not _bundled(current.card):
                return None  # the operator's own starter
        store = LocalArtifactStore(settings.artifact_dir)
        version = register_version(session, store, name, directory, shared=True)
        if current is not None and current.id == version.id:
            return None  # already installed
        promote(session, name, version.version, PRODUCTION)
        return version.ref

"""service/starter: the bundled model is installed on a fresh registry, upgrades an older bundled
starter, and never replaces an operator's own ``starter`` (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.core.config import Settings
from service.db import get_engine, session_scope
from service.registry import demote, promote, register_version, resolve
from service.starter import STARTER_DIR, install_starter_model
from service.storage import LocalArtifactStore


def bundle(model_dir: Path, folder: Path, **card: object) -> Path:
    """A copy of the tiny artifact whose card says ``card`` (another card: another content address)."""
    shutil.copytree(model_dir, folder)
    data = json.loads((folder / "card.json").read_text()) | card
    (folder / "card.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


def production(settings: Settings) -> str:
    with session_scope(get_engine(settings.database_url)) as session:
        return resolve(session, "starter@production").ref


def test_the_shipped_bundle_is_a_bundled_card():
    card = json.loads((STARTER_DIR / "card.json").read_text())
    assert card["bundled"] is True and "ACDC" in card["data"]["dataset"] and card["inference"]["refine_steps"] > 0


def test_a_fresh_registry_gets_the_bundle_once(settings, model_dir, tmp_path):
    new = bundle(model_dir, tmp_path / "new", bundled=True, name="acdc-2d")
    assert install_starter_model(settings, directory=new) == "starter:1"
    assert install_starter_model(settings, directory=new) is None and production(settings) == "starter:1"


def test_an_older_bundled_starter_is_upgraded(settings, model_dir, tmp_path):
    old = bundle(model_dir, tmp_path / "old", name="acdc-voxelmorph-adacs")  # the 0.1.0 card had no "bundled"
    new = bundle(model_dir, tmp_path / "new", bundled=True, name="acdc-2d")
    assert install_starter_model(settings, directory=old) == "starter:1"
    assert install_starter_model(settings, directory=new) == "starter:2" and production(settings) == "starter:2"


def test_an_operators_own_starter_is_left_alone(settings, model_dir, tmp_path):
    own = bundle(model_dir, tmp_path / "own", name="our-cardiac-model")
    new = bundle(model_dir, tmp_path / "new", bundled=True, name="acdc-2d")
    engine = get_engine(settings.database_url)
    with session_scope(engine) as session:
        register_version(session, LocalArtifactStore(settings.artifact_dir), "starter", own)
        promote(session, "starter", 1)
    assert install_starter_model(settings, directory=new) is None and production(settings) == "starter:1"
    with session_scope(engine) as session:
        demote(session, "starter", "production")
    assert install_starter_model(settings, directory=new) is None  # the label was taken off on purpose
    with session_scope(engine) as session:
        assert [v.version for v in resolve(session, "starter:1").model.versions] == [1]  # nothing added

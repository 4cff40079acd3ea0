"""The API over real HTTP: uvicorn serves ``create_app(settings)`` in a thread, httpx talks to it.

Every module runs on SQLite and on PostgreSQL (``api_db_url`` is a module-scoped parameter; each
PostgreSQL run gets its own fresh database). ``serve(**settings)`` starts a server with those
settings on a free port, on the module's database, and stops it when the module ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi import FastAPI

from service.core.config import Settings
from service.db import make_engine, session_scope, upgrade_database
from service.main import create_app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database for this module: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'adacs.db'}"
    else:
        url = request.getfixturevalue("postgres_database")()
    upgrade_database(url)
    return url


@pytest.fixture(scope="module")
def serve(api_db_url: str, tmp_path_factory: pytest.TempPathFactory,
          live_server: type) -> Iterator[Callable[..., object]]:
    """``serve(api_keys_enabled=True, ...)`` -> a running server with those settings (own data folder).
    ``serve(extend=f)`` calls ``f(app)`` before serving, e.g. to add a route that probes a dependency."""
    with ExitStack() as servers:
        def start(extend: Callable[[FastAPI], None] | None = None, **overrides: object) -> object:
            settings = Settings(**{"data_dir": tmp_path_factory.mktemp("data"), "database_url": api_db_url,
                                   **overrides})
            app = create_app(settings)
            if extend is not None:
                extend(app)
            return servers.enter_context(live_server(app, settings))

        yield start


@pytest.fixture(scope="module")
def serve_tiny_default(serve: Callable[..., object], artifact_dirs: list[Path],
                       zip_folder: Callable[[Path], bytes]) -> Callable[..., object]:
    """``serve_tiny_default(name, **settings)`` -> a server whose default model ``name`` is the first tiny
    artifact, uploaded and promoted over HTTP as a user would, so only a request's inputs can be wrong."""
    def start(name: str, **overrides: object) -> object:
        live = serve(default_model=name, **overrides)
        upload = live.client.post("/v1/models", data={"name": name},
                                  files={"file": ("m.zip", zip_folder(artifact_dirs[0]))})
        assert upload.status_code in (200, 201), upload.text
        promoted = live.client.post(f"/v1/models/{name}/versions/1/promote", json={"stage": "production"})
        assert promoted.status_code == 200, promoted.text
        return live

    return start


@pytest.fixture(scope="module")
def api(serve: Callable[..., object]) -> object:
    """A server with the embedded defaults (no API keys), 1 MiB upload limit."""
    return serve(max_upload_bytes=1024 * 1024)


@pytest.fixture(scope="module")
def db_session(api_db_url: str) -> Iterator[Callable[[], object]]:
    """``with db_session() as session:`` on the module's database (commits at the end of the block)."""
    engine = make_engine(api_db_url)
    yield lambda: session_scope(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def artifact_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny VoxelMorph artifacts (different weights) written by ``models.artifact.save_artifact``."""
    import torch

    from models.artifact import save_artifact
    from models.intensity import IntensityConfig
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import build_estimator

    config, root, dirs = EstimatorConfig(enc=(4, 4), dec=(4, 4, 4)), tmp_path_factory.mktemp("artifacts"), []
    for seed in (0, 1):
        torch.manual_seed(seed)
        dirs.append(save_artifact(root / f"model-{seed}", build_estimator(config), config, IntensityConfig(),
                                  {"method": "adacs", "seed": seed, "data": "synthetic phantoms"},
                                  train_shape=(32, 32)))
    return dirs

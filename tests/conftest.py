"""Fixtures shared by every suite that needs a real service, and the small data those suites share.

``postgres_database`` makes throw-away PostgreSQL databases with random names (``adacs_test_<hex>``)
and drops them when the test session ends, so parallel or interrupted runs never collide. A
PostgreSQL that cannot be reached is a failure, never a skip: set ``ADACS_TEST_POSTGRES_URL`` to an
admin URL, or start the local one with ``bash .ci/services``. ``redis_url`` likewise fails when
Redis is down (``ADACS_TEST_REDIS_URL``, default database 15 so tests never touch database 0).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.io.archive import write_zip, zip_bytes

POSTGRES_ADMIN_ENV = "ADACS_TEST_POSTGRES_URL"
POSTGRES_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_ENV, REDIS_DEFAULT = "ADACS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
TABLES = "stage_assignments, model_versions, models, datasets, jobs, api_keys"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """Call it to get the URL of a fresh, empty PostgreSQL database (dropped at session end)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin = os.environ.get(POSTGRES_ADMIN_ENV, POSTGRES_ADMIN_DEFAULT)
    try:
        connection = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        problem = str(error)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the report is this message alone
        shown = make_url(admin).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL is unreachable at {shown}: {problem}\nStart it (bash .ci/services) or point "
                    f"{POSTGRES_ADMIN_ENV} at a server where this user may create databases.", pytrace=False)
    created: list[str] = []

    def create() -> str:
        name = f"adacs_test_{secrets.token_hex(6)}"
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return make_url(admin).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; tests copy it instead of migrating again."""
    from service.db import upgrade_database

    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated(postgres_database: Callable[[], str]) -> str:
    from service.db import upgrade_database

    url = postgres_database()
    upgrade_database(url)
    return url


def sqlite_copy(template: Path, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "adacs.db")
    return f"sqlite:///{directory / 'adacs.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each backend."""
    from sqlalchemy import text

    from service.db import make_engine

    if request.param == "sqlite":
        return sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "db")
    url = request.getfixturevalue("postgres_migrated")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path / "db")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get(REDIS_ENV, REDIS_DEFAULT)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        problem = str(error)
    else:
        return url
    pytest.fail(f"Redis is unreachable at {url}: {problem}\nStart it (bash .ci/services) or point {REDIS_ENV} "
                "at one.", pytrace=False)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2D VoxelMorph artifact whose flow head is large enough to move the mask visibly."""
    import torch

    from models.artifact import save_artifact
    from models.intensity import IntensityConfig
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import build_estimator

    torch.manual_seed(0)
    config = EstimatorConfig(enc=(4, 4), dec=(4, 4, 4))
    estimator = build_estimator(config)
    with torch.no_grad():  # a fresh head predicts (almost) the identity: a weak test of equal outputs
        estimator.flow.weight.normal_(0.0, 0.3)
        estimator.flow.bias.copy_(torch.tensor([1.0, -0.75]))  # a shift of a few voxels, plus variation
    return save_artifact(tmp_path_factory.mktemp("model") / "tiny", estimator, config, IntensityConfig(),
                         {"method": "adacs", "data": "none: random weights for tests"}, train_shape=(32, 32),
                         train_spacing_mm=(1.5, 1.5))


@pytest.fixture(scope="session")
def image_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32×32 phantom pair and its masks as NIfTI, on an oblique, anisotropic grid."""
    from models.data.synthetic import PhantomConfig, make_phantom_pair

    pair = make_phantom_pair(PhantomConfig(size=32, seed=3), 0)
    directory = tmp_path_factory.mktemp("pair")
    paths = {}
    for role in ROLES:
        image = sitk.GetImageFromArray(getattr(pair, role))
        image.SetSpacing((1.5, 1.2))
        image.SetOrigin((4.0, -2.0))
        image.SetDirection((0.0, 1.0, -1.0, 0.0))
        paths[role] = directory / f"{role}.nii.gz"
        sitk.WriteImage(image, str(paths[role]))
    return paths


def _write_series(array: np.ndarray, spacing, folder: Path, uid: str) -> None:
    folder.mkdir()
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[0]):
        slice_ = image[:, :, z]
        for tag, value in (("0020|000e", uid), ("0008|0060", "MR"), ("0020|0013", str(z + 1)),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
                           ("0018|0050", str(spacing[2]))):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def write_dicom_series_zip(array: np.ndarray, spacing, path: Path,
                           uids=("1.2.826.0.1.3680043.2.1125.1.1",)) -> Path:
    """A DICOM zip the way a PACS export looks (one file per slice), one folder per series."""
    for n, uid in enumerate(uids):
        _write_series(array, spacing, path.parent / f"dicom{n}", uid)
    members = {f"series{n}/{file.name}": file.read_bytes() for n in range(len(uids))
               for file in sorted((path.parent / f"dicom{n}").iterdir())}
    write_zip(path, members=members, compression=zipfile.ZIP_STORED)
    return path


@pytest.fixture(scope="session")
def dicom_zip() -> Callable[..., Path]:
    """:func:`write_dicom_series_zip`, for tests in any folder (conftest modules are not importable)."""
    return write_dicom_series_zip


@pytest.fixture(scope="session")
def model_zip(model_dir: Path) -> bytes:
    """The tiny model's artifact zipped, as ``POST /v1/models`` takes it."""
    return zip_bytes(model_dir, compression=zipfile.ZIP_STORED)


class LiveServer:
    """uvicorn on 127.0.0.1:<free port> in a daemon thread; ``client`` talks to it over real HTTP."""

    def __init__(self, app, settings=None, timeout: float = 30.0) -> None:
        import uvicorn

        self.settings = settings
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))  # the kernel picks a free port; no race with other runs
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.timeout = timeout
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start (see the log above)")
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=self.timeout)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@pytest.fixture(scope="session")
def live_server() -> type[LiveServer]:
    """:class:`LiveServer`, for tests in any folder (conftest modules are not importable)."""
    return LiveServer


def _write_manifest_dataset(folder: Path, n_pairs: int = 8, size: int = 32, seed: int = 5) -> Path:
    """Phantom pairs as NIfTI files plus ``manifest.csv`` (two pairs per subject) in ``folder``."""
    from models.data.synthetic import PhantomConfig, make_phantom_pair

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["fixed,moving,fixed_mask,moving_mask,id,subject"]
    for index in range(n_pairs):
        pair = make_phantom_pair(PhantomConfig(size=size, seed=seed), index)
        names = {}
        for role in ROLES:
            image = sitk.GetImageFromArray(getattr(pair, role))
            image.SetSpacing((1.5, 1.5))
            names[role] = f"images/pair{index:02d}_{role}.nii.gz"
            (folder / "images").mkdir(exist_ok=True)
            sitk.WriteImage(image, str(folder / names[role]))
        rows.append(f"{names['fixed']},{names['moving']},{names['fixed_mask']},{names['moving_mask']},"
                    f"pair{index:02d},subject{index // 2:02d}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small training set as users upload it: a zip of a folder with a manifest and 8 phantom pairs."""
    return zip_bytes(_write_manifest_dataset(tmp_path_factory.mktemp("dataset") / "study"), prefix="study/")


@pytest.fixture(scope="session")
def manifest_dataset() -> Callable[..., Path]:
    """``manifest_dataset(folder, n_pairs=8, size=32)`` writes a phantom manifest dataset into ``folder``."""
    return _write_manifest_dataset


@pytest.fixture(scope="session")
def zip_folder() -> Callable[..., bytes]:
    """``zip_folder(folder, prefix="", members={name: bytes})`` -> the zip bytes of every file under
    ``folder`` (recursively), then of the extra members: :func:`models.io.archive.zip_bytes`, for tests
    in any folder (conftest modules are not importable)."""
    return zip_bytes


class WorkerProcess:
    """A real Celery worker subprocess (``--pool solo`` unless ``pool`` says ``(name, concurrency)``) in its
    own process group, logging to a file.

    ``kill()`` SIGKILLs the whole group, as a lost machine would; ``stop()`` asks it to finish. With
    ``beat=True`` it also runs Celery beat (the reaper's schedule), as ``adacs serve`` does.
    """

    def __init__(self, env: dict[str, str], queues: list[str], log: Path, beat: bool = False,
                 pool: tuple[str, int] = ("solo", 1)) -> None:
        import subprocess
        import sys

        root = Path(__file__).resolve().parents[1]
        self.log = log
        command = [sys.executable, "-m", "celery", "--app", "worker.celery_app:app", "worker", "--queues",
                   ",".join(queues), "--pool", pool[0], "--concurrency", str(pool[1]), "--hostname",
                   f"{queues[0]}-{secrets.token_hex(3)}@%h", "--loglevel", "INFO", "--without-gossip",
                   "--without-mingle", "--without-heartbeat"]
        if beat:
            command += ["--beat", "--schedule", str(log.with_suffix(".beat"))]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")}
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(command, cwd=root, env=clean | env, stdout=handle,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def kill(self) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        import signal
        import subprocess

        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def _worker_processes() -> Iterator[Callable[..., WorkerProcess]]:
    """``start(env, queues, log, beat=False, pool=("solo", 1))`` starts a :class:`WorkerProcess`; all stop at
    teardown."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], queues: list[str], log: Path, beat: bool = False,
              pool: tuple[str, int] = ("solo", 1)) -> WorkerProcess:
        started.append(WorkerProcess(env, queues, log, beat, pool))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


worker_process = pytest.fixture(_worker_processes)  # workers of one test
module_worker_process = pytest.fixture(scope="module")(_worker_processes)  # workers shared by a module


@pytest.fixture(scope="module")
def registration_stack(redis_url: str, model_zip: bytes, live_server, module_worker_process) -> Callable:
    """``registration_stack(data, url, model, env=None, pool=("solo", 1))``: a context manager that serves the API
    on ``url`` (a database) with one worker on a fresh Redis queue, uploads the tiny model as ``model``
    and promotes it; the server it yields has ``worker``. The queue's keys go when it exits.

    The worker gets as many torch threads as this process (the same kernels as ``adacs register``
    here, so the same sums); ``env`` adds to its environment, ``pool`` is ``(name, concurrency)``.
    """
    import torch

    from service.core.config import Settings
    from service.db import upgrade_database
    from service.main import create_app

    @contextmanager
    def serve(data: Path, url: str, model: str, env: dict[str, str] | None = None,
              pool: tuple[str, int] = ("solo", 1)) -> Iterator:
        import redis

        upgrade_database(url)
        queue = f"inference-e2e-{secrets.token_hex(6)}"
        settings = Settings(data_dir=data / "data", database_url=url, broker_url=redis_url, default_model=model)
        worker = module_worker_process(
            {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": url, "ADACS_BROKER_URL": redis_url,
             "ADACS_ARTIFACT_DIR": str(settings.artifact_dir),
             "ADACS_WORKER_TORCH_THREADS": str(torch.get_num_threads())} | (env or {}),
            [queue], data / "worker.log", pool=pool)
        try:
            with live_server(create_app(settings, inference_queue=queue), settings, timeout=60) as server:
                response = server.client.post("/v1/models", data={"name": model},
                                              files={"file": ("model.zip", model_zip)})
                assert response.status_code == 201, response.text
                response = server.client.post(f"/v1/models/{model}/versions/1/promote", json={"stage": "production"})
                assert response.status_code == 200, response.text
                server.worker = worker
                yield server
        finally:
            worker.stop()
            redis.Redis.from_url(redis_url).delete(queue, f"_kombu.binding.{queue}",
                                                   f"_kombu.binding_permanent.{queue}")

    return serve

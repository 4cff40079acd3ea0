"""Settings of the API process and the worker, read from ``ADACS_*`` environment variables.

Both processes build one :class:`Settings` through :func:`get_settings`, which is cached but never
called at import time: tests (and FastAPI's ``dependency_overrides``) can set the environment or
clear the cache first, as in the FastAPI docs' "Settings in a dependency". Every default gives the
embedded mode (SQLite, a local artifact directory, a broker that needs no server), all under
``data_dir``; compose overrides them with PostgreSQL, Redis and a shared volume.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

MiB = 1024 * 1024


class Settings(BaseSettings):
    """All knobs of the service. ``database_url``, ``artifact_dir`` and ``broker_url`` default to
    places under ``data_dir`` and are always set after validation."""

    model_config = SettingsConfigDict(env_prefix="ADACS_", extra="ignore", validate_default=True)

    # Where things live.
    data_dir: Path = Field(Path("adacs-data"), description="root of the embedded mode's state")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/adacs.db")
    artifact_dir: Path | None = Field(None, description="artifact store root; default DATA_DIR/artifacts")
    broker_url: str | None = Field(None, description="Celery broker; default kombu's filesystem transport")
    # The job row is the truth (DESIGN "Jobs survive crashes"), so no Celery result backend is needed.
    result_backend: str | None = Field(None, description="Celery result backend; none by design")

    # Access and input limits (the API answers 4xx past them).
    api_keys_enabled: bool = Field(False, description="require an API key with the right scope")
    max_upload_bytes: int = Field(512 * MiB, gt=0, description="largest accepted upload, in bytes")
    max_voxels: int = Field(512**3, gt=0, description="largest accepted image, in voxels")
    max_cine_frames: int = Field(64, gt=1, le=1000, description="most frames one cine registration may have")
    max_dataset_bytes: int = Field(8 * 1024 * MiB, gt=0, description="largest accepted dataset zip")
    default_model: str = Field("starter", description="model reference used when a request names none")
    max_training_steps: int = Field(200_000, gt=0, description="most optimiser updates one training job may ask "
                                                                "for ((2 x warmup_epochs + epochs) x steps_per_epoch)")
    max_active_trainings_per_owner: int = Field(4, gt=0, description="unfinished training jobs one key may have")

    # Jobs (DESIGN "Jobs survive crashes"); short in tests.
    inference_queue: str = Field("inference", min_length=1, description="Celery queue of registrations")
    training_queue: str = Field("training", min_length=1, description="Celery queue of training jobs")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="how often a running job writes its heartbeat")
    progress_min_interval_s: float = Field(0.5, ge=0, description="throttle between progress writes")
    heartbeat_stale_s: float = Field(120.0, gt=0, description="a running job silent this long is re-enqueued")
    reaper_interval_s: float = Field(30.0, gt=0, description="how often the reaper looks for stale jobs")
    max_attempts: int = Field(3, ge=1, description="deliveries of one job before it is marked failed")
    # Above the longest training: the broker must not redeliver a job that is still running.
    visibility_timeout_s: int = Field(12 * 3600, gt=0, description="broker visibility timeout")
    registration_time_limit_s: int = Field(15 * 60, gt=0, description="hard limit of one registration")
    training_time_limit_s: int = Field(11 * 3600, gt=0, description="hard limit of one training job")
    # A broker that lost its data (Redis restarted without persistence) must lose no job: the reaper
    # sends a job again when it has sat queued this long since its last message (worker.reaper).
    queued_resend_s: float = Field(600.0, gt=0, description="a job queued this long since its last message is "
                                                            "sent again")
    # Retention (service.retention), a Celery beat task like the reaper.
    job_retention_days: int = Field(30, ge=0, description="days after it finished that a job's inputs and outputs "
                                                         "are removed (the row stays, marked expired); 0: never")
    orphan_grace_s: float = Field(24 * 3600.0, gt=0, description="folders with no row (an interrupted upload) "
                                                                "untouched this long are removed")
    retention_interval_s: float = Field(3600.0, gt=0, description="how often retention runs")

    db_busy_timeout_ms: int = Field(30_000, ge=0, description="SQLite: how long a writer waits for the lock")

    @model_validator(mode="after")
    def _derive_locations(self) -> Settings:
        """Fill the locations left unset from ``data_dir`` (absolute, so workers agree with the API)."""
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'adacs.db'}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        self.artifact_dir = self.artifact_dir.expanduser().resolve()
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        if self.training_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed training_time_limit_s "
                f"({self.training_time_limit_s}), or the broker redelivers trainings that are still running")
        return self

    @property
    def broker_dir(self) -> Path:
        """Folder of kombu's filesystem transport (embedded mode only)."""
        return self.data_dir / "broker"

    def ensure_directories(self) -> None:
        """Create the embedded mode's folders, owner-only (kombu's filesystem transport needs them to exist)."""
        from service.core.privacy import make_private_dir

        assert self.artifact_dir is not None  # set by _derive_locations
        for path in (self.data_dir, self.artifact_dir, self.broker_dir, self.broker_dir / "queue",
                     self.broker_dir / "control"):
            make_private_dir(path)

    def broker_transport_options(self) -> dict[str, Any]:
        """Celery's ``broker_transport_options`` for ``broker_url``.

        The filesystem transport takes its folders here, not in the URL; Redis takes the
        visibility timeout, which must outlast the longest job (DESIGN "Jobs survive crashes").
        """
        options: dict[str, Any] = {"visibility_timeout": self.visibility_timeout_s}
        if (self.broker_url or "").startswith("filesystem"):
            queue = str(self.broker_dir / "queue")
            options |= {"data_folder_in": queue, "data_folder_out": queue,
                        "control_folder": str(self.broker_dir / "control"), "store_processed": False}
        return options


@lru_cache
def get_settings() -> Settings:
    """The process's settings, built on first use. Tests call ``get_settings.cache_clear()``."""
    return Settings()

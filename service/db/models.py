"""SQL tables shared by the API process and the worker: jobs, datasets, the model registry, API keys.

These are storage classes only. API request/response schemas live apart (``XCreate``,
``XPublic``), because the worker writes the job table too and must not depend on the web layer.
JSON columns are replaced, not mutated in place (``job.progress = {...}``), so changes are saved.
The migration ``migrations/versions/0001_initial.py`` creates exactly these tables; a test compares
the two.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base, UTCDateTime, str_enum, utcnow

__all__ = ["JobKind", "JobStatus", "DatasetLayout", "DatasetStatus", "Job", "Dataset", "Model", "ModelVersion",
           "StageAssignment", "ApiKey", "new_id"]


def new_id() -> str:
    """A random UUID as text: ids are made by whoever creates the row, API or worker, without a round trip."""
    return str(uuid.uuid4())


class JobKind(str, enum.Enum):
    REGISTRATION = "registration"
    TRAINING = "training"
    CINE = "cine"


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class DatasetLayout(str, enum.Enum):
    ACDC = "acdc"
    CAMUS = "camus"
    MANIFEST = "manifest"


class DatasetStatus(str, enum.Enum):
    PENDING = "pending"  # uploaded, not yet checked
    READY = "ready"
    FAILED = "failed"  # ``error`` says why


class ApiKey(Base):
    """A client's key: only its SHA-256 is stored (see ``service.core.security``)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # "register" and/or "train"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Job(Base):
    """One registration or training. The row is the truth: the broker's message carries only ``id``.

    A running job refreshes ``heartbeat_at`` (with ``progress``); the reaper re-enqueues a running
    job whose heartbeat is older than ``heartbeat_stale_s`` and fails it after ``max_attempts``.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
                      Index("ix_jobs_status_finished_at", "status", "finished_at"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[JobKind] = mapped_column(str_enum(JobKind, "job_kind"))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # artifact locations and metrics
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    worker: Mapped[str | None] = mapped_column(String(255))  # who holds it: "host:pid", for operators
    owner_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by retention once the job's inputs and outputs are gone (migration 0003).
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Dataset(Base):
    """An uploaded training set (a zip in the artifact store, addressed by ``sha256``)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    layout: Mapped[DatasetLayout] = mapped_column(str_enum(DatasetLayout, "dataset_layout"))
    status: Mapped[DatasetStatus] = mapped_column(str_enum(DatasetStatus, "dataset_status"),
                                                  default=DatasetStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    n_pairs: Mapped[int | None] = mapped_column(Integer)  # known once the layout has been checked
    # What the check found: spec, ndim, n_subjects, shapes, spacing, labelled pairs (migration 0002).
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    storage_key: Mapped[str] = mapped_column(String(255))
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Model(Base):
    """A named model; its versions are immutable, its stages are movable labels.

    ``owner_key_id`` NULL is the operator's shared catalogue (readable by every key); otherwise the
    model is its owner's alone (DESIGN "Who may see what"). No ``ON DELETE``: keys are revoked, and a
    deleted owner must not turn a private model into a shared one.
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="ModelVersion.version")
    stages: Mapped[list[StageAssignment]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="StageAssignment.stage")


class ModelVersion(Base):
    """One immutable, content-addressed artifact directory (config.json, model.safetensors, card.json).

    ``sha256`` is the digest of the store's canonical manifest of the directory; ``version``
    counts up from 1 per model.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(255))
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    owner_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))  # who made it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")

    @property
    def ref(self) -> str:
        """``name:version``, the reference that resolves to exactly this version."""
        return f"{self.model.name}:{self.version}"


class StageAssignment(Base):
    """Label ``stage`` of a model points at one of its versions; at most one version per (model, stage)."""

    __tablename__ = "stage_assignments"
    __table_args__ = (
        UniqueConstraint("model_id", "stage"),
        # The label can only point at a version of the same model; a labelled version cannot vanish.
        ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                             name="fk_stage_assignments_model_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="stages")

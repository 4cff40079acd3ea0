"""The first schema: API keys, jobs, datasets, models, model versions and stage labels.

Every constraint is named here, the way ``service.db.base.NAMING_CONVENTION`` names it in the
models, so that later migrations can alter them by name on SQLite and PostgreSQL alike. Enums are
VARCHAR + CHECK (no PostgreSQL ENUM type to migrate when a status is added).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _choice(table: str, column: str, enum_name: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"ck_{table}_{enum_name}")


def _uuid_id() -> sa.Column:
    """The id of a row the API names: a UUID as text, the same on SQLite and PostgreSQL."""
    return sa.Column("id", sa.String(36), nullable=False)


def _owner_key(table: str) -> tuple[sa.Column, sa.ForeignKeyConstraint]:
    """The API key that created the row; the row outlives the key (SET NULL), as the models say."""
    return (sa.Column("owner_key_id", sa.String(36), nullable=True),
            sa.ForeignKeyConstraint(["owner_key_id"], ["api_keys.id"], name=f"fk_{table}_owner_key_id_api_keys",
                                    ondelete="SET NULL"))


def upgrade() -> None:
    # In dependency order: a table is created after every table its foreign keys point at.
    _create_api_keys()
    _create_jobs()
    _create_datasets()
    _create_models()
    _create_model_versions()
    _create_stage_assignments()


def _create_api_keys() -> None:
    op.create_table(
        "api_keys",
        _uuid_id(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("revoked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        _uuid_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        *_owner_key("jobs"),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        _ts("heartbeat_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        _choice("jobs", "kind", "job_kind", ("registration", "training")),
        _choice("jobs", "status", "job_status", ("queued", "running", "succeeded", "failed", "cancelled")),
    )
    op.create_index("ix_jobs_owner_key_id", "jobs", ["owner_key_id"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    # The reaper's query: running jobs whose heartbeat is older than a cut-off.
    op.create_index("ix_jobs_status_heartbeat_at", "jobs", ["status", "heartbeat_at"])


def _create_datasets() -> None:
    op.create_table(
        "datasets",
        _uuid_id(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("layout", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_pairs", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(255), nullable=False),
        *_owner_key("datasets"),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        _choice("datasets", "layout", "dataset_layout", ("acdc", "camus", "manifest")),
        _choice("datasets", "status", "dataset_status", ("pending", "ready", "failed")),
    )
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])


def _create_models() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )


def _create_model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("source_job_id", sa.String(36), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_versions_model_id_models",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_job_id"], ["jobs.id"], name="fk_model_versions_source_job_id_jobs",
                                ondelete="SET NULL"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    op.create_index("ix_model_versions_sha256", "model_versions", ["sha256"])


def _create_stage_assignments() -> None:
    op.create_table(
        "stage_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stage_assignments"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_stage_assignments_model_id_models",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                                name="fk_stage_assignments_model_version"),
        sa.UniqueConstraint("model_id", "stage", name="uq_stage_assignments_model_id_stage"),
    )


def downgrade() -> None:
    for table in ("stage_assignments", "model_versions", "models", "datasets", "jobs", "api_keys"):
        op.drop_table(table)

"""Owners for the registry, and jobs whose files the retention task has removed.

``models.owner_key_id``: the key a model belongs to; NULL is the operator's shared catalogue (the
starter model, versions an ``admin`` key uploaded), readable by every key. No ``ON DELETE``: a key
that owns models cannot be deleted by accident (keys are revoked, not deleted).
``model_versions.owner_key_id``: the key that made the version (provenance; access follows the model).
``jobs.expired_at``: when retention removed the job's inputs and outputs (the row stays, so a client
learns that its job expired instead of that it never existed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("owner_key_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_models_owner_key_id_api_keys", "api_keys", ["owner_key_id"], ["id"])
        batch.create_index("ix_models_owner_key_id", ["owner_key_id"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("owner_key_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_model_versions_owner_key_id_api_keys", "api_keys", ["owner_key_id"], ["id"],
                                 ondelete="SET NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.create_index("ix_datasets_owner_key_id", ["owner_key_id"])
    # Retention's query: finished jobs by age.
    op.create_index("ix_jobs_status_finished_at", "jobs", ["status", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_finished_at", table_name="jobs")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_index("ix_datasets_owner_key_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expired_at")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("fk_model_versions_owner_key_id_api_keys", type_="foreignkey")
        batch.drop_column("owner_key_id")
    with op.batch_alter_table("models") as batch:
        batch.drop_index("ix_models_owner_key_id")
        batch.drop_constraint("fk_models_owner_key_id_api_keys", type_="foreignkey")
        batch.drop_column("owner_key_id")

"""Cine registrations are jobs of their own kind (``cine``): the CHECK on ``jobs.kind`` admits it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NAME = "ck_jobs_job_kind"


def _kinds(*kinds: str) -> str:
    return "kind IN ({})".format(", ".join(f"'{kind}'" for kind in kinds))


def upgrade() -> None:
    # SQLite cannot alter a constraint: batch mode copies the table with the new CHECK.
    with op.batch_alter_table("jobs", recreate="auto") as batch:
        batch.drop_constraint(_NAME, type_="check")
        batch.create_check_constraint(_NAME, _kinds("registration", "training", "cine"))


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'cine'")
    with op.batch_alter_table("jobs", recreate="auto") as batch:
        batch.drop_constraint(_NAME, type_="check")
        batch.create_check_constraint(_NAME, _kinds("registration", "training"))

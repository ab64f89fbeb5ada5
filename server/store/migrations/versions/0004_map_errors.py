"""Map error history: the map_errors table (the steering output's map error per refit).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
TIME = sa.Double()


def upgrade() -> None:
    op.create_table(
        "map_errors",
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("rms_std", sa.Double(), nullable=False),
        sa.Column("relative", sa.Double(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_map_errors_experiment_id_experiments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("experiment_id", "n", name=op.f("pk_map_errors")),
    )


def downgrade() -> None:
    op.drop_table("map_errors")

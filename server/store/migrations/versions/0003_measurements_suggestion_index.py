"""Index measurements by (experiment_id, suggestion_id).

A tell checks that its suggestion was not answered before, without scanning the
experiment's measurements.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # if_not_exists: a database the first release made with create_all (stamped 0001 on
    # open) has whatever indexes the tables had when it was made
    op.create_index("ix_measurements_experiment_id_suggestion_id", "measurements",
                    ["experiment_id", "suggestion_id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_measurements_experiment_id_suggestion_id", table_name="measurements",
                  if_exists=True)

"""Initial schema: experiments, suggestions, measurements (the first release's create_all).

Revision ID: 0001
Revises:
Create Date: 2026-11-26

A database created by ``metadata.create_all`` before migrations existed has exactly these
tables and is stamped at this revision on open (``server.store.migrate.upgrade``). Like
every revision, this file is a frozen copy of the schema at its time: it never imports
``server.store.schema``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
STATUS = sa.String(length=16)
TIME = sa.Double()
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("model_state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_index(op.f("ix_experiments_created_at"), "experiments", ["created_at"])

    op.create_table(
        "suggestions",
        sa.Column("id", ID, nullable=False),
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("position", sa.JSON(), nullable=False),
        sa.Column("mean", sa.JSON(), nullable=False),
        sa.Column("std", sa.JSON(), nullable=False),
        sa.Column("acquisition", sa.Double(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("batch", ID, nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=True),
        sa.Column("closed_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE",
                                name=op.f("fk_suggestions_experiment_id_experiments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestions")),
    )
    op.create_index("ix_suggestions_experiment_id_status", "suggestions",
                    ["experiment_id", "status"])
    op.create_index(op.f("ix_suggestions_expires_at"), "suggestions", ["expires_at"])

    op.create_table(
        "measurements",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("position", sa.JSON(), nullable=False),
        sa.Column("values_", sa.JSON(), nullable=False),
        sa.Column("noise", sa.JSON(), nullable=False),
        sa.Column("suggestion_id", ID, nullable=True),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE",
                                name=op.f("fk_measurements_experiment_id_experiments")),
        sa.ForeignKeyConstraint(["suggestion_id"], ["suggestions.id"],
                                name=op.f("fk_measurements_suggestion_id_suggestions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
        sa.UniqueConstraint("experiment_id", "key",
                            name=op.f("uq_measurements_experiment_id_key")),
        sa.UniqueConstraint("experiment_id", "seq",
                            name=op.f("uq_measurements_experiment_id_seq")),
    )


def downgrade() -> None:
    op.drop_table("measurements")
    op.drop_index(op.f("ix_suggestions_expires_at"), table_name="suggestions")
    op.drop_index("ix_suggestions_experiment_id_status", table_name="suggestions")
    op.drop_table("suggestions")
    op.drop_index(op.f("ix_experiments_created_at"), table_name="experiments")
    op.drop_table("experiments")

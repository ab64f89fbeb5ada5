"""The store's tables, in one place (SQLAlchemy Core), so that Alembic can take over later.

Times are float UNIX seconds. JSON columns use the plain ``JSON`` type on every backend,
not ``JSONB`` on PostgreSQL: ``JSONB`` reorders object keys, and a position's keys follow
the spec's parameter order, which readers of the data expect to see kept.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa

# Named constraints, so migrations can refer to them by a stable name.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

def new_id() -> str:
    """A short URL-safe random id (72 bits) that never starts with '-' or '_', so that it
    is never taken for an option on a command line (``beamsteer measure -Xq3...``)."""
    while True:
        token = secrets.token_urlsafe(9)
        if token[0].isalnum():
            return token


ID = sa.String(32)  # short URL-safe random ids (secrets.token_urlsafe)
STATUS = sa.String(16)
TIME = sa.Double()
# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only that aliases the rowid and
# autoincrements.
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("created_at", TIME, nullable=False, index=True),
    sa.Column("updated_at", TIME, nullable=False),
    sa.Column("model_state", sa.JSON, nullable=False),
)

suggestions = sa.Table(
    "suggestions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("position", sa.JSON, nullable=False),
    sa.Column("mean", sa.JSON, nullable=False),
    sa.Column("std", sa.JSON, nullable=False),
    sa.Column("acquisition", sa.Double, nullable=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("batch", ID, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("expires_at", TIME, nullable=True, index=True),
    sa.Column("closed_at", TIME, nullable=True),
    # Serves the experiment_id foreign key too (leftmost column), and n_pending counts.
    sa.Index("ix_suggestions_experiment_id_status", "experiment_id", "status"),
)

measurements = sa.Table(
    "measurements",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("position", sa.JSON, nullable=False),
    sa.Column("values_", sa.JSON, nullable=False),  # VALUES is an SQL keyword
    sa.Column("noise", sa.JSON, nullable=False),
    sa.Column("suggestion_id", ID, sa.ForeignKey("suggestions.id"), nullable=True),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    # (experiment_id, seq) also serves the experiment_id foreign key (leftmost column).
    sa.UniqueConstraint("experiment_id", "seq"),
    # NULL keys never collide, so measurements without a key are unconstrained.
    sa.UniqueConstraint("experiment_id", "key"),
    # A tell checks that its suggestion was not answered before (and the foreign key).
    sa.Index("ix_measurements_experiment_id_suggestion_id", "experiment_id", "suggestion_id"),
)

# The steering output's map error after each refit (MapError), so a convergence curve
# drawn late shows the whole run. One row per n: a refit at an n already recorded (another
# API process refitting the same data) replaces it. The primary key also serves the
# experiment_id foreign key (leftmost column).
map_errors = sa.Table(
    "map_errors",
    metadata,
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("rms_std", sa.Double, nullable=False),
    sa.Column("relative", sa.Double, nullable=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.PrimaryKeyConstraint("experiment_id", "n"),
)

# API keys (server/security/keys.py): only the SHA-256 of each secret is stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),  # ["read", "write:measurements"]
    sa.Column("experiments", sa.JSON, nullable=True),  # null: every experiment
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("expires_at", TIME, nullable=True),
    sa.Column("revoked_at", TIME, nullable=True),
    sa.Column("last_used_at", TIME, nullable=True),
    # Every authenticated request looks its key up by hash.
    sa.Index("ix_api_keys_secret_hash", "secret_hash", unique=True),
)

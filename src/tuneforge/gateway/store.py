"""The gateway's durable state in one SQL database (SQLAlchemy Core): API keys, the request log, feedback.

SQLite by default (one machine), PostgreSQL when `database_url` says so; the same tables and queries on both.
Tables are created on first use (`metadata.create_all`), so a fresh database needs no migration step.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),            # the public part of the key
    sa.Column("secret_hash", sa.String(64), nullable=False),          # sha256 of the secret part, hex
    sa.Column("tenant", sa.String(128), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("models", sa.JSON, nullable=False),                     # [] = every route
    sa.Column("rpm", sa.Integer), sa.Column("tpm", sa.Integer), sa.Column("max_parallel", sa.Integer),
    sa.Column("budget_tokens", sa.BigInteger), sa.Column("budget_period", sa.String(8), nullable=False),
    sa.Column("soft_budget", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False), sa.Column("revoked_at", sa.Float),
    sa.Column("rotated_from", sa.String(32)),
)

request_log = sa.Table(
    "request_log", metadata,
    sa.Column("response_id", sa.String(96), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("tenant", sa.String(128), nullable=False), sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("route", sa.String(128), nullable=False, index=True),
    sa.Column("variant", sa.String(128), nullable=False),
    sa.Column("backend", sa.String(512), nullable=False), sa.Column("status", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False), sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("ttft_ms", sa.Float), sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("cache", sa.String(8), nullable=False),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("response_id", sa.String(96), nullable=False, index=True),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("score", sa.Integer, nullable=False),                   # +1 thumbs up, -1 thumbs down
    sa.Column("comment", sa.Text, nullable=False, server_default=""),
    sa.Column("ts", sa.Float, nullable=False),
)


def connect(url: str) -> sa.Engine:
    """An engine on `url` with the tables created; SQLite gets its folder made and WAL mode (readers do not
    wait for the writer)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record) -> None:  # noqa: ANN001
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=5000")
    metadata.create_all(engine)
    return engine

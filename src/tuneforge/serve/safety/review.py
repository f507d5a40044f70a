"""Human review queue: answers held for a person, their decisions, an append-only audit, training rows out.

A durable store through SQLAlchemy: a SQLite file by default, any SQLAlchemy URL (PostgreSQL:
`postgresql+psycopg://user@host/db`) in production. Two tables:

- `review_items`: one held answer — the request as the model saw it (PII already replaced by
  placeholders), the answer, the guards' verdict, the route, its status (pending → approved | edited |
  rejected), the final answer, who decided and when. The placeholder map (the caller's own values) is kept
  apart so an approved answer can be re-identified for that caller (`release`) and never reaches an export.
- `review_audit`: every hold and decision, append-only — the database refuses UPDATE and DELETE on it
  (triggers on SQLite and PostgreSQL), and each row carries the SHA-256 of its content and of the row
  before it, so `verify_audit()` notices a rewritten or missing row.

`export()` writes approved and edited answers as the data pipeline's chat (`{"messages": [...]}`) or
instruction (`{"instruction", "output"}`) JSONL rows: the loop from review back into training data.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from tuneforge.core.errors import TuneforgeError

Decision = Literal["approve", "edit", "reject"]
Status = Literal["pending", "approved", "edited", "rejected"]
STATUS_OF: dict[str, Status] = {"approve": "approved", "edit": "edited", "reject": "rejected"}
DEFAULT_URL = "sqlite:///review.db"


class ReviewError(TuneforgeError):
    """A review call that cannot be done: unknown id, an item already decided, an edit without an answer."""


metadata = MetaData()
items = Table(
    "review_items", metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("route", String(200), nullable=False, default=""),
    Column("model", String(200), nullable=False, default=""),
    Column("messages", JSON, nullable=False),
    Column("answer", Text, nullable=False),
    Column("verdict", JSON, nullable=False),
    Column("placeholders", JSON, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("final_answer", Text, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
)
audit = Table(
    "review_audit", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(32), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("who", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

_SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS review_audit_no_update BEFORE UPDATE ON review_audit "
    "BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS review_audit_no_delete BEFORE DELETE ON review_audit "
    "BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END",
)
_PG_TRIGGERS = (
    "CREATE OR REPLACE FUNCTION review_audit_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'review_audit is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS review_audit_append_only ON review_audit",
    "CREATE TRIGGER review_audit_append_only BEFORE UPDATE OR DELETE ON review_audit "
    "FOR EACH ROW EXECUTE FUNCTION review_audit_append_only()",
)


@dataclass(frozen=True)
class ReviewItem:
    """One held answer as stored."""

    id: str
    created_at: datetime
    route: str
    model: str
    messages: list[dict[str, Any]]
    answer: str
    verdict: dict[str, Any]
    status: Status
    final_answer: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO strings); the placeholder map is never part of it."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["created_at"] = self.created_at.isoformat()
        out["decided_at"] = self.decided_at.isoformat() if self.decided_at else None
        return out


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit: who did what to which item, when, and what the answer was before and after."""

    seq: int
    item_id: str
    at: datetime
    who: str
    action: str
    reason: str
    before: str | None
    after: str | None
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "at": self.at.isoformat()}


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _row_hash(prev: str, item_id: str, at: datetime, who: str, action: str, reason: str, before: str | None,
              after: str | None) -> str:
    stamp = _aware(at)
    body = json.dumps([prev, item_id, stamp.isoformat() if stamp else "", who, action, reason, before, after],
                      ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cursor.execute("PRAGMA synchronous=FULL")  # a held answer survives a power cut once hold() returns
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()
            dbapi_connection.isolation_level = None  # SQLAlchemy's recipe: we emit BEGIN ourselves, below

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock at once: two processes cannot both read the audit chain's last
            # hash and then append after it
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine


class ReviewQueue:
    """hold / get / list / decide / audit / export over one database. Safe to share between threads."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.engine = _engine(url)
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for statement in _SQLITE_TRIGGERS if self.engine.dialect.name == "sqlite" else \
                    _PG_TRIGGERS if self.engine.dialect.name == "postgresql" else ():
                conn.execute(text(statement))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _append_audit(self, conn: Connection, item_id: str, who: str, action: str, reason: str,
                      before: str | None, after: str | None) -> None:
        if conn.dialect.name == "postgresql":  # one writer at a time extends the chain
            conn.execute(text("LOCK TABLE review_audit IN EXCLUSIVE MODE"))
        last = conn.execute(select(audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).scalar()
        prev = last or ""
        at = _now()
        conn.execute(insert(audit).values(item_id=item_id, at=at, who=who, action=action, reason=reason,
                                          before=before, after=after, prev_hash=prev,
                                          hash=_row_hash(prev, item_id, at, who, action, reason, before, after)))

    def hold(self, messages: list[dict[str, Any]], answer: str, verdict: dict[str, Any] | None = None, *,
             route: str = "", model: str = "", placeholders: dict[str, str] | None = None,
             meta: dict[str, Any] | None = None, who: str = "gateway") -> str:
        """Store an answer for review; returns its id. Durable once this returns."""
        item_id = uuid.uuid4().hex
        with self._tx() as conn:
            conn.execute(insert(items).values(
                id=item_id, created_at=_now(), route=route, model=model, messages=messages, answer=answer,
                verdict=verdict or {}, placeholders=placeholders or {}, meta=meta or {}, status="pending"))
            self._append_audit(conn, item_id, who, "hold", "held for review", None, answer)
        return item_id

    def get(self, item_id: str) -> ReviewItem:
        """The item; ReviewError when there is none with this id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).mappings().first()
        if row is None:
            raise ReviewError(f"no review item {item_id!r}")
        return _item(row)

    def list(self, status: Status | None = "pending", limit: int = 100, offset: int = 0,
             route: str | None = None) -> list[ReviewItem]:
        """Items oldest first, filtered by status (None: all) and route."""
        query = select(items).order_by(items.c.created_at, items.c.id).limit(limit).offset(offset)
        if status is not None:
            query = query.where(items.c.status == status)
        if route is not None:
            query = query.where(items.c.route == route)
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(query).mappings()]

    def decide(self, item_id: str, decision: Decision, who: str, reason: str = "",
               answer: str | None = None) -> ReviewItem:
        """Approve, edit (with the new `answer`) or reject a pending item; written to the audit in one transaction."""
        if decision not in STATUS_OF:
            raise ReviewError(f"decision {decision!r}: expected approve, edit or reject")
        if not who.strip():
            raise ReviewError("a decision needs the reviewer's name (who)")
        if decision == "edit" and not (answer or "").strip():
            raise ReviewError("an edit needs the corrected answer")
        with self._tx() as conn:
            row = conn.execute(select(items.c.status, items.c.answer).where(items.c.id == item_id)).first()
            if row is None:
                raise ReviewError(f"no review item {item_id!r}")
            final = answer if decision == "edit" else row.answer if decision == "approve" else None
            done = conn.execute(update(items).where(items.c.id == item_id, items.c.status == "pending").values(
                status=STATUS_OF[decision], final_answer=final, decided_by=who, decided_at=_now(), reason=reason))
            if done.rowcount != 1:
                raise ReviewError(f"review item {item_id!r} was already decided ({row.status})")
            self._append_audit(conn, item_id, who, decision, reason, row.answer, final)
        return self.get(item_id)

    def release(self, item_id: str) -> str | None:
        """The answer the caller may now get (re-identified with their own values); None while pending or rejected."""
        with self.engine.connect() as conn:
            row = conn.execute(select(items.c.final_answer, items.c.status, items.c.placeholders)
                               .where(items.c.id == item_id)).first()
        if row is None:
            raise ReviewError(f"no review item {item_id!r}")
        if row.status not in ("approved", "edited") or row.final_answer is None:
            return None
        out = row.final_answer
        for placeholder, value in sorted((row.placeholders or {}).items(), key=lambda kv: -len(kv[0])):
            out = out.replace(placeholder, value)
        return out

    def audit(self, item_id: str | None = None) -> builtins.list[AuditEntry]:
        """The audit rows in order, of one item or of all."""
        query = select(audit).order_by(audit.c.seq)
        if item_id is not None:
            query = query.where(audit.c.item_id == item_id)
        with self.engine.connect() as conn:
            return [AuditEntry(r.seq, r.item_id, _aware(r.at) or r.at, r.who, r.action, r.reason, r.before,
                               r.after, r.hash) for r in conn.execute(query)]

    def verify_audit(self) -> builtins.list[str]:
        """Problems with the audit chain (a row rewritten, removed or inserted out of order); empty when intact."""
        problems, prev = [], ""
        with self.engine.connect() as conn:
            for r in conn.execute(select(audit).order_by(audit.c.seq)):
                expected = _row_hash(prev, r.item_id, r.at, r.who, r.action, r.reason, r.before, r.after)
                if r.prev_hash != prev or r.hash != expected:
                    problems.append(f"audit row {r.seq} does not match its hash chain")
                prev = r.hash
        return problems

    def export(self, path: Path | None = None, fmt: Literal["chat", "instruction"] = "chat",
               route: str | None = None) -> builtins.list[dict[str, Any]]:
        """Approved and edited answers as training rows (the data pipeline's chat or instruction format)."""
        query = select(items).where(items.c.status.in_(("approved", "edited"))).order_by(items.c.decided_at)
        if route is not None:
            query = query.where(items.c.route == route)
        with self.engine.connect() as conn:
            rows = [_training_row(_item(r), fmt) for r in conn.execute(query).mappings()]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            tmp.replace(path)
        return rows


def _item(row: Any) -> ReviewItem:
    return ReviewItem(id=row["id"], created_at=_aware(row["created_at"]) or row["created_at"], route=row["route"],
                      model=row["model"], messages=row["messages"], answer=row["answer"], verdict=row["verdict"],
                      status=row["status"], final_answer=row["final_answer"], decided_by=row["decided_by"],
                      decided_at=_aware(row["decided_at"]), reason=row["reason"], meta=row["meta"] or {})


def _training_row(item: ReviewItem, fmt: str) -> dict[str, Any]:
    """A reviewed exchange as a training row; `source` says where it came from."""
    answer = item.final_answer or ""
    source = f"review:{item.id}"
    messages = [{"role": m["role"], "content": m["content"]} for m in item.messages
                if m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)]
    if fmt == "instruction":
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        row = {"instruction": user, "output": answer, "source": source}
        return {**row, "system": system} if system else row
    return {"messages": [*messages, {"role": "assistant", "content": answer}], "source": source}

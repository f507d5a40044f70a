"""API keys: created and shown once, stored as a hash, each with its tenant, models, limits and budget.

A key reads `tfk_<key id>_<secret>`: the id finds the row, the secret is checked against its SHA-256 in
constant time. The secrets are 256 random bits (`secrets.token_urlsafe`), so a fast hash is the right one —
as GitHub and Stripe store tokens; slow password hashes (argon2, bcrypt) exist for low-entropy passwords and
would add tens of milliseconds to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import sqlalchemy as sa

from tuneforge.core.errors import TuneforgeError
from tuneforge.gateway.store import api_keys, connect

PREFIX = "tfk"
Period = Literal["day", "month"]


@dataclass(frozen=True)
class KeyPolicy:
    """What a key may do; None = no limit."""

    tenant: str
    name: str = ""
    models: list[str] = field(default_factory=list)  # empty: every route
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_tokens: int | None = None
    budget_period: Period = "month"
    soft_budget: float = 0.8  # warn past this fraction of the budget

    def __post_init__(self) -> None:
        if not self.tenant.strip():
            raise TuneforgeError("a key needs a tenant (--tenant)")
        for name in ("rpm", "tpm", "max_parallel", "budget_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TuneforgeError(f"{name} must be at least 1 (got {value}); leave it unset for no limit")
        if self.budget_period not in ("day", "month"):
            raise TuneforgeError(f"budget_period must be day or month (got {self.budget_period!r})")
        if not 0 < self.soft_budget <= 1:
            raise TuneforgeError(f"soft_budget is a fraction in (0, 1] (got {self.soft_budget})")

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    policy: KeyPolicy
    created_at: float
    revoked_at: float | None = None
    rotated_from: str | None = None

    @property
    def lineage(self) -> str:
        """What limits and budgets are counted under: the first key of a rotation chain."""
        return self.rotated_from or self.key_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    """Keys in the gateway's database (`store.connect`)."""

    def __init__(self, url: str) -> None:
        self.engine = connect(url)

    def create(self, policy: KeyPolicy, rotated_from: str | None = None) -> tuple[str, KeyRecord]:
        """A new key: (the key — shown once, never stored —, its record)."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = KeyRecord(key_id, policy, time.time(), rotated_from=rotated_from)
        row = {**asdict(policy), "key_id": key_id, "secret_hash": _hash(secret), "created_at": record.created_at,
               "rotated_from": rotated_from}
        with self.engine.begin() as db:
            db.execute(api_keys.insert().values(**row))
        return f"{PREFIX}_{key_id}_{secret}", record

    def verify(self, key: str) -> KeyRecord | None:
        """The live record of `key`, or None (malformed, unknown, wrong secret or revoked)."""
        parts = split_key(key)
        if parts is None:
            return None
        with self.engine.connect() as db:
            row = db.execute(sa.select(api_keys).where(api_keys.c.key_id == parts[0])).mappings().first()
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(_hash(parts[1]), row["secret_hash"]):
            return None
        return _record(row)

    def get(self, key_id: str) -> KeyRecord:
        with self.engine.connect() as db:
            row = db.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        if row is None:
            raise TuneforgeError(f"no key with id {key_id!r} (see `tuneforge gateway keys list`)")
        return _record(row)

    def list(self, tenant: str | None = None, revoked: bool = False) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as db:
            return [_record(row) for row in db.execute(query).mappings()]

    def revoke(self, key_id: str) -> KeyRecord:
        record = self.get(key_id)
        if record.revoked_at is not None:
            raise TuneforgeError(f"key {key_id!r} was already revoked")
        with self.engine.begin() as db:
            db.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=time.time()))
        return self.get(key_id)

    def rotate(self, key_id: str) -> tuple[str, KeyRecord]:
        """A new key with the old one's policy; the old one is revoked. Budgets and limits are counted per
        tenant and key lineage, so rotating does not reset them."""
        old = self.get(key_id)
        if old.revoked_at is not None:
            raise TuneforgeError(f"key {key_id!r} is revoked; create a new one instead")
        new = self.create(old.policy, rotated_from=old.rotated_from or key_id)
        self.revoke(key_id)
        return new


def _record(row: sa.RowMapping) -> KeyRecord:
    policy = KeyPolicy(tenant=row["tenant"], name=row["name"], models=list(row["models"]), rpm=row["rpm"],
                       tpm=row["tpm"], max_parallel=row["max_parallel"], budget_tokens=row["budget_tokens"],
                       budget_period=row["budget_period"], soft_budget=row["soft_budget"])
    return KeyRecord(row["key_id"], policy, row["created_at"], row["revoked_at"], row["rotated_from"])

"""Open the configured registry: its backend, artifact store, audit log and the acting identity."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from tuneforge.core.registry_config import RegistryConfig
from tuneforge.registry.audit import AuditLog
from tuneforge.registry.protocol import ArtifactStore, Registry, RegistryError
from tuneforge.registry.store import LocalFolderStore


def current_user(cfg: RegistryConfig) -> str:
    """Who is acting: TUNEFORGE_USER, else `registry.user`, else the OS user; never blank."""
    candidates = [os.environ.get("TUNEFORGE_USER"), cfg.user]
    try:
        candidates.append(getpass.getuser())
    except (KeyError, OSError):  # no passwd entry (some containers) and no LOGNAME/USER
        pass
    for name in candidates:
        if name and name.strip():
            return name.strip()
    raise RegistryError("no identity: set TUNEFORGE_USER or registry.user (the audit log never records a "
                        "blank user)")


@dataclass
class RegistrySession:
    """Everything an operation needs; `user` is who every audit entry it writes names."""

    cfg: RegistryConfig
    backend: Registry
    store: ArtifactStore
    log: AuditLog
    user: str


def open_registry(cfg: RegistryConfig | None = None, user: str | None = None) -> RegistrySession:
    """The MLflow registry when `cfg.tracking_uri` is set, else the embedded one under `cfg.root`."""
    cfg = cfg or RegistryConfig()
    backend: Registry
    if cfg.tracking_uri:
        from tuneforge.registry.mlflow_backend import MlflowRegistry

        backend = MlflowRegistry(cfg.tracking_uri)
    else:
        from tuneforge.registry.local import LocalRegistry

        backend = LocalRegistry(cfg.root)
    acting = user.strip() if user and user.strip() else current_user(cfg)
    return RegistrySession(cfg=cfg, backend=backend, store=open_store(cfg), log=AuditLog(cfg.root / "audit.jsonl"),
                           user=acting)


def open_store(cfg: RegistryConfig) -> ArtifactStore:
    """The S3-compatible store `cfg.store` names (downloads cached under `cfg.root`), else the local folder."""
    if cfg.store:
        from tuneforge.registry.s3_store import S3Store

        return S3Store(cfg.store, cfg.root / "cache", cfg.s3_endpoint_url, cfg.s3_part_size_mb,
                       cfg.s3_multipart_threshold_mb)
    return LocalFolderStore(cfg.root)

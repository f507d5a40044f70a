"""`tuneforge serve registry:NAME@ALIAS` (or `registry:NAME/3`): the registry version to load.

The reference is resolved once, when the server starts, to the artifact folder in the registry's store
(its manifest pin checked); the served model name defaults to NAME. Following the alias live — polling
it, loading a new holder beside the old one, switching without a failed request — is not built yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tuneforge.core.registry_config import RegistryConfig

PREFIX = "registry:"


@dataclass(frozen=True)
class ResolvedModel:
    """What to load (`path`) and, for a registry reference, which version it is."""

    path: str
    name: str | None = None
    version: int | None = None
    content_hash: str | None = None

    @property
    def label(self) -> str | None:
        """'support-bot/3' for a registry version, else None."""
        return f"{self.name}/{self.version}" if self.name is not None else None


def resolve_model_ref(model_ref: str, registry: RegistryConfig | None = None) -> ResolvedModel:
    """A plain reference as given; `registry:NAME@ALIAS` / `registry:NAME/N` → that version's artifact folder.

    Without a registry config, the embedded registry in ./registry, or TUNEFORGE_REGISTRY_URI's MLflow."""
    if not model_ref.startswith(PREFIX):
        return ResolvedModel(model_ref)
    from tuneforge.registry.open import open_registry
    from tuneforge.registry.versions import artifact_path

    cfg = registry or RegistryConfig(tracking_uri=os.environ.get("TUNEFORGE_REGISTRY_URI") or None)
    version, folder = artifact_path(open_registry(cfg), model_ref)
    return ResolvedModel(str(folder), version.name, version.number, version.content_hash)

"""The contracts: a `Registry` backend (versions, aliases, tags) and an `ArtifactStore` (bytes by content hash).

A backend keeps only short strings (tags); manifests and payloads live in the store, and each version's
tags pin its manifest by sha256 so an edited manifest in the store is caught on read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuneforge.core.errors import TuneforgeError

TAG = "tuneforge."  # prefix of every tag tuneforge writes on a version or a model


class RegistryError(TuneforgeError):
    """A registry operation was refused (unknown name/version/alias, failed gates, missing approval, …)."""


class GatesFailed(RegistryError):
    """A promotion refused because the version fails its alias's gates (the refusal is in the audit log)."""

    def __init__(self, message: str, ref: str) -> None:
        super().__init__(message)
        self.ref = ref  # NAME/VERSION that was refused


@dataclass(frozen=True)
class Version:
    """One registered version of a model: which artifact, who registered it, which eval reports are attached."""

    name: str
    number: int
    content_hash: str
    kind: str
    manifest_sha256: str
    created_by: str
    created_at: str
    evals: dict[str, str] = field(default_factory=dict)  # eval report content hash → its manifest sha256

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.number}"

    def tags(self) -> dict[str, str]:
        """The version as backend tags."""
        return {f"{TAG}content_hash": self.content_hash, f"{TAG}kind": self.kind,
                f"{TAG}manifest_sha256": self.manifest_sha256, f"{TAG}created_by": self.created_by,
                f"{TAG}created_at": self.created_at, f"{TAG}evals": json.dumps(self.evals, sort_keys=True)}

    @classmethod
    def from_tags(cls, name: str, number: int, tags: dict[str, str]) -> Version:
        try:
            return cls(name=name, number=number, content_hash=tags[f"{TAG}content_hash"], kind=tags[f"{TAG}kind"],
                       manifest_sha256=tags[f"{TAG}manifest_sha256"], created_by=tags[f"{TAG}created_by"],
                       created_at=tags[f"{TAG}created_at"], evals=json.loads(tags.get(f"{TAG}evals", "{}")))
        except KeyError as exc:
            raise RegistryError(f"{name}/{number} was not registered by tuneforge (no {exc.args[0]} tag)") from None


class Registry(Protocol):
    """The store of record for names, versions, aliases and tags. Numbers start at 1 per name."""

    def models(self) -> list[str]: ...

    def create_version(self, name: str, tags: dict[str, str]) -> int:
        """Create the model when new, add a version carrying `tags`, return its number. A backend that can
        check and create in one step (the embedded one, under its lock) returns the version already carrying
        the same `tuneforge.content_hash` instead of adding one."""
        ...

    def delete_version(self, name: str, number: int) -> None:
        """Remove a version (a duplicate that lost a concurrent registration of the same content)."""
        ...

    def version_tags(self, name: str) -> dict[int, dict[str, str]]:
        """Every version of `name` → its tags; raises RegistryError naming `name` when it is unknown."""
        ...

    def set_version_tag(self, name: str, number: int, key: str, value: str) -> None: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def set_alias(self, name: str, alias: str, number: int) -> None: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def model_tags(self, name: str) -> dict[str, str]: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_model_tag(self, name: str, key: str) -> None: ...


class ArtifactStore(Protocol):
    """Artifact folders and manifests by content hash; `put` verifies every byte it stores."""

    def put(self, artifact_path: Path, manifest: dict[str, Any]) -> str:
        """Copy a sealed artifact folder in (a no-op when that hash is stored), return its URI."""
        ...

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        """Store a manifest alone (a parent's, for lineage); return its sha256."""
        ...

    def manifest(self, content_hash: str) -> dict[str, Any] | None:
        """The stored manifest of `content_hash`, or None."""
        ...

    def manifest_sha256(self, content_hash: str) -> str | None: ...

    def uri(self, content_hash: str) -> str: ...

    def local_path(self, content_hash: str) -> Path:
        """A local folder holding the artifact (downloaded first by a remote store)."""
        ...

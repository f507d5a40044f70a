"""The model registry: versions of artifacts under a model name, aliases, lineage, eval-gated promotion with
approvals, rollback, and a hash-chained audit log.

The store of record is a `Registry` backend: MLflow's model registry (`registry.tracking_uri`) or the
embedded file registry (the default). Artifact bytes go to an `ArtifactStore` by content hash. The
operations in `ops` (register, promote, approve, rollback, …) work the same over either backend.
"""

from tuneforge.registry.open import RegistrySession, open_registry
from tuneforge.registry.protocol import ArtifactStore, GatesFailed, Registry, RegistryError, Version

__all__ = ["ArtifactStore", "GatesFailed", "Registry", "RegistryError", "RegistrySession", "Version", "open_registry"]

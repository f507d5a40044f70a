"""Read the registry: `show` (a version, its aliases, evals and lineage tree), `diff`, `history`, `verify`."""

from __future__ import annotations

from typing import Any

from tuneforge.core.config import flatten
from tuneforge.registry.audit import Verdict
from tuneforge.registry.open import RegistrySession
from tuneforge.registry.promote import MOVES, holders, pending
from tuneforge.registry.protocol import Version
from tuneforge.registry.versions import HEAD_TAG, eval_manifests, manifest_of, resolve, versions


def _node(session: RegistrySession, manifest: dict[str, Any], seen: set[str]) -> dict[str, Any]:
    """A lineage node: the artifact, its base model and raw sources where it names them, and its parents."""
    node: dict[str, Any] = {"kind": manifest.get("kind"), "content_hash": manifest.get("content_hash"),
                            "created_at": manifest.get("created_at")}
    if manifest.get("base_model"):
        node["base_model"] = {"name": manifest["base_model"], "fingerprint": manifest.get("base_fingerprint")}
    if manifest.get("sources"):
        node["sources"] = manifest["sources"]
    numbers = {k: v for k, v in manifest.get("metrics", {}).items() if isinstance(v, int | float)}
    node["metrics"] = numbers
    node["parents"] = []
    for parent in manifest.get("parents", []):
        digest = parent.get("content_hash", "")
        stored = session.store.manifest(digest) if digest not in seen else None
        if stored is None:
            node["parents"].append({"kind": parent.get("kind"), "content_hash": digest, "path": parent.get("path"),
                                    "missing": digest not in seen})
        else:
            node["parents"].append(_node(session, stored, seen | {digest}))
    return node


def show(session: RegistrySession, ref: str) -> dict[str, Any]:
    """A version with its aliases, attached evals (numbers and gates) and lineage back to data and base model."""
    version = resolve(session, ref)
    manifest = manifest_of(session, version)
    aliases = session.backend.aliases(version.name)
    evals = [{"content_hash": m["content_hash"], "created_at": m.get("created_at"),
              "metrics": {k: v for k, v in m.get("metrics", {}).items() if isinstance(v, int | float)},
              "gates": m.get("metrics", {}).get("gates", [])} for m in eval_manifests(session, version)]
    return {"name": version.name, "version": version.number, "kind": version.kind,
            "content_hash": version.content_hash, "created_by": version.created_by, "created_at": version.created_at,
            "aliases": sorted(a for a, n in aliases.items() if n == version.number),
            "pending": {a: r for a, r in pending(session, version.name).items() if r["version"] == version.number},
            "path": str(session.store.local_path(version.content_hash)), "evals": evals,
            "lineage": _node(session, manifest, {version.content_hash})}


def metrics_of(session: RegistrySession, version: Version) -> dict[str, float]:
    """Numeric metrics of the version's manifest, then of its eval reports (later ones win)."""
    values: dict[str, float] = {}
    for manifest in [manifest_of(session, version), *eval_manifests(session, version)]:
        values.update({k: v for k, v in manifest.get("metrics", {}).items()
                       if isinstance(v, int | float) and not isinstance(v, bool)})
    return values


def diff(session: RegistrySession, ref_a: str, ref_b: str) -> dict[str, Any]:
    """Config keys that differ (a → b) and metric deltas between two versions."""
    a, b = resolve(session, ref_a), resolve(session, ref_b)
    config_a = flatten(manifest_of(session, a).get("config", {}))
    config_b = flatten(manifest_of(session, b).get("config", {}))
    config = {k: {"a": config_a.get(k), "b": config_b.get(k)} for k in sorted(set(config_a) | set(config_b))
              if config_a.get(k) != config_b.get(k)}
    metrics_a, metrics_b = metrics_of(session, a), metrics_of(session, b)
    metrics = {k: {"a": metrics_a.get(k), "b": metrics_b.get(k),
                   "delta": metrics_b[k] - metrics_a[k] if k in metrics_a and k in metrics_b else None}
               for k in sorted(set(metrics_a) | set(metrics_b))}
    return {"a": a.ref, "b": b.ref, "same_artifact": a.content_hash == b.content_hash, "config": config,
            "metrics": metrics}


def history(session: RegistrySession, name: str, alias: str | None = None, moves_only: bool = False
            ) -> list[dict[str, Any]]:
    """The model's audit entries, oldest first (only one alias's, only alias moves, when asked)."""
    session.backend.aliases(name)  # an unknown name is an error, not an empty history
    entries = session.log.entries(name)
    if alias is not None:
        entries = [e for e in entries if e.get("alias") == alias]
    if moves_only:
        entries = [e for e in entries if e.get("action") in MOVES]
    return entries


def verify(session: RegistrySession) -> Verdict:
    """The audit chain, each model's head in the backend, the aliases the log's moves imply, the manifest pins."""
    models = session.backend.models()
    heads = {m: tag for m in models if (tag := session.backend.model_tags(m).get(HEAD_TAG))}
    verdict = session.log.verify(heads)
    if not verdict.ok:
        return verdict
    for model in models:
        entries = session.log.entries(model)
        for alias, number in sorted(session.backend.aliases(model).items()):
            stack = holders(entries, alias)
            if not stack or stack[-1] != number:
                logged = f"@{alias} at {stack[-1]}" if stack else f"no move of @{alias}"
                return Verdict(verdict.entries, None, f"model {model!r}: @{alias} points at version {number} but "
                                                      f"the log records {logged}: moved outside tuneforge")
        for version in versions(session, model):
            if session.store.manifest_sha256(version.content_hash) != version.manifest_sha256:
                return Verdict(verdict.entries, None, f"{version.ref}: its manifest in the store was edited")
    return verdict

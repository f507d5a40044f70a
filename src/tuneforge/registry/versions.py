"""Register artifacts as versions, and resolve `NAME`, `NAME/3`, `NAME@alias` to a version."""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import MANIFEST, Artifact, load_artifact
from tuneforge.registry.open import RegistrySession
from tuneforge.registry.protocol import TAG, RegistryError, Version

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REGISTRABLE = ("adapter", "model")
HEAD_TAG = f"{TAG}audit_head"
REGISTRATION_TAG = f"{TAG}registration"  # a random token per register call: which call created a version


def record(session: RegistrySession, action: str, model: str, **details: Any) -> dict[str, Any]:
    """Append an audit entry and pin it as the model's head in the backend."""
    entry = session.log.append(session.user, action, model, **details)
    session.backend.set_model_tag(model, HEAD_TAG, f"{entry['seq']}:{entry['hash']}")
    return entry


def check_name(name: str, what: str = "model name") -> str:
    if not NAME.match(name or ""):
        raise RegistryError(f"{what} {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or "
                            "digit)")
    return name


def versions(session: RegistrySession, name: str) -> list[Version]:
    """Every version of `name`, oldest first."""
    tags = session.backend.version_tags(name)
    return [Version.from_tags(name, number, tags[number]) for number in sorted(tags)]


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """'bot' → ('bot', None, None); 'bot/3' → ('bot', 3, None); 'bot@production' → ('bot', None, 'production')."""
    match = re.fullmatch(r"([^/@\s]+)(?:/(\d+)|@([^/@\s]+))?", ref.strip())
    if not match:
        raise RegistryError(f"{ref!r} is not a model reference: use NAME, NAME/VERSION or NAME@ALIAS")
    name, number, alias = match.groups()
    return name, int(number) if number else None, alias


def resolve(session: RegistrySession, ref: str) -> Version:
    """The version `ref` names (NAME alone: the latest), with errors that name what is unknown."""
    name, number, alias = parse_ref(ref)
    found = {v.number: v for v in versions(session, name)}
    if alias is not None:
        aliases = session.backend.aliases(name)
        if alias not in aliases:
            held = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r} (aliases: {held})")
        number = aliases[alias]
    if number is None:
        if not found:
            raise RegistryError(f"model {name!r} has no versions")
        number = max(found)
    if number not in found:
        raise RegistryError(f"model {name!r} has no version {number} (versions: "
                            f"{', '.join(map(str, sorted(found))) or 'none'})")
    return found[number]


def _snapshot_lineage(session: RegistrySession, manifest: dict[str, Any], seen: set[str]) -> None:
    """Store the manifest of every ancestor still on disk, so `show` can draw the tree after runs are deleted."""
    for parent in manifest.get("parents", []):
        digest = parent.get("content_hash")
        if not digest or digest in seen or session.store.manifest(digest) is not None:
            continue
        seen.add(digest)
        path = Path(parent.get("path", ""))
        if not (path / MANIFEST).is_file():
            continue
        ancestor = load_artifact(path, verify=False).manifest
        if ancestor.get("content_hash") != digest:
            continue  # the folder now holds another artifact: not this ancestor
        session.store.put_manifest(ancestor)
        _snapshot_lineage(session, ancestor, seen)


def _load_evals(artifact: Artifact, paths: list[Path]) -> list[Artifact]:
    reports = [load_artifact(p, kind="eval-report") for p in paths]
    for report in reports:
        evaluated = {p.get("content_hash") for p in report.manifest.get("parents", [])}
        if artifact.content_hash not in evaluated:
            raise RegistryError(f"{report.path}: this eval report did not evaluate {artifact.path} (its parents "
                                f"do not include content hash {artifact.content_hash[:12]}…)")
    return reports


def _attach(session: RegistrySession, version: Version, reports: list[Artifact]) -> Version:
    new = [r for r in reports if r.content_hash not in version.evals]
    if not new:
        return version
    evals = dict(version.evals)
    for report in new:
        session.store.put(report.path, report.manifest)
        evals[report.content_hash] = session.store.manifest_sha256(report.content_hash) or ""
    session.backend.set_version_tag(version.name, version.number, f"{TAG}evals", json.dumps(evals, sort_keys=True))
    gates = [g for r in new for g in r.metrics.get("gates", [])]
    record(session, "attach-eval", version.name, version=version.number,
           evals=[r.content_hash for r in new], gates=gates)
    return Version(**{**version.__dict__, "evals": evals})


def register(session: RegistrySession, artifact_path: str | Path, name: str,
             evals: list[Path] | None = None) -> tuple[Version, bool]:
    """Register a verified artifact under `name` (with eval reports of it attached); (version, created).

    A tampered artifact (a file that no longer matches its manifest) is refused; the same content hash
    registered again returns its existing version, attaching any eval report it lacks."""
    check_name(name)
    artifact = load_artifact(artifact_path)  # re-hashes every file: refuses a tampered artifact
    if artifact.kind not in REGISTRABLE:
        raise RegistryError(f"{artifact.path}: a {artifact.kind} artifact; the registry takes "
                            f"{' or '.join(REGISTRABLE)} artifacts (attach eval reports with --eval)")
    reports = _load_evals(artifact, list(evals or []))
    existing = session.backend.models()
    if name in existing:
        for version in versions(session, name):
            if version.content_hash == artifact.content_hash:
                return _attach(session, version, reports), False
    uri = session.store.put(artifact.path, artifact.manifest)
    _snapshot_lineage(session, artifact.manifest, set())
    version = Version(name=name, number=0, content_hash=artifact.content_hash, kind=artifact.kind,
                      manifest_sha256=session.store.manifest_sha256(artifact.content_hash) or "",
                      created_by=session.user,
                      created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    token = uuid.uuid4().hex
    number = session.backend.create_version(name, {**version.tags(), f"{TAG}artifact_uri": uri,
                                                   REGISTRATION_TAG: token})
    winner, tags = _settle(session, name, number, artifact.content_hash)
    if tags.get(REGISTRATION_TAG) != token:  # another process registered this content at the same time
        return _attach(session, Version.from_tags(name, winner, tags), reports), False
    version = Version(**{**version.__dict__, "number": number})
    record(session, "register", name, version=number, content_hash=artifact.content_hash, kind=artifact.kind,
           source=str(artifact.path))
    return _attach(session, version, reports), True


def _settle(session: RegistrySession, name: str, number: int, content_hash: str) -> tuple[int, dict[str, str]]:
    """One version per content hash when processes register the same artifact at once: the lowest number
    carrying it wins, and a higher one this call created is deleted (MLflow numbers a version before
    anything can see the other one; the embedded registry never creates the duplicate). Returns the winner
    and its tags."""
    tags = session.backend.version_tags(name)
    same = sorted(n for n, t in tags.items() if t.get(f"{TAG}content_hash") == content_hash)
    winner = same[0] if same else number
    if number != winner:
        session.backend.delete_version(name, number)
    return winner, tags[winner]


def manifest_of(session: RegistrySession, version: Version) -> dict[str, Any]:
    """The version's manifest from the store, checked against the sha256 the backend pinned."""
    digest = session.store.manifest_sha256(version.content_hash)
    if digest != version.manifest_sha256:
        raise RegistryError(f"{version.ref}: its manifest in the store does not match the one registered "
                            "(edited or missing); run `tuneforge registry verify`")
    manifest = session.store.manifest(version.content_hash)
    assert manifest is not None  # its sha256 matched
    return manifest


def eval_manifests(session: RegistrySession, version: Version) -> list[dict[str, Any]]:
    """The attached eval reports' manifests, each checked against its pinned sha256."""
    found = []
    for digest, pinned in version.evals.items():
        if session.store.manifest_sha256(digest) != pinned:
            raise RegistryError(f"{version.ref}: attached eval report {digest[:12]}… was edited in the store")
        manifest = session.store.manifest(digest)
        if manifest is not None:
            found.append(manifest)
    return found


def artifact_path(session: RegistrySession, ref: str) -> tuple[Version, Path]:
    """The version `ref` names and the local folder of its artifact (what `serve registry:NAME@ALIAS` loads)."""
    version = resolve(session, ref.removeprefix("registry:"))
    manifest_of(session, version)  # its pin must hold before anything is served from it
    return version, session.store.local_path(version.content_hash)

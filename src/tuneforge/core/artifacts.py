"""Artifacts: a folder of payload files plus `manifest.json`, written atomically and verified on load.

Every stage reads and writes artifacts. The manifest records what the artifact is (kind), a sha256
per payload file, the artifacts it was made from (by content hash), the full resolved config that
made it, metrics, the tuneforge version and the creation time.

Writing goes to a hidden temporary sibling folder, every file is fsynced, the manifest is written
last, then the folder is renamed into place: a crash leaves at most a `.tmp-` folder, never a folder
that looks complete. Loading re-hashes every file and refuses anything that does not match.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.core.errors import ArtifactError

MANIFEST = "manifest.json"
KINDS = ("dataset", "adapter", "model", "eval-report", "checkpoint")


@dataclass(frozen=True)
class ParentRef:
    """A reference to the artifact this one was made from."""

    kind: str
    content_hash: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "content_hash": self.content_hash, "path": self.path}


@dataclass
class Artifact:
    """A loaded, verified artifact."""

    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config", {}))

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics", {}))

    def file(self, name: str) -> Path:
        """Path of a payload file, checked to be listed in the manifest."""
        if name not in self.manifest["files"]:
            raise ArtifactError(f"{self.path}: artifact has no payload file {name!r}")
        return self.path / name

    def ref(self) -> ParentRef:
        return ParentRef(kind=self.kind, content_hash=self.content_hash, path=str(self.path))


@dataclass
class ArtifactWriter:
    """Handed out by `create_artifact`: write payload files under `.path`, fill `.metrics`."""

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _payload_files(root: Path) -> list[str]:
    names = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:
                names.append(rel)
    return names


def _content_hash(files: dict[str, str]) -> str:
    joined = "\n".join(f"{name}\t{digest}" for name, digest in sorted(files.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def create_artifact(
    dest: str | Path,
    kind: str,
    config: dict[str, Any] | None = None,
    parents: list[ParentRef] | None = None,
    overwrite: bool = True,
) -> Iterator[ArtifactWriter]:
    """Write an artifact atomically: yield a writer on a temporary folder, then seal and rename it.

    On any exception inside the block the temporary folder is removed and `dest` is untouched.
    """
    if kind not in KINDS:
        raise ArtifactError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
    dest = Path(dest).absolute()
    if dest.exists() and not overwrite:
        raise ArtifactError(f"{dest} already exists; pass overwrite=True or choose another output")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writer = ArtifactWriter(path=tmp)
    try:
        yield writer
        files = {name: sha256_file(tmp / name) for name in _payload_files(tmp)}
        manifest = {
            "kind": kind,
            "content_hash": _content_hash(files),
            "files": files,
            "parents": [p.to_dict() for p in parents or []],
            "config": config or {},
            "metrics": writer.metrics,
            **writer.extra,
            "tuneforge_version": __version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        for name in [*files, MANIFEST]:
            _fsync_path(tmp / name)
        _fsync_path(tmp)
        if dest.exists():
            # Move the old folder aside first so `dest` is never a half-replaced mix of both.
            trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            dest.rename(trash)
            tmp.rename(dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(dest)
        _fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_artifact(path: str | Path) -> bool:
    """True when `path` is a folder with a manifest (not yet verified)."""
    return (Path(path) / MANIFEST).is_file()


def load_artifact(path: str | Path, kind: str | None = None, verify: bool = True) -> Artifact:
    """Load an artifact, check its kind and (by default) every payload file's sha256."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact folder")
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: not an artifact (no {MANIFEST}); it may be incomplete")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: manifest is not valid JSON ({exc})") from exc
    for key in ("kind", "content_hash", "files"):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path}: manifest lacks {key!r}")
    if kind is not None and manifest["kind"] != kind:
        raise ArtifactError(f"{path}: expected a {kind} artifact, found a {manifest['kind']} artifact")
    if verify:
        listed: dict[str, str] = manifest["files"]
        present = set(_payload_files(path))
        missing = sorted(set(listed) - present)
        extra = sorted(present - set(listed))
        if missing:
            raise ArtifactError(f"{path}: payload file(s) missing: {', '.join(missing)}")
        if extra:
            raise ArtifactError(f"{path}: unlisted file(s) added after sealing: {', '.join(extra)}")
        for name, expected in listed.items():
            actual = sha256_file(path / name)
            if actual != expected:
                raise ArtifactError(
                    f"{path}: {name} was modified after the artifact was written "
                    f"(sha256 {actual[:12]}…, manifest says {expected[:12]}…); refusing to load it"
                )
        if _content_hash(listed) != manifest["content_hash"]:
            raise ArtifactError(f"{path}: manifest content_hash does not match its file list")
    return Artifact(path=path, manifest=manifest)

"""The local-folder artifact store: `objects/<content hash>/` (the artifact folder) and
`manifests/<content hash>.json` (every manifest, parents' too, so lineage outlives the run folders).

Copies go to a temporary sibling and are renamed into place; each file is hashed while it is copied and
compared with the manifest, so a file changed between the registry's check and the copy is refused.
Files are streamed in 8 MiB blocks: multi-GB weights never sit in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import MANIFEST
from tuneforge.registry.protocol import RegistryError

BLOCK = 8 << 20


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes a manifest is stored as (its sha256 is what a version pins)."""
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


def _copy_hashed(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        while block := reader.read(BLOCK):
            digest.update(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


class LocalFolderStore:
    """An `ArtifactStore` in a local (or mounted network) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "manifests").mkdir(parents=True, exist_ok=True)

    def uri(self, content_hash: str) -> str:
        return (self.root / "objects" / content_hash).as_uri()

    def local_path(self, content_hash: str) -> Path:
        path = self.root / "objects" / content_hash
        if not (path / MANIFEST).is_file():
            raise RegistryError(f"artifact {content_hash[:12]}… is not in the store at {self.root}")
        return path

    def put(self, artifact_path: Path, manifest: dict[str, Any]) -> str:
        content_hash = manifest["content_hash"]
        dest = self.root / "objects" / content_hash
        if not (dest / MANIFEST).is_file():
            tmp = dest.parent / f".{content_hash}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                for name, expected in manifest["files"].items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    if _copy_hashed(artifact_path / name, tmp / name) != expected:
                        raise RegistryError(f"{artifact_path}: {name} changed while it was being stored; "
                                            "refusing the artifact")
                (tmp / MANIFEST).write_text((artifact_path / MANIFEST).read_text())
                try:
                    tmp.rename(dest)
                except OSError:  # another process stored the same content first: same bytes, keep theirs
                    if not (dest / MANIFEST).is_file():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.put_manifest(manifest)
        return self.uri(content_hash)

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        data = manifest_bytes(manifest)
        path = self.root / "manifests" / f"{manifest['content_hash']}.json"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(data)
            tmp.rename(path)
        return hashlib.sha256(data).hexdigest()

    def manifest(self, content_hash: str) -> dict[str, Any] | None:
        path = self.root / "manifests" / f"{content_hash}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def manifest_sha256(self, content_hash: str) -> str | None:
        path = self.root / "manifests" / f"{content_hash}.json"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

"""An S3-compatible artifact store (AWS S3, MinIO, Ceph, R2, moto's server…): `registry.store: s3://bucket/prefix`.

Layout under the prefix: `objects/<content hash>/<file>` (the artifact folder, its manifest.json last, as the
mark that the upload completed) and `manifests/<content hash>.json` (every manifest, parents' too).

Bytes move through boto3's managed transfer (s3transfer): files over `registry.s3_multipart_threshold_mb` go
up in `registry.s3_part_size_mb` parts, several at once, so multi-GB weights never hit S3's 5 GB single-PUT
limit (the `EntityTooLarge` that large LLM uploads fail with) and a failed part is retried alone. Each file
is hashed while it is read for upload and compared with the manifest afterwards: a file changed after the
registry checked it is deleted from the bucket and the artifact refused. Downloads go to a local cache
(`<registry.root>/cache/<content hash>`), every file's sha256 checked before the folder is renamed into place.
Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID…, ~/.aws, instance roles).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import MANIFEST, sha256_file
from tuneforge.registry.protocol import RegistryError
from tuneforge.registry.store import BLOCK, manifest_bytes

MIB = 1 << 20


class _HashingReader:
    """A file read once, front to back, hashed on the way (not seekable: s3transfer then reads it in order)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.digest.update(data)
        return data

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._file.close()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' → ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise RegistryError(f"registry.store {uri!r}: use s3://BUCKET or s3://BUCKET/PREFIX")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


class S3Store:
    """An `ArtifactStore` in an S3 bucket; `cache` is the local folder downloads land in."""

    def __init__(self, uri: str, cache: str | Path, endpoint_url: str | None = None, part_size_mb: int = 64,
                 multipart_threshold_mb: int = 64, max_concurrency: int = 8) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
        except ImportError as exc:
            raise RegistryError("registry.store s3://… needs boto3: pip install 'tuneforge[registry]'") from exc
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.endpoint_url = endpoint_url
        self.client = boto3.client("s3", endpoint_url=endpoint_url)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold_mb * MIB,
                                       multipart_chunksize=part_size_mb * MIB, max_concurrency=max_concurrency)
        self.cache = Path(cache).absolute()

    # ---- keys ------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, content_hash: str) -> str:
        return f"s3://{self.bucket}/{self._key('objects', content_hash)}/"

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, key) from None

    def _error(self, exc: Exception, key: str) -> RegistryError:
        where = f"s3://{self.bucket}/{key}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        return RegistryError(f"artifact store {where}: {exc}")

    # ---- writing ---------------------------------------------------------------------------------
    def put(self, artifact_path: Path, manifest: dict[str, Any]) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        content_hash = manifest["content_hash"]
        done = self._key("objects", content_hash, MANIFEST)
        if self._get(done) is None:  # the manifest goes last: without it the upload did not complete
            uploaded: list[str] = []
            try:
                for name, expected in sorted(manifest["files"].items()):
                    key = self._key("objects", content_hash, name)
                    reader = _HashingReader(artifact_path / name)
                    try:
                        self.client.upload_fileobj(reader, self.bucket, key, Config=self.transfer)
                    finally:
                        reader.close()
                    uploaded.append(key)
                    if reader.digest.hexdigest() != expected:
                        raise RegistryError(f"{artifact_path}: {name} changed while it was being stored; refusing "
                                            "the artifact")
                self.client.put_object(Bucket=self.bucket, Key=done, Body=(artifact_path / MANIFEST).read_bytes())
            except (BotoCoreError, ClientError) as exc:
                self._delete(uploaded)
                raise self._error(exc, self._key("objects", content_hash)) from None
            except BaseException:
                self._delete(uploaded)
                raise
        self.put_manifest(manifest)
        return self.uri(content_hash)

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except Exception:  # best effort: the upload is refused either way, and the manifest is absent
                pass

    def put_manifest(self, manifest: dict[str, Any]) -> str:
        data = manifest_bytes(manifest)
        key = self._key("manifests", f"{manifest['content_hash']}.json")
        if self._get(key) is None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")
        return hashlib.sha256(data).hexdigest()

    # ---- reading ---------------------------------------------------------------------------------
    def manifest(self, content_hash: str) -> dict[str, Any] | None:
        data = self._get(self._key("manifests", f"{content_hash}.json"))
        return json.loads(data) if data is not None else None

    def manifest_sha256(self, content_hash: str) -> str | None:
        data = self._get(self._key("manifests", f"{content_hash}.json"))
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def local_path(self, content_hash: str) -> Path:
        """The artifact downloaded into the cache (once), every file's sha256 checked against its manifest."""
        from botocore.exceptions import BotoCoreError, ClientError

        dest = self.cache / content_hash
        if (dest / MANIFEST).is_file():
            return dest
        raw, pinned = self._get(self._key("objects", content_hash, MANIFEST)), self.manifest(content_hash)
        if raw is None or pinned is None:
            raise RegistryError(f"artifact {content_hash[:12]}… is not in the store at s3://{self.bucket}/"
                                f"{self._key('objects')}")
        manifest = json.loads(raw)
        if manifest.get("files") != pinned.get("files"):
            raise RegistryError(f"{self.uri(content_hash)}{MANIFEST} lists other files than the registered "
                                "manifest: the stored artifact was altered; refusing it")
        tmp = self.cache / f".{content_hash}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            for name, expected in sorted(manifest["files"].items()):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                key = self._key("objects", content_hash, name)
                try:
                    self.client.download_file(self.bucket, key, str(tmp / name), Config=self.transfer)
                except (BotoCoreError, ClientError) as exc:
                    raise self._error(exc, key) from None
                if sha256_file(tmp / name, BLOCK) != expected:
                    raise RegistryError(f"s3://{self.bucket}/{key} does not match its manifest (sha256): the "
                                        "stored artifact was altered; refusing it")
            (tmp / MANIFEST).write_bytes(raw)
            try:
                tmp.rename(dest)
            except OSError:  # another process put the same artifact there first
                if not (dest / MANIFEST).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

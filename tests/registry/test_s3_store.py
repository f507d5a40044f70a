"""The S3-compatible artifact store against a real S3 API server process (moto's `moto_server`): a registered
version's weights go up through boto3's multipart upload (5 MiB parts: the tiny model's 12 MiB safetensors is
three parts), come down into another machine's cache verified file by file, and an object altered in the
bucket is refused."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from tuneforge.core.artifacts import load_artifact
from tuneforge.core.registry_config import RegistryConfig
from tuneforge.registry import RegistryError, open_registry
from tuneforge.registry.lineage import verify
from tuneforge.registry.versions import artifact_path, register


@pytest.fixture
def s3(s3_server, monkeypatch):
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="models")
    return client


def _cfg(root, endpoint: str) -> RegistryConfig:
    return RegistryConfig(root=root, store="s3://models/tuneforge", s3_endpoint_url=endpoint, s3_part_size_mb=5,
                          s3_multipart_threshold_mb=5, policies={})


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_multipart_upload_download_and_verify(s3, s3_server, tiny_models, tmp_path):
    session = open_registry(_cfg(tmp_path / "here", s3_server), user="alice")
    version, created = register(session, tiny_models[0], "bot")
    assert created and session.store.uri(version.content_hash).startswith("s3://models/tuneforge/objects/")

    key = f"tuneforge/objects/{version.content_hash}/model.safetensors"
    head = s3.head_object(Bucket="models", Key=key)
    size = (tiny_models[0] / "model.safetensors").stat().st_size
    assert head["ContentLength"] == size > 10 << 20
    assert head["ETag"].strip('"').endswith(f"-{-(-size // (5 << 20))}")  # a multipart ETag: md5-<parts>
    listed = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket="models")["Contents"]}
    assert f"tuneforge/manifests/{version.content_hash}.json" in listed

    again, created = register(session, tiny_models[0], "bot")
    assert (again.number, created) == (1, False)
    assert {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket="models")["Contents"]} == listed

    cache = tmp_path / "here" / "cache"
    assert not cache.exists()  # registering uploads from the run folder; nothing is cached yet
    _, folder = artifact_path(session, "registry:bot/1")  # what `tuneforge serve registry:bot/1` loads
    assert folder == cache / version.content_hash
    assert load_artifact(folder).content_hash == version.content_hash
    assert _sha(folder / "model.safetensors") == _sha(tiny_models[0] / "model.safetensors")
    assert verify(session).ok

    altered = bytearray((tiny_models[0] / "model.safetensors").read_bytes())
    altered[-1] ^= 0xFF
    s3.put_object(Bucket="models", Key=key, Body=bytes(altered))
    shutil.rmtree(cache)  # another machine, or a cache cleared: the bytes come from the bucket again
    with pytest.raises(RegistryError, match="model.safetensors does not match its manifest"):
        artifact_path(session, "bot/1")
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written kept

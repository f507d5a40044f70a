import json
import subprocess
import sys

import pytest

from tuneforge import __version__
from tuneforge.core.artifacts import create_artifact, is_artifact, load_artifact, sha256_file
from tuneforge.core.errors import ArtifactError


def _write(dest, text="hello", kind="dataset", parents=None, **kw):
    with create_artifact(dest, kind, config={"data": {"seed": 3}}, parents=parents, **kw) as w:
        (w.path / "a.txt").write_text(text)
        (w.path / "sub").mkdir()
        (w.path / "sub" / "b.bin").write_bytes(b"\x00\x01")
        w.metrics["rows"] = 2
    return load_artifact(dest)


def test_manifest_records_everything(tmp_path):
    parent = _write(tmp_path / "parent", "p")
    art = _write(tmp_path / "child", kind="adapter", parents=[parent.ref()])
    m = json.loads((tmp_path / "child" / "manifest.json").read_text())
    assert m["kind"] == "adapter"
    assert m["files"] == {"a.txt": sha256_file(tmp_path / "child" / "a.txt"),
                          "sub/b.bin": sha256_file(tmp_path / "child" / "sub" / "b.bin")}
    assert m["parents"] == [{"kind": "dataset", "content_hash": parent.content_hash, "path": str(parent.path)}]
    assert m["config"] == {"data": {"seed": 3}}
    assert m["metrics"] == {"rows": 2}
    assert m["tuneforge_version"] == __version__
    assert m["created_at"].startswith("20")
    assert art.content_hash != parent.content_hash
    # same payload → same content hash, whatever the folder
    assert _write(tmp_path / "again", "p").content_hash == parent.content_hash


@pytest.mark.parametrize("tamper, message", [
    (lambda p: (p / "a.txt").write_text("HELLO"), "a.txt was modified"),
    (lambda p: (p / "sub" / "b.bin").unlink(), "missing: sub/b.bin"),
    (lambda p: (p / "extra.txt").write_text("x"), "unlisted file"),
])
def test_tampered_artifact_is_refused(tmp_path, tamper, message):
    _write(tmp_path / "art")
    tamper(tmp_path / "art")
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tmp_path / "art")


def test_wrong_kind_and_missing(tmp_path):
    _write(tmp_path / "art")
    with pytest.raises(ArtifactError, match="expected a adapter artifact, found a dataset"):
        load_artifact(tmp_path / "art", kind="adapter")
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="not an artifact"):
        load_artifact(tmp_path / "plain")


def test_exception_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with create_artifact(tmp_path / "art", "dataset") as w:
            (w.path / "a.txt").write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_folder(tmp_path):
    _write(tmp_path / "art", "one")
    with create_artifact(tmp_path / "art", "dataset") as w:
        (w.path / "only.txt").write_text("two")
    art = load_artifact(tmp_path / "art")
    assert sorted(art.manifest["files"]) == ["only.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    with pytest.raises(ArtifactError, match="already exists"):
        with create_artifact(tmp_path / "art", "dataset", overwrite=False):
            pass


def test_killed_writer_never_leaves_a_complete_looking_folder(tmp_path):
    code = f"""
import os
from tuneforge.core.artifacts import create_artifact
with create_artifact({str(tmp_path / 'art')!r}, 'dataset') as w:
    (w.path / 'a.txt').write_text('x' * 1000)
    os._exit(9)  # the process dies mid-write, as with kill -9
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not (tmp_path / "art").exists()
    assert not is_artifact(tmp_path / "art")
    leftovers = list(tmp_path.iterdir())
    assert all(p.name.startswith(".art.tmp-") for p in leftovers)
    assert not any(is_artifact(p) for p in leftovers)


def test_unknown_kind(tmp_path):
    with pytest.raises(ArtifactError, match="unknown artifact kind"):
        with create_artifact(tmp_path / "x", "weights"):
            pass

"""The embedded registry: one JSON file (`<root>/registry.json`), the default when no tracking URI is set.

Every change is a read-modify-write under an exclusive `flock` and lands by atomic rename, so two
`tuneforge registry` processes on one machine never lose each other's writes or leave a torn file; a new
version is checked against the versions already there under that same lock (one version per content hash).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneforge.registry.protocol import TAG, RegistryError


class LocalRegistry:
    """A `Registry` in a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "registry.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "registry.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"models": {}}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.path}: not valid JSON ({exc})") from None

    def _change(self, edit: Callable[[dict[str, Any]], Any]) -> Any:
        with self._locked():
            state = self._read()
            result = edit(state)
            tmp = self.path.with_name(f".registry.json.tmp-{uuid.uuid4().hex[:8]}")
            with open(tmp, "w") as handle:
                handle.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            tmp.rename(self.path)
            return result

    @staticmethod
    def _model(state: dict[str, Any], name: str) -> dict[str, Any]:
        if name not in state["models"]:
            known = ", ".join(sorted(state["models"])) or "none yet"
            raise RegistryError(f"unknown model {name!r} (registered: {known})")
        return state["models"][name]

    def models(self) -> list[str]:
        return sorted(self._read()["models"])

    def create_version(self, name: str, tags: dict[str, str]) -> int:
        def edit(state: dict[str, Any]) -> int:
            model = state["models"].setdefault(name, {"versions": {}, "aliases": {}, "tags": {}})
            digest = tags.get(f"{TAG}content_hash")
            same = [int(n) for n, t in model["versions"].items() if digest and t.get(f"{TAG}content_hash") == digest]
            if same:  # registered meanwhile by another process: checked and created under one lock
                return min(same)
            number = max(map(int, model["versions"]), default=0) + 1
            model["versions"][str(number)] = dict(tags)
            return number

        return self._change(edit)

    def delete_version(self, name: str, number: int) -> None:
        self._change(lambda state: self._model(state, name)["versions"].pop(str(number), None))

    def version_tags(self, name: str) -> dict[int, dict[str, str]]:
        return {int(n): tags for n, tags in self._model(self._read(), name)["versions"].items()}

    def set_version_tag(self, name: str, number: int, key: str, value: str) -> None:
        def edit(state: dict[str, Any]) -> None:
            versions = self._model(state, name)["versions"]
            if str(number) not in versions:
                raise RegistryError(f"unknown version {name}/{number}")
            versions[str(number)][key] = value

        self._change(edit)

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._model(self._read(), name)["aliases"])

    def set_alias(self, name: str, alias: str, number: int) -> None:
        self._change(lambda state: self._model(state, name)["aliases"].__setitem__(alias, number))

    def delete_alias(self, name: str, alias: str) -> None:
        self._change(lambda state: self._model(state, name)["aliases"].pop(alias, None))

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self._model(self._read(), name)["tags"])

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._change(lambda state: self._model(state, name)["tags"].__setitem__(key, value))

    def delete_model_tag(self, name: str, key: str) -> None:
        self._change(lambda state: self._model(state, name)["tags"].pop(key, None))

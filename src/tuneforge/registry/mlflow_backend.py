"""MLflow's model registry as the store of record (`registry.tracking_uri`: an `mlflow server` URL, or a SQL
store URI such as sqlite:///mlflow.db or postgresql://user@host/db).

Versions, aliases (`models:/name@production` works for MLflow users) and tags live in MLflow; tuneforge
keeps its manifest pin, eval reports, pending approvals and the audit-log head in tags. The version's
source is `tuneforge-store:/sha256/<content hash>` (MLflow refuses local paths outside a run's artifacts); the
store's URI is in the `tuneforge.artifact_uri` tag. mlflow is imported lazily: the core installs without it.
"""

from __future__ import annotations

from typing import Any

from tuneforge.registry.protocol import TAG, RegistryError


def _client(uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise RegistryError("registry.tracking_uri needs MLflow: pip install 'tuneforge[registry]'") from exc
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


class MlflowRegistry:
    """A `Registry` on an MLflow tracking server or SQL store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = _client(uri)

    def _model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
                known = ", ".join(self.models()) or "none yet"
                raise RegistryError(f"unknown model {name!r} (registered: {known})") from None
            raise RegistryError(f"MLflow at {self.uri}: {exc.message}") from None

    def models(self) -> list[str]:
        names, token = [], None
        while True:
            page = self.client.search_registered_models(max_results=100, page_token=token)
            names += [m.name for m in page]
            token = page.token
            if not token:
                return sorted(names)

    def create_version(self, name: str, tags: dict[str, str]) -> int:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description="Registered by tuneforge.")
        except MlflowException as exc:
            if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise RegistryError(f"MLflow at {self.uri}: {exc.message}") from None
        source = f"tuneforge-store:/sha256/{tags[f'{TAG}content_hash']}"
        version = self.client.create_model_version(name, source=source, tags=tags, await_creation_for=0,
                                                   description=f"tuneforge {tags.get(f'{TAG}kind', '')} artifact at "
                                                   f"{tags.get(f'{TAG}artifact_uri', 'the tuneforge store')}")
        return int(version.version)

    def delete_version(self, name: str, number: int) -> None:
        self.client.delete_model_version(name, str(number))

    def version_tags(self, name: str) -> dict[int, dict[str, str]]:
        self._model(name)
        found = self.client.search_model_versions(f"name = '{name}'", max_results=10000)
        return {int(v.version): dict(v.tags) for v in found}

    def set_version_tag(self, name: str, number: int, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(number), key, value)

    def aliases(self, name: str) -> dict[str, int]:
        return {alias: int(number) for alias, number in self._model(name).aliases.items()}

    def set_alias(self, name: str, alias: str, number: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(number))

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self._model(name).tags)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_tag(name, key, value)
        except MlflowException:
            # MLflow's SQL store upserts by read-then-insert: two writers setting a tag the model does not have yet
            # both insert, and the second fails on the unique key. The row exists now, so the retry updates it.
            self.client.set_registered_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        self.client.delete_registered_model_tag(name, key)

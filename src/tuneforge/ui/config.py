"""`tuneforge ui` settings: where it binds, where its jobs and uploads live, which servers it talks to.

Defaults here and only here (the command's flags read them). The login key is never a flag: it comes from
the environment variable `key_env` (or `key_file`), so that it is not visible in `ps`.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.core.errors import ConfigError


class UIConfig(BaseModel):
    """How the UI runs."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind. Anything but loopback needs a login key.")
    port: int = Field(7860, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    workspace: Path = Field(Path("runs/ui"), description="Folder of uploads, jobs and the artifacts they make.")
    servers: list[str] = Field(default_factory=list, description="OpenAI-compatible base URLs "
                               "(http://host:port/v1) the Playground and Monitoring pages offer.")
    server_key_env: str = Field("TUNEFORGE_API_KEY", description="Environment variable holding the key the UI "
                                "sends to those servers.")
    review_db: str | None = Field(None, description="Review queue database (SQLAlchemy URL or SQLite file); "
                                  "default: $TUNEFORGE_REVIEW_DB, else review.db, as `tuneforge review`.")
    key_env: str = Field("TUNEFORGE_UI_KEY", description="Environment variable holding the login key.")
    key_file: Path | None = Field(None, description="…or a file holding it (first line).")

    def login_key(self) -> str | None:
        """The login key, None when none is configured; a non-loopback host without one is refused."""
        key = os.environ.get(self.key_env) or None
        if key is None and self.key_file is not None:
            if not self.key_file.is_file():
                raise ConfigError(f"ui key_file {self.key_file}: no such file")
            key = self.key_file.read_text().splitlines()[0].strip() if self.key_file.read_text().strip() else None
        if key is None and not is_loopback(self.host):
            raise ConfigError(f"--host {self.host} is not loopback: the UI then needs a login key; set "
                              f"{self.key_env} (or --key-file) to a long random string")
        if key is not None and len(key) < 12:
            raise ConfigError(f"the login key ({self.key_env}) must be at least 12 characters")
        return key

    def server_key(self) -> str | None:
        return os.environ.get(self.server_key_env) or None

    def review_url(self) -> str:
        from tuneforge.serve.safety.review import DEFAULT_URL

        url = self.review_db or os.environ.get("TUNEFORGE_REVIEW_DB") or DEFAULT_URL
        return url if "://" in url else f"sqlite:///{Path(url).resolve()}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Who may call what: the API key on /v1/* (vLLM's --api-key) and the admin key on admin calls.

Keys are compared in constant time (`hmac.compare_digest`). With no `serve.api_key` the API is open, as
vLLM's is; /health, /ready and /metrics are always open (load balancers and Prometheus call them).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Request

from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.wire import bearer_token


def _require(request: Request, key: str | None, what: str) -> None:
    if key is None:
        return
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise APIError(401, f"this server needs {what}: send `Authorization: Bearer <key>`",
                       code="missing_api_key", type_="authentication_error")
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise APIError(401, f"the key sent is not {what}", code="invalid_api_key", type_="authentication_error")


def require_api_key(request: Request) -> None:
    """Dependency of the /v1 routers: 401 unless the request carries serve.api_key (when one is set)."""
    _require(request, request.app.state.context.keys[0], "an API key (serve.api_key)")


def require_admin_key(request: Request) -> None:
    """Dependency of admin calls: 401 unless the request carries serve.admin_key (when one is set)."""
    _require(request, request.app.state.context.keys[1], "the admin key (serve.admin_key)")


def adapter_path(path: str, roots: list[str]) -> str:
    """`path` resolved (symlinks too) when it lies under one of `roots`; a 403 naming the roots otherwise."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        base = Path(root).expanduser().resolve()
        if resolved == base or base in resolved.parents:
            return str(resolved)
    raise APIError(403, f"lora_path {path!r} is outside serve.lora_roots ({', '.join(roots)})", param="lora_path",
                   code="path_not_allowed", type_="permission_error")

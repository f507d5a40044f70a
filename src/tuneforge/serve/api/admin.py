"""Admin calls: LoRA adapters loaded and unloaded at run time (vLLM's calls), and fault injection for tests.

Both routers are mounted only when enabled (serve.allow_runtime_lora, serve.debug_faults) and then behind
serve.admin_key (`auth.require_admin_key`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from tuneforge.serve.api.auth import adapter_path
from tuneforge.serve.api.context import Context
from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.protocol import STRICT, error_responses

router = APIRouter()
faults = APIRouter()  # included only with serve.debug_faults


class LoadAdapterRequest(BaseModel):
    model_config = STRICT

    lora_name: str
    lora_path: str


class UnloadAdapterRequest(BaseModel):
    model_config = STRICT

    lora_name: str


@router.post("/v1/load_lora_adapter", responses=error_responses(400, 403, 413))
async def load_lora_adapter(req: LoadAdapterRequest, ctx: Context) -> dict:
    """Load a LoRA adapter artifact at run time (only under serve.lora_roots); requests then pick it by
    `model: <lora_name>`."""
    engine = ctx.engine
    if req.lora_name == ctx.served_model_name or req.lora_name in engine.adapter_names():
        raise APIError(400, f"an adapter or model named {req.lora_name!r} is already served", param="lora_name")
    path = adapter_path(req.lora_path, ctx.cfg.lora_roots)
    try:
        await asyncio.wrap_future(engine.call(lambda: engine.load_adapter(req.lora_name, path)))
    except (ValueError, OSError) as exc:
        raise APIError(400, str(exc), param="lora_path") from None
    return {"status": "loaded", "lora_name": req.lora_name}


@router.post("/v1/unload_lora_adapter", responses=error_responses(400, 404, 413))
async def unload_lora_adapter(req: UnloadAdapterRequest, ctx: Context) -> dict:
    engine = ctx.engine
    if req.lora_name not in engine.adapter_names():
        raise APIError(404, f"no adapter named {req.lora_name!r} is loaded", param="lora_name",
                       type_="not_found_error")
    await asyncio.wrap_future(engine.call(lambda: engine.unload_adapter(req.lora_name)))
    return {"status": "unloaded", "lora_name": req.lora_name}


@faults.post("/admin/fault")
async def inject_fault(ctx: Context, kind: str = "raise") -> dict:
    """Testing only (serve.debug_faults): make the next engine step raise or hang."""
    ctx.engine.inject_fault(kind)
    return {"status": "armed", "kind": kind}

"""The route of /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneforge.serve.api.completions.protocol import Completion, CompletionRequest
from tuneforge.serve.api.completions.serving import create_completion
from tuneforge.serve.api.context import Context
from tuneforge.serve.api.protocol import GENERATION_ERRORS, streamed_or

router = APIRouter()


@router.post("/v1/completions", response_model=None, responses={**streamed_or(Completion), **GENERATION_ERRORS})
async def completions(req: CompletionRequest, request: Request,
                      ctx: Context):
    """Raw-prompt completions, streamed or not; `echo` + `logprobs` score the prompt itself."""
    return await create_completion(ctx, req, request)

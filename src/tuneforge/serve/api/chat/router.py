"""The route of /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneforge.serve.api.chat.protocol import ChatCompletion, ChatCompletionRequest
from tuneforge.serve.api.chat.serving import create_chat_completion
from tuneforge.serve.api.context import Context
from tuneforge.serve.api.protocol import GENERATION_ERRORS, streamed_or

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None,
             responses={**streamed_or(ChatCompletion), **GENERATION_ERRORS})
async def chat_completions(req: ChatCompletionRequest, request: Request,
                           ctx: Context):
    """Chat completions, streamed (SSE) or not; `model` picks the base or an adapter."""
    return await create_chat_completion(ctx, req, request)

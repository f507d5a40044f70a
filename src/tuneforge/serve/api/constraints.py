"""What chat and text completions share about constraints on the output: `logit_bias` token ids checked
against the vocabulary, and structured outputs compiled before admission (a bad schema is a 400 that names
the field that asked for it and the grammar library's reason)."""

from __future__ import annotations

from tuneforge.models.generate import SamplingParams
from tuneforge.serve.api.context import ServingContext
from tuneforge.serve.api.errors import APIError
from tuneforge.serve.api.protocol import SamplingRequest


def check_logit_bias(ctx: ServingContext, req: SamplingRequest) -> None:
    for token in req.token_bias():
        if not 0 <= token < ctx.vocab_size:
            raise APIError(400, f"logit_bias: token id {token} is not in this model's vocabulary "
                           f"[0, {ctx.vocab_size})", param="logit_bias")


async def prepare(ctx: ServingContext, params: SamplingParams, param: str | None, what: str | None = None) -> None:
    """Compile `params`' constraint on the tokenizing threads (never on the event loop or the engine
    loop); `param` names the request field it came from."""
    if params.guided is None:
        return
    try:
        await ctx.off_loop(ctx.engine.prepare, params)
    except ValueError as exc:
        what = what or {"json": "JSON schema", "json_object": "JSON object", "regex": "regular expression",
                "choice": "choice", "grammar": "grammar"}[params.guided.kind]
        raise APIError(400, f"{param}: invalid {what}: {exc}", param=param) from None

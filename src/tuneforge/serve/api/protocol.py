"""What the endpoints' protocols share: the sampling fields of chat and text completions, usage, errors.

Each endpoint's own request and response models live beside it (`chat/protocol.py`,
`completions/protocol.py`). Out-of-range values are a 400 that names the field. Types are strict (as
JSON Schema says them): a boolean is `true`/`false`, never `0`; an integer is never `true` or `"1"`
(JSON Schema's `1.0` is one); a number may be an integer.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tuneforge.models.generate import SamplingParams

STRICT = ConfigDict(strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer: hand it on as 2 (strict validation refuses the rest)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)  # last in an Annotated, so that the JSON schema keeps the bounds
Int = Annotated[int, Integral]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The decoding fields chat and text completions share, validated the same way for both.

    Besides OpenAI's fields, vLLM's extensions `top_k`, `repetition_penalty`, `stop_token_ids` and
    `ignore_eos` are accepted.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    frequency_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(1.0, gt=0.0, le=10.0)
    n: Annotated[int, Field(ge=1, le=16), Integral] | None = Field(1, description="choices per prompt")
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), Integral] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(None, description="at most 4 sequences")
    stop_token_ids: list[Int] | None = None
    ignore_eos: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="default 0 (greedy) in tuneforge")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Annotated[int, Field(ge=-1), Integral] | None = Field(None, description="-1 or 0: no top-k cut")
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def top_logprobs_wanted(self) -> int | None:
        return None

    def sampling_params(self, max_new_tokens: int, choice: int = 0) -> SamplingParams:
        """Engine sampling parameters for choice `choice` of this request (seeded choices get seed + choice)."""
        return SamplingParams(
            max_new_tokens=max_new_tokens, temperature=self.temperature or 0.0,
            top_p=self.top_p if self.top_p is not None else 1.0, top_k=max(self.top_k or 0, 0),
            stop=self.stop_list(), seed=None if self.seed is None else (self.seed + choice) % 2**64,
            repetition_penalty=self.repetition_penalty or 1.0, presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0, stop_token_ids=list(self.stop_token_ids or []),
            logprobs=self.top_logprobs_wanted(), ignore_eos=bool(self.ignore_eos))

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class ResponseHead(BaseModel):
    """What every completion response and chunk starts with."""

    id: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str


def sse_json(model: BaseModel) -> str:
    """An SSE event of a streamed chunk (`usage` only when the chunk carries one, as OpenAI sends it)."""
    exclude = {"usage"} if getattr(model, "usage", "absent") is None else None
    return f"data: {json.dumps(model.model_dump(mode='json', exclude=exclude), ensure_ascii=False)}\n\n"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error object: every 4xx and 5xx of this server has this body."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses an endpoint really returns."""
    why = {400: "Invalid request: the message names the parameter or limit", 401: "Missing or invalid API key",
           403: "Not allowed", 404: "Unknown model or adapter", 405: "Method not allowed",
           413: "Request body over serve.max_body_bytes", 429: "At capacity: retry after Retry-After seconds",
           499: "The client disconnected", 500: "Engine or model fault", 503: "Draining or not ready",
           504: "Past serve.request_timeout"}
    return {status: {"model": ErrorResponse, "description": why[status]} for status in statuses}


GENERATION_ERRORS = error_responses(400, 404, 413, 429, 499, 500, 503, 504)


def streamed_or(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A 200 that is `model` as JSON, or an SSE stream of chunks with `stream: true`."""
    return {200: {"model": model, "description": f"A {model.__name__}; with `stream: true` an SSE stream of chunks",
                  "content": {"text/event-stream": {}}}}

"""Request and response models of /v1/chat/completions, in the order of the OpenAI docs.

Out-of-range values are a 400 that names the field. Types are strict (as JSON Schema says them): a
boolean is `true`/`false`, never `0`; an integer is never `true` or `"1"` (JSON Schema's `1.0` is one);
a number may be an integer.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

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


class ContentPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False


class _SamplingRequest(BaseModel):
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


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1), Integral] | None = None
    max_tokens: Annotated[int, Field(ge=1), Integral] | None = Field(
        None, description="deprecated OpenAI alias of max_completion_tokens")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A whole chat answer; each choice is {index, message, logprobs, finish_reason}."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def chat_choice(index: int, text: str, finish_reason: str, logprobs: dict | None = None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
            "finish_reason": finish_reason}


def chat_chunk(cid: str, model: str, delta: dict[str, Any], finish_reason: str | None = None,
               usage_block: dict[str, int] | None = None, with_choice: bool = True, index: int = 0,
               logprobs: dict | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]
        if with_choice else [],
    }
    if usage_block is not None:
        chunk["usage"] = usage_block
    return chunk


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


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class CompletionRequest(_SamplingRequest):
    """/v1/completions."""

    prompt: (NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | Annotated[list[Int], Field(min_length=1)]
             | Annotated[list[Annotated[list[Int], Field(min_length=1)]], Field(min_length=1)])
    echo: bool | None = False
    logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = Field(None, description="top logprobs per token")
    max_tokens: Annotated[int, Field(ge=0), Integral] | None = 16

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


def completion_response(cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                        completion_tokens: int) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}

"""/v1/completions: request and response models (OpenAI's legacy completions, as vLLM serves them)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from tuneforge.serve.api.protocol import Int, Integral, NonEmptyStr, ResponseHead, SamplingRequest, Usage, refuse


class CompletionRequest(SamplingRequest):
    """/v1/completions."""

    prompt: (NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | Annotated[list[Int], Field(min_length=1)]
             | Annotated[list[Annotated[list[Int], Field(min_length=1)]], Field(min_length=1)])
    echo: bool | None = False
    logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = Field(None, description="top logprobs per token")
    max_tokens: Annotated[int, Field(ge=0), Integral] | None = 16
    best_of: Annotated[int, Field(ge=1), Integral] | None = Field(None, description="only equal to n (or 1)")
    suffix: Any = None
    _suffix = refuse("suffix", "no fill-in-the-middle")

    @model_validator(mode="after")
    def _best_of_is_n(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise ValueError(f"best_of={self.best_of} is not supported by this server: only best_of equal to n "
                             f"({self.n or 1}), which returns every completion")
        return self

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


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class Completion(ResponseHead):
    """A whole answer, and (with `stream: true`) each streamed chunk."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None

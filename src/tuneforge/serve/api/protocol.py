"""What the endpoints' protocols share: the sampling fields of chat and text completions, usage, errors.

Each endpoint's own request and response models live beside it (`chat/protocol.py`,
`completions/protocol.py`). Out-of-range values are a 400 that names the field. Types are strict (as
JSON Schema says them): a boolean is `true`/`false`, never `0`; an integer is never `true` or `"1"`
(JSON Schema's `1.0` is one); a number may be an integer.
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from tuneforge.models.generate import GuidedDecoding, SamplingParams

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


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(strict=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: `text`, `json_object` (any JSON object) or `json_schema`."""

    model_config = STRICT

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only with it")
        return self


LogitBias = dict[Annotated[str, Field(pattern=r"^[0-9]+$")], Annotated[float, Field(ge=-100.0, le=100.0)]]
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def refuse(name: str, why: str):
    """A field validator refusing any non-null value of an OpenAI parameter this server does not implement."""

    def check(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(f"{name} is not supported by this server ({why})")
        return value

    return field_validator(name, mode="before")(check)


class SamplingRequest(BaseModel):
    """The decoding fields chat and text completions share, validated the same way for both.

    Besides OpenAI's fields, vLLM's extensions `top_k`, `repetition_penalty`, `stop_token_ids`,
    `ignore_eos` and the structured-output fields `guided_json`, `guided_regex`, `guided_choice` and
    `guided_grammar` (Lark) are accepted. Any other field is refused with a 400 that names it: a client
    never gets an answer that silently ignored what it asked for.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

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
    logit_bias: LogitBias | None = Field(None, description="token id (a string) → bias in [-100, 100]")
    response_format: ResponseFormat | None = None
    guided_json: str | dict[str, Any] | None = Field(None, description="vLLM: a JSON schema the output matches")
    guided_regex: str | None = Field(None, description="vLLM: a regular expression the output matches")
    guided_choice: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="vLLM: the output is exactly one of these strings")
    guided_grammar: str | None = Field(None, description="vLLM: a Lark grammar the output matches")

    @field_validator("response_format", *GUIDED_FIELDS)
    @classmethod
    def _writable_text(cls, value: Any) -> Any:
        """A constraint the output must match is text the model writes as UTF-8: neither a lone surrogate
        nor a code point Unicode leaves unassigned can be (the tokenizer has no consistent bytes for one)."""
        plain = value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value
        text = json.dumps(plain, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid UTF-8 text ({exc.reason} at character {exc.start})") from None
        unassigned = next((ch for ch in text if unicodedata.category(ch) == "Cn"), None)
        if unassigned is not None:
            raise ValueError(f"contains U+{ord(unassigned):04X}, a code point Unicode leaves unassigned")
        return value

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingRequest:
        asked = [name for name in GUIDED_FIELDS if getattr(self, name) is not None]
        if self.response_format is not None and self.response_format.type != "text":
            asked.insert(0, "response_format")
        if len(asked) > 1:
            raise ValueError(f"at most one structured-output constraint per request, not {', '.join(asked)}")
        return self

    def guided(self) -> tuple[str, GuidedDecoding] | None:
        """The structured output asked for, if any, and the field that asked (for errors)."""
        rf = self.response_format
        if rf is not None and rf.type == "json_object":
            return "response_format", GuidedDecoding(json_object=True)
        if rf is not None and rf.json_schema is not None:
            return "response_format", GuidedDecoding(json=json.dumps(rf.json_schema.schema_, sort_keys=True))
        if self.guided_json is not None:
            schema = self.guided_json if isinstance(self.guided_json, str) else json.dumps(self.guided_json,
                                                                                            sort_keys=True)
            return "guided_json", GuidedDecoding(json=schema)
        if self.guided_regex is not None:
            return "guided_regex", GuidedDecoding(regex=self.guided_regex)
        if self.guided_choice is not None:
            return "guided_choice", GuidedDecoding(choice=tuple(self.guided_choice))
        if self.guided_grammar is not None:
            return "guided_grammar", GuidedDecoding(grammar=self.guided_grammar)
        return None

    def token_bias(self) -> dict[int, float]:
        return {int(token): bias for token, bias in (self.logit_bias or {}).items()}

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
            logprobs=self.top_logprobs_wanted(), ignore_eos=bool(self.ignore_eos),
            logit_bias=self.token_bias(), guided=self.constraint())

    def constraint(self) -> GuidedDecoding | None:
        """The engine's constraint on the output (chat's tool calling adds its own)."""
        asked = self.guided()
        return asked[1] if asked else None

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

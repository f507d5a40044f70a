"""/v1/chat/completions: request and response models, in the order of the OpenAI docs."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tuneforge.serve.api.protocol import STRICT, Integral, ResponseHead, SamplingRequest, Usage, refuse


class ContentPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = STRICT

    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    """A call the assistant made (in a request's history, and in an answer)."""

    model_config = STRICT

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant
    tool_call_id: str | None = None  # tool: the call this message answers
    refusal: str | None = None  # an assistant message handed back as the SDK returned it

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = STRICT

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; none: no arguments
    strict: bool | None = None  # arguments always follow `parameters` when tool_choice forces a call


class Tool(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = STRICT

    name: str


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1), Integral] | None = None
    max_tokens: Annotated[int, Field(ge=1), Integral] | None = Field(
        None, description="deprecated OpenAI alias of max_completion_tokens")
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = Field(None, description="default auto with tools, none without")
    parallel_tool_calls: bool | None = Field(None, description="default true: several calls in one answer")
    store: bool | None = Field(None, description="only false: this server stores no completions")
    modalities: list[Literal["text"]] | None = Field(None, description="only [\"text\"]")
    # OpenAI parameters this server does not implement: any non-null value is a 400 naming it
    audio: Any = None
    function_call: Any = None
    functions: Any = None
    metadata: Any = None
    moderation: Any = None
    prediction: Any = None
    prompt_cache_key: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None
    reasoning_effort: Any = None
    safety_identifier: Any = None
    service_tier: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    _audio = refuse("audio", "text output only")
    _function_call = refuse("function_call", "deprecated by OpenAI: use tool_choice")
    _functions = refuse("functions", "deprecated by OpenAI: use tools")
    _metadata = refuse("metadata", "no stored completions to tag")
    _moderation = refuse("moderation", "use the gateway's guards")
    _prediction = refuse("prediction", "no predicted-output decoding")
    _prompt_cache_key = refuse("prompt_cache_key", "no prompt cache across requests")
    _prompt_cache_options = refuse("prompt_cache_options", "no prompt cache across requests")
    _prompt_cache_retention = refuse("prompt_cache_retention", "no prompt cache across requests")
    _reasoning_effort = refuse("reasoning_effort", "not a reasoning model")
    _safety_identifier = refuse("safety_identifier", "use user")
    _service_tier = refuse("service_tier", "one tier")
    _verbosity = refuse("verbosity", "not a reasoning model")
    _web_search_options = refuse("web_search_options", "no web search")

    @field_validator("store")
    @classmethod
    def _not_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("store: true is not supported by this server (it stores no completions)")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_of_tools(cls, value: Any, info: ValidationInfo) -> Any:
        names = [t.function.name for t in info.data.get("tools") or []]
        if isinstance(value, NamedToolChoice) and value.function.name not in names:
            raise ValueError(f"tool_choice names function {value.function.name!r}, which is not in tools "
                             f"({', '.join(names) or 'none given'})")
        if value == "required" and not names:
            raise ValueError("tool_choice required needs tools")
        return value

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatCompletionRequest:
        if self.tools and self.forced_tools() and self.guided():
            raise ValueError("a forced tool call and a structured-output constraint cannot be combined")
        return self

    def tool_mode(self) -> str:
        """none | auto | required | named (OpenAI's default: auto with tools, none without)."""
        if not self.tools:
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    def forced_tools(self) -> list[Tool]:
        """The tools a call is forced to one of (required, a named function), else none."""
        mode = self.tool_mode()
        if mode == "required":
            return list(self.tools or [])
        if mode == "named" and isinstance(self.tool_choice, NamedToolChoice):
            return [t for t in self.tools or [] if t.function.name == self.tool_choice.function.name]
        return []

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def engine_messages(self) -> list[dict[str, Any]]:
        """Messages as the chat template takes them (`developer` is OpenAI's new name for `system`); an
        assistant's tool calls and a tool's answer in transformers' form (arguments as objects)."""
        out: list[dict[str, Any]] = []
        for m in self.messages:
            message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.tool_calls:
                message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.function.name, "arguments": _arguments(c.function.arguments)}} for c in m.tool_calls]
            if m.tool_call_id:
                message["tool_call_id"] = m.tool_call_id
            out.append(message)
        return out


def _arguments(text: str) -> Any:
    """A call's arguments as an object (templates render them so); text that is not JSON stays text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str


class ChatCompletion(ResponseHead):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChunkChoice(BaseModel):
    index: int
    delta: dict[str, Any]
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(ResponseHead):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None

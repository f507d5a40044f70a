"""Tool calling in the Hermes format (NousResearch Hermes 2 Pro, Qwen 2.5; vLLM's `hermes` parser): the
tools are described in the system prompt and the model answers a call as

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A chat template that takes `tools` itself (transformers' `apply_chat_template(..., tools=...)`) renders
them; one that does not (SmolLM2's) gets the Hermes system prompt below, the assistant's past calls as
`<tool_call>` blocks and tool results as `<tool_response>` blocks in a user turn (as Qwen's template
renders them). `forced_call_grammar` is the Lark grammar (llguidance, with `%json` schemas) that makes a
`required` or named `tool_choice` produce valid calls whatever the model; `parse_tool_calls` and
`ToolCallStream` turn output text back into OpenAI's `tool_calls`, whole or as stream deltas.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.S)
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}

HERMES_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
    "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
    "about what values to plug into functions. Here are the available tools:\n<tools>\n{tools}\n</tools>\n"
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>')


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a `tools` argument itself."""
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def hermes_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages with tools, calls and results written out in the Hermes format, for a template without
    tool support: every message becomes plain role + content."""
    out: list[dict[str, str]] = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            blocks = [f"{OPEN}\n" + json.dumps({"name": c["function"]["name"], "arguments": _as_object(
                c["function"]["arguments"])}, ensure_ascii=False) + f"\n{CLOSE}" for c in m["tool_calls"]]
            content = "\n".join([content, *blocks] if content else blocks)
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": content})
    if not tools:  # a history with calls, and no tools offered now
        return out
    system = HERMES_SYSTEM.format(tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools))
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + system}
    else:
        out.insert(0, {"role": "system", "content": system})
    return out


def _as_object(arguments: Any) -> Any:
    """Arguments as OpenAI sends them (JSON text) or as templates take them (an object): an object."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def render_with_tools(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The prompt of a chat with tools, ending with the assistant's generation prompt."""
    if template_takes_tools(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                             add_generation_prompt=True)
    return tokenizer.apply_chat_template(hermes_messages(messages, tools), tokenize=False,
                                         add_generation_prompt=True)


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of `tools` (OpenAI tool dicts)."""
    options = [{"type": "object", "properties": {
        "name": {"const": t["function"]["name"]},
        "arguments": t["function"].get("parameters") or NO_ARGUMENTS},
        "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": {"whitespace_flexible": False}}  # compact: a weak model cannot pad forever


def forced_call_grammar(tools: list[dict[str, Any]], parallel: bool) -> str:
    """A Lark grammar (llguidance) whose sentences are one call (or, with `parallel`, one or more) to
    `tools`, each a `<tool_call>` block whose JSON names the function and has arguments valid for it."""
    calls = 'call ("\\n" call)*' if parallel else "call"
    return (f"start: {calls}\n"
            f'call: "{OPEN}\\n" body "\\n{CLOSE}"\n'
            f"body: %json {json.dumps(call_schema(tools), ensure_ascii=False)}\n")


def _parse_one(body: str) -> ParsedCall | None:
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(call["name"], json.dumps(arguments, ensure_ascii=False))


def parse_tool_calls(text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content, calls) of a whole answer: text outside well-formed `<tool_call>` blocks is the content
    (None when empty); a block whose JSON does not parse stays in the content, as the model wrote it."""
    calls: list[ParsedCall] = []
    content, last = [], 0
    for match in _CALL.finditer(text):
        call = _parse_one(match.group(1).strip())
        if call is None:
            continue
        content.append(text[last:match.start()])
        calls.append(call)
        last = match.end()
    content.append(text[last:])
    rest = "".join(content).strip() if calls else "".join(content)
    return (rest or None), calls


class ToolCallStream:
    """Streamed text in, OpenAI chat deltas out: content as it comes (holding back what may open a
    `<tool_call>`), and each call, once its block closes, as two deltas: its id and name with empty
    arguments, then its arguments (as OpenAI and vLLM stream them)."""

    def __init__(self, new_id: Any, max_calls: int | None = None) -> None:
        self.new_id, self.max_calls = new_id, max_calls  # calls past max_calls are dropped
        self.buffer = ""
        self.inside = False
        self.calls = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buffer += text
        deltas: list[dict[str, Any]] = []
        while True:
            if not self.inside:
                start = self.buffer.find(OPEN)
                if start < 0:
                    keep = _partial_suffix(self.buffer, OPEN)
                    self._content(deltas, self.buffer[:len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                    return deltas
                self._content(deltas, self.buffer[:start])
                self.buffer, self.inside = self.buffer[start + len(OPEN):], True
            end = self.buffer.find(CLOSE)
            if end < 0:
                return deltas
            body, self.buffer, self.inside = self.buffer[:end], self.buffer[end + len(CLOSE):], False
            call = _parse_one(body.strip())
            if call is None:
                self._content(deltas, OPEN + body + CLOSE)
                continue
            if self.max_calls is not None and self.calls >= self.max_calls:
                continue
            index, self.calls = self.calls, self.calls + 1
            deltas.append({"tool_calls": [{"index": index, "id": self.new_id(), "type": "function",
                                           "function": {"name": call.name, "arguments": ""}}]})
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})

    def flush(self) -> list[dict[str, Any]]:
        """What is left at the end (an unclosed block is content, as the model wrote it)."""
        deltas: list[dict[str, Any]] = []
        self._content(deltas, (OPEN if self.inside else "") + self.buffer)
        self.buffer, self.inside = "", False
        return deltas

    def _content(self, deltas: list[dict[str, Any]], text: str) -> None:
        if text and not (self.calls and text.isspace()):  # the newlines between calls are not content
            deltas.append({"content": text})


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that begins `marker` (it may be the start of one)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0

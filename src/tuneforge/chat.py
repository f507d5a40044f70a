"""`tuneforge chat`: a terminal conversation with a local model or an OpenAI-compatible server."""

from __future__ import annotations

import os
from collections.abc import Iterator

from tuneforge.core.progress import console


def _local_stream(model: str, max_tokens: int, temperature: float, dtype: str | None = None):
    from tuneforge.models import load
    from tuneforge.models.generate import SamplingParams, render_prompt
    from tuneforge.serve.engine.engine import Engine, EngineLimits

    loaded = load(model, dtype=dtype)
    engine = Engine(loaded, EngineLimits(max_num_seqs=1)).start()
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature)

    def ask(messages: list[dict[str, str]]) -> Iterator[str]:
        ids = loaded.tokenizer(render_prompt(loaded.tokenizer, messages), add_special_tokens=False)["input_ids"]
        for delta in engine.stream(ids, params):
            if delta.error:
                raise RuntimeError(delta.error)
            yield delta.text

    return ask


def _remote_stream(url: str, max_tokens: int, temperature: float):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=os.environ.get("TUNEFORGE_API_KEY", "not-needed"))
    name = client.models.list().data[0].id

    def ask(messages: list[dict[str, str]]) -> Iterator[str]:
        stream = client.chat.completions.create(model=name, messages=messages, max_tokens=max_tokens,
                                                temperature=temperature, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return ask


def chat_session(model: str | None, url: str | None, prompt: str | None, system: str | None,
                 max_tokens: int, temperature: float, dtype: str | None = None) -> None:
    """Ask once (`prompt`) or run an interactive session; answers are printed as they stream."""
    ask = (_remote_stream(url, max_tokens, temperature) if url
           else _local_stream(model or "", max_tokens, temperature, dtype))
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)

    def answer(text: str) -> None:
        history.append({"role": "user", "content": text})
        reply = ""
        for piece in ask(history):
            reply += piece
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": reply})

    if prompt is not None:
        answer(prompt)
        return
    console.print("[dim]/reset clears the history, /exit or Ctrl-D leaves[/dim]")
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history[:] = list(start)
            continue
        if text:
            answer(text)

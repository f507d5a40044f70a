"""LLM-as-judge: an OpenAI-compatible endpoint scores answers 1–5 against a rubric.

The prompt and every raw verdict are kept in the report, so a reviewer can audit the judge.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tuneforge.core.config import JudgeConfig, default

DEFAULT_RUBRIC = ("Score how well the ANSWER responds to the QUESTION, using the REFERENCE or KEY facts when "
                  "given: 5 = correct and complete, 3 = partly correct, 1 = wrong or off-topic.")
PROMPT = ("You are a strict evaluator.\n{rubric}\n\nQUESTION: {question}\nREFERENCE: {reference}\n"
          "ANSWER: {answer}\n\nReply with 'SCORE: <1-5>' and one short sentence of reasons.")
_SCORE = re.compile(r"SCORE:\s*([1-5])", re.IGNORECASE)


def parse_score(verdict: str) -> int | None:
    """The 1–5 score in a verdict, or None when the judge did not follow the format."""
    match = _SCORE.search(verdict)
    return int(match.group(1)) if match else None


def judge_answers(rows: list[dict[str, Any]], answers: list[str], base_url: str, model: str | None,
                  api_key_env: str, rubric: str, max_tokens: int | None = None) -> list[dict[str, Any]]:
    """A verdict per answer: the prompt sent, the raw reply, the parsed score (None if unparseable)."""
    max_tokens = max_tokens or default(JudgeConfig, "max_tokens")
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env, "not-needed"))
    name = model or client.models.list().data[0].id
    verdicts = []
    for row, answer in zip(rows, answers, strict=True):
        reference = row.get("reference") or ", ".join(row.get("keys", [])) or "(none)"
        prompt = PROMPT.format(rubric=rubric, question=row["question"], reference=reference, answer=answer)
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, temperature=0)
        raw = reply.choices[0].message.content or ""
        verdicts.append({"prompt": prompt, "verdict": raw, "score": parse_score(raw)})
    return verdicts

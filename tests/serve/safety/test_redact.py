"""PII on the way in (placeholders) and out (redaction, re-identification), streamed at every split point."""

import random

import pytest

from tuneforge.core.pii import find_pii
from tuneforge.core.safety_config import InjectionGuardConfig, PiiGuardConfig, SafetyConfig
from tuneforge.serve.safety import OutputGuard, check_input
from tuneforge.serve.safety.redact import Reidentifier, StreamRedactor, redact_messages

CFG = SafetyConfig(injection=InjectionGuardConfig(enabled=False))
VALUES = {
    "EMAIL": "jane.roe@example.org",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "PHONE": "+44 20 7946 0958",
    "SSN": "123-45-6789",
    "IP_ADDRESS": "192.168.10.20",
    "SECRET": "sk-proj-abcdefghijklmnopqrstuvwx1234",
    "CN_ID": "11010519491231002X",
}


def batch_redact(text: str, cfg: PiiGuardConfig) -> str:
    out, last = [], 0
    for start, end, kind, _ in find_pii(text, cfg.types, cfg.allow, cfg.phone_regions):
        out += [text[last:start], cfg.output_mask.format(kind=kind)]
        last = end
    return "".join(out) + text[last:]


def stream(redactor, pieces):
    return "".join(redactor.feed(p) for p in pieces) + redactor.finish()


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_streamed_redaction_split_at_every_character_boundary(kind):
    value = VALUES[kind]
    text = f"Sure, the details are {value}. Anything else?"
    expected = batch_redact(text, CFG.pii)
    assert value not in expected and f"[{kind}]" in expected
    for cut in range(len(text) + 1):  # two pieces, split at every boundary, the value's inside included
        out = stream(StreamRedactor(CFG.pii), [text[:cut], text[cut:]])
        assert out == expected, (cut, out)
    assert stream(StreamRedactor(CFG.pii), list(text)) == expected  # one character at a time


def test_streamed_redaction_equals_batch_on_random_chunkings():
    rng = random.Random(7)
    for _ in range(60):
        parts = [rng.choice(["Call ", "or mail ", "ok. ", "Order 1182 costs $49.99 ", "\n", "192.168.1.1.5 "]) +
                 rng.choice(list(VALUES.values()) + ["12345", "no pii here"]) for _ in range(4)]
        text = " ".join(parts)
        pieces, i = [], 0
        while i < len(text):
            step = rng.randint(1, 9)
            pieces.append(text[i:i + step])
            i += step
        assert stream(StreamRedactor(CFG.pii), pieces) == batch_redact(text, CFG.pii), text


def test_release_holds_back_only_what_could_still_match():
    redactor = StreamRedactor(CFG.pii)
    assert redactor.feed("The refund is on its way. ") == "The refund is on its way. "
    assert redactor.feed("Card 4111 1111") == "Card "  # the digits could become a card number
    assert redactor.feed(" 1111 1111 done") == "[CREDIT_CARD] "  # "done" could still be an e-mail's local part
    assert redactor.finish() == "done"


def test_allowed_values_and_ordinary_numbers_pass():
    cfg = PiiGuardConfig(allow=["support@quillon.example"])
    text = "Write to support@quillon.example; order 1182 ships in 3-5 days for $49.99 on 2024-05-01."
    assert stream(StreamRedactor(cfg), list(text)) == text


def test_check_input_redacts_with_reversible_placeholders():
    messages = [{"role": "system", "content": "You are a support bot."},
                {"role": "user", "content": "I am jane.roe@example.org, card 4111 1111 1111 1111."},
                {"role": "user", "content": [{"type": "text", "text": "Again: jane.roe@example.org"}]}]
    check = check_input(messages, CFG)
    assert check.messages[1]["content"] == "I am <EMAIL>, card <CREDIT_CARD>."
    assert check.messages[2]["content"][0]["text"] == "Again: <EMAIL>"  # the same value, the same placeholder
    assert check.placeholders == {"<EMAIL>": "jane.roe@example.org", "<CREDIT_CARD>": "4111 1111 1111 1111"}
    assert messages[1]["content"].startswith("I am jane")  # the caller's list is not modified
    assert [f.guard for f in check.verdict.findings] == ["pii", "pii"] and check.verdict.flagged
    assert not check.verdict.blocked


def test_answer_reidentified_for_the_caller_and_other_people_redacted():
    check = check_input([{"role": "user", "content": "Mail me at jane.roe@example.org"}], CFG)
    answer = "Done, <EMAIL> is subscribed. Your colleague bob@corp.example.com was too."
    for cut in range(len(answer) + 1):
        guard = OutputGuard(CFG, check.placeholders)
        out = guard.feed(answer[:cut]) + guard.feed(answer[cut:]) + guard.finish()
        assert out == "Done, jane.roe@example.org is subscribed. Your colleague [EMAIL] was too.", cut
    assert [f.guard for f in guard.verdict.findings] == ["pii"]


def test_reidentify_off_keeps_placeholders():
    cfg = SafetyConfig(injection=InjectionGuardConfig(enabled=False), pii=PiiGuardConfig(reidentify=False))
    check = check_input([{"role": "user", "content": "Mail me at jane.roe@example.org"}], cfg)
    guard = OutputGuard(cfg, check.placeholders)
    assert guard.check("Sent to <EMAIL>.") == "Sent to <EMAIL>."


def test_reidentifier_holds_a_placeholder_prefix():
    r = Reidentifier({"<EMAIL>": "a@b.cd", "<EMAIL_2>": "x@y.zz"})
    assert r.feed("to <EM") == "to "
    assert r.feed("AIL_2> and <EMAIL") == "x@y.zz and "
    assert r.feed("> ok <") == "a@b.cd ok "
    assert r.finish() == "<"


def test_redact_messages_reports_spans_per_message():
    _, placeholders, spans = redact_messages([{"role": "user", "content": "ip 10.0.0.1 ok"}], PiiGuardConfig())
    assert placeholders == {"<IP_ADDRESS>": "10.0.0.1"} and spans[0][0][:3] == (3, 11, "IP_ADDRESS")

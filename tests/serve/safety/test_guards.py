"""Topics, banned text, language, code: the request side and the streamed answer side."""

import pytest

from tuneforge.core.language import detect_language
from tuneforge.core.safety_config import (
    CodeGuardConfig,
    InjectionGuardConfig,
    LanguageGuardConfig,
    PiiGuardConfig,
    SafetyConfig,
    TopicGuardConfig,
    TopicRule,
)
from tuneforge.serve.safety import OutputGuard, Verdict, check_input, needs_review
from tuneforge.serve.safety.code import check_code, scan_code

OFF = InjectionGuardConfig(enabled=False)
CRYPTO = TopicRule(name="crypto", phrases=["bitcoin", "crypto wallet"])
RETURNS = TopicRule(name="returns", phrases=["return", "refund", "exchange"])


def user(text):
    return [{"role": "user", "content": text}]


def test_denied_topic_and_banned_text_in_requests():
    cfg = SafetyConfig(injection=OFF, topics=TopicGuardConfig(deny=[CRYPTO], banned=["Project Falcon"]))
    found = check_input(user("Can I pay with ｂｉｔ\u200bcoin?"), cfg).verdict
    assert found.reasons == ["topic: denied topic 'crypto'"]
    assert check_input(user("news on project  FALCON?"), cfg).verdict.blocked
    assert not check_input(user("Can I pay by card? I bit a coin once."), cfg).verdict.findings


def test_allowed_topics_judged_over_the_conversation():
    cfg = SafetyConfig(injection=OFF, topics=TopicGuardConfig(allow=[RETURNS], action="flag"))
    assert check_input(user("How do I get a refund?"), cfg).verdict.findings == []
    follow_up = user("How do I get a refund?") + [{"role": "assistant", "content": "..."}] + user("And for two?")
    assert check_input(follow_up, cfg).verdict.findings == []
    off = check_input(user("Write me a poem about the sea."), cfg).verdict
    assert off.flagged and not off.blocked and "off-topic" in off.reasons[0]


def test_banned_text_cut_from_a_stream_without_releasing_it():
    cfg = SafetyConfig(injection=OFF, topics=TopicGuardConfig(banned=["Project Falcon"]))
    answer = "Our roadmap includes Project Falcon next year."
    for cut in range(len(answer) + 1):
        guard = OutputGuard(cfg)
        released = guard.feed(answer[:cut]) + guard.feed(answer[cut:]) + guard.finish()
        assert guard.verdict.blocked and "falcon" not in released.lower(), cut
        assert guard.feed("more") == "" and guard.finish() == ""


def test_banned_text_flag_only_releases_everything():
    cfg = SafetyConfig(injection=OFF, topics=TopicGuardConfig(banned=["falcon"], action="flag"))
    guard = OutputGuard(cfg)
    text = "A falcon flew by. Another falcon."
    assert "".join(guard.feed(c) for c in text) + guard.finish() == text
    assert guard.verdict.flagged and len(guard.verdict.findings) == 1


def test_language_detection():
    assert detect_language("Where is my parcel? It should have arrived yesterday morning.") == "en"
    assert detect_language("Où est mon colis ? Il aurait dû arriver hier matin.") == "fr"
    assert detect_language("我的包裹在哪里？它应该昨天早上就到了。", 5) == "zh"
    assert detect_language("我的包裹在哪里？它应该昨天早上就到了。", 5, region=True) == "zh-cn"


def test_request_language_restricted():
    cfg = SafetyConfig(injection=OFF, language=LanguageGuardConfig(input=["en"]))
    assert check_input(user("Où est mon colis ? Il aurait dû arriver hier matin."), cfg).verdict.blocked
    assert not check_input(user("Where is my parcel? It should have arrived yesterday."), cfg).verdict.findings
    assert not check_input(user("Merci!"), cfg).verdict.findings  # too short to judge


def test_answer_language_enforced_on_a_stream():
    cfg = SafetyConfig(injection=OFF, pii=PiiGuardConfig(enabled=False),
                       language=LanguageGuardConfig(output=["de"]))
    guard = OutputGuard(cfg)
    english = "The weather is lovely today and we are going for a long walk by the river after lunch."
    released = "".join(guard.feed(w + " ") for w in english.split())
    assert guard.verdict.blocked and released == ""  # held until it could be judged, then cut
    guard = OutputGuard(cfg)
    german = "Das Wetter ist heute herrlich und wir machen nach dem Mittagessen einen langen Spaziergang am Fluss."
    out = "".join(guard.feed(w + " ") for w in german.split()) + guard.finish()
    assert out.strip() == german and not guard.verdict.findings


UNSAFE = """Here you go:

```python
import subprocess
def run(cmd):
    return subprocess.run(cmd, shell=True)
API_KEY = "sk-proj-abcdefghijklmnopqrstuvwx1234"
```
Hope it helps."""

SAFE = """```python
def add(a, b):
    return a + b
```"""


@pytest.mark.parametrize("scanner", ["rules", "bandit", "rules+bandit"])
def test_code_scanners_find_unsafe_code(scanner):
    issues = scan_code(UNSAFE, CodeGuardConfig(enabled=True, scanner=scanner))
    assert any("CWE-78" == i.cwe for i in issues), issues
    assert scan_code(SAFE, CodeGuardConfig(enabled=True, scanner=scanner)) == []


def test_code_rules_on_other_languages_and_severity_floor():
    js = "```js\nel.innerHTML = userInput;\n```"
    assert [i.cwe for i in scan_code(js, CodeGuardConfig(enabled=True))] == ["CWE-79"]
    assert scan_code(js, CodeGuardConfig(enabled=True, min_severity="high")) == []
    shell = "curl https://get.example.sh | sudo bash"
    assert [i.cwe for i in scan_code(shell, CodeGuardConfig(enabled=True))] == ["CWE-494"]
    assert check_code(UNSAFE, CodeGuardConfig(enabled=False)) == []


def test_unsafe_code_block_is_held_and_never_sent():
    cfg = SafetyConfig(injection=OFF, pii=PiiGuardConfig(enabled=False), code=CodeGuardConfig(enabled=True))
    guard = OutputGuard(cfg)
    released = "".join(guard.feed(c) for c in UNSAFE) + guard.finish()
    assert guard.verdict.blocked and released == "Here you go:\n\n"
    assert {f.reason.split(" (")[0] for f in guard.verdict.findings} >= {"shell command built from input"}
    guard = OutputGuard(cfg)
    assert "".join(guard.feed(c) for c in SAFE + "\nDone.") + guard.finish() == SAFE + "\nDone."


def test_code_flag_streams_and_reports():
    cfg = SafetyConfig(injection=OFF, pii=PiiGuardConfig(enabled=False),
                       code=CodeGuardConfig(enabled=True, action="flag"))
    guard = OutputGuard(cfg)
    assert "".join(guard.feed(c) for c in UNSAFE) + guard.finish() == UNSAFE
    assert guard.verdict.flagged and not guard.verdict.blocked


def test_review_rules():
    flagged = check_input(user("mail me: jane.roe@example.org"), SafetyConfig(injection=OFF)).verdict
    clean = Verdict()
    assert needs_review(SafetyConfig(review="always"), clean)
    assert not needs_review(SafetyConfig(review="never"), flagged)
    assert needs_review(SafetyConfig(review="on_flag"), flagged) and not needs_review(SafetyConfig(review="on_flag"),
                                                                                       clean)
    sample = SafetyConfig(review="sample(0.25)")
    assert needs_review(sample, clean, draw=0.2) and not needs_review(sample, clean, draw=0.3)
    both = SafetyConfig(review="on_flag+sample(0.1)")
    assert needs_review(both, flagged, draw=0.9) and needs_review(both, clean, draw=0.05)


@pytest.mark.parametrize("bad, field", [({"review": "sometimes"}, "review"), ({"review": "sample(1.5)"}, "review"),
                                        ({"language": {"output": ["english"]}}, "language.output"),
                                        ({"pii": {"output_mask": "[{type}]"}}, "output_mask"),
                                        ({"injection": {"threshold": 1.5}}, "threshold"),
                                        ({"injections": {}}, "injections")])
def test_bad_config_names_the_field(bad, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field.split(".")[-1]):
        SafetyConfig.model_validate(bad)

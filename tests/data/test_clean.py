"""Cleaning steps on small crafted inputs with exact expected outputs."""

from tuneforge.core.language import detect_language
from tuneforge.data.clean import (
    dedup_rows,
    filter_rows,
    normalize_text,
    repetition_ratio,
    scrub_rows,
    shingles,
    symbol_ratio,
)


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_normalize_english_and_chinese():
    assert normalize_text("  Ｈｅｌｌｏ\u00a0 wor\u200bld\t!\r\n\n\n\nBye ﬁne ") == "Hello world !\n\nBye fine"
    # full-width CJK punctuation stays; full-width digits become ASCII
    assert normalize_text("价格：１２３元，谢谢！") == "价格：123元，谢谢！"
    assert normalize_text("a\x00b\x07c") == "abc"


def test_fenced_code_keeps_its_indentation():
    text = "Use  it   so:\n```python\ndef f(x):  \n    if x:\n        return  {'a':  1}\n```\n\n\n\nThen   run it."
    assert normalize_text(text) == ("Use it so:\n```python\ndef f(x):\n    if x:\n        return  {'a':  1}\n```"
                                    "\n\nThen run it.")
    # an answer cut off inside its code block keeps the code's indentation too
    assert normalize_text("Like this:\n~~~\nfor i in x:\n    go(i)") == "Like this:\n~~~\nfor i in x:\n    go(i)"


def test_strip_html():
    text = "<p>Hello&nbsp;<b>world</b></p><script>alert(1)</script><br>Line &amp; more<!-- c -->"
    assert normalize_text(text, html_strip=True) == "Hello world\n\nLine & more"  # </p> then <br>
    assert normalize_text("a <b>b</b>") == "a <b>b</b>"  # off by default


def test_exact_and_near_dedup():
    base = ("How long does delivery to Norway take for a standard parcel with tracking included when I order "
            "before noon on a weekday and pay with a card from a bank in Belgium")  # 30 words
    rows = [chat(base, "Three days."), chat(base.upper() + "  ", "three   days."),   # exact after folding
            chat(base.replace("standard", "normal"), "Three days."),                     # near
            chat("Completely different question about refunds", "Seven days.")]
    kept, stats = dedup_rows(rows, threshold=0.7)
    assert kept == [rows[0], rows[3]]
    assert stats.reasons == {"exact_duplicate": 1, "near_duplicate": 1}
    kept, stats = dedup_rows(rows, near=False)
    assert kept == [rows[0], rows[2], rows[3]]


def test_chinese_near_dedup_uses_characters():
    a = chat("请问这款电水壶的保修期是多久呢我想知道详细信息", "三年。")
    b = chat("请问这款电水壶的保修期是多久啊我想知道详细信息", "三年。")
    assert len(shingles("电水壶保修", 3)) == 3
    kept, stats = dedup_rows([a, b], threshold=0.7)
    assert kept == [a] and stats.reasons == {"near_duplicate": 1}


def test_filters():
    rows = [chat("ok question", "fine answer"), chat("q", "   "), chat("spam", "buy buy buy buy buy buy buy buy buy"),
            chat("???", "▓▓▓ ░░░ ■■■ ◆◆◆ ★★★ ♦♦♦ ok"), chat("a long one", "x " * 50)]
    kept, stats = filter_rows(rows, lambda rs: [len(" ".join(m["content"] for m in r["messages"]).split())
                                                for r in rs], max_tokens=40)
    assert kept == [rows[0]]
    assert stats.reasons == {"empty_answer": 1, "repetitive": 1, "symbols": 1, "too_long": 1}
    assert repetition_ratio("one two three four five six") == 0.0
    assert symbol_ratio("你好，世界！") == 0.0
    assert symbol_ratio("Costs $12.99 (20% off) & ships #1") == 0.0  # prices and ordinary signs are not junk


def test_language_filter():
    en = chat("How long is the warranty for the kettle?", "The warranty lasts three years from delivery.")
    de = chat("Wie lange gilt die Garantie für den Wasserkocher?", "Die Garantie gilt drei Jahre ab Lieferung.")
    zh = chat("这款电水壶的保修期是多久？", "自交货之日起保修三年，请保留好发票。")
    short = chat("Hi", "Hallo")
    assert detect_language("Hi") is None
    kept, stats = filter_rows([en, de, zh, short], languages=["en", "zh"])
    assert kept == [en, zh, short] and stats.reasons == {"language:de": 1}


def test_pii_step_counts_per_type():
    rows = [chat("mail a@x.com, call 13812345678", "noted a@x.com"), chat("no pii here", "ok")]
    kept, stats = scrub_rows(rows, ["EMAIL", "PHONE"])
    assert kept[0]["messages"][0]["content"] == "mail <EMAIL>, call <PHONE>"
    assert kept[0]["messages"][1]["content"] == "noted <EMAIL>"
    assert stats.changed == 1 and stats.details["found"] == {"EMAIL": 2, "PHONE": 1}


def test_pii_step_counts_the_answers_left_with_a_placeholder():
    hotline = "Call our fraud line at +44 20 7946 0958, day or night."
    rows = [chat("Fraud line number?", hotline), chat("Who do I call about fraud?", hotline),
            chat("my mail is a@x.com, what is the fee?", "The fee is 2 EUR."),  # PII in the question only
            chat("Support address?", "Write to help@veltra.example or call +44 20 7946 0958.")]
    _, stats = scrub_rows(rows, ["EMAIL", "PHONE"])
    # two distinct answers now teach a placeholder (the hotline twice counts once); the question-only row none
    assert stats.details["answers_with_placeholders"] == 2
    assert stats.details["answer_placeholder_types"] == {"EMAIL": 1, "PHONE": 2}
    _, allowed = scrub_rows(rows, ["EMAIL", "PHONE"], allow=["+44 20 7946 0958", "help@veltra.example"])
    assert allowed.details["answers_with_placeholders"] == 0 and allowed.details["found"] == {"EMAIL": 1}

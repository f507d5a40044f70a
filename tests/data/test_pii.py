"""PII: true positives and true negatives per type, in English and Chinese text."""

import pytest

from tuneforge.data.pii import RowScrubber, cn_id_ok, find_pii, iban_ok, luhn_ok, scrub_text

POSITIVES = [
    ("EMAIL", "Write to john.doe+billing@example.co.uk today", "john.doe+billing@example.co.uk"),
    ("EMAIL", "请发邮件到zhang.san@example.cn。", "zhang.san@example.cn"),
    ("PHONE", "电话13812345678。", "13812345678"),
    ("PHONE", "手机：+86 138 1234 5678，谢谢", "+86 138 1234 5678"),
    ("PHONE", "Call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("PHONE", "US office (415) 555-0132.", "(415) 555-0132"),
    ("PHONE", "Ring +49 30 901820 tomorrow", "+49 30 901820"),
    ("CREDIT_CARD", "Visa 4111 1111 1111 1111 expires", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "卡号5500-0000-0000-0004已冻结", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "账户GB82WEST12345698765432。", "GB82WEST12345698765432"),
    ("IP_ADDRESS", "from 192.168.1.20, port 22", "192.168.1.20"),
    ("IP_ADDRESS", "服务器地址2001:db8::8a2e:370:7334出错", "2001:db8::8a2e:370:7334"),
    ("CN_ID", "身份证号11010519491231002X，请核对", "11010519491231002X"),
    ("SSN", "SSN: 123-45-6789.", "123-45-6789"),
    ("SECRET", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz123456", "sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
    ("SECRET", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("SECRET", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "login with password: hunter2xyz ok", "hunter2xyz"),
    ("SECRET", "密码 pwd=Tr0ub4dor3 已过期", "Tr0ub4dor3"),
    ("CREDENTIALS", "db at postgres://admin:s3cret@db.example.com:5432/app", "admin:s3cret"),
]

NEGATIVES = [
    "The K2 costs $1,299.99; we sold 12000 units on 2024-05-17 at 14:30.",
    "Order QA-12345678 ships in 2 to 4 business days.",
    "ISBN 978-3-16-148410-0, version 2.0.1, build 20240517.",
    "订单号 2023123100001，数量 3 件，价格 ¥199.00，2024年5月17日发货。",
    "Not a card: 1234 5678 9012 3456 (fails Luhn).",
    "Not an ID: 110105194912310021 (bad check digit), 110105199913310021 (no such date).",
    "Not an SSN: 000-12-3456, 666-12-3456, 900-12-3456.",
    "Times 12:30:45 and ratios 3:2:1; version 1.2.3; 999.1.1.1 is no IP.",
    "Call extension 4521 or dial 911. Room 1203, floor 12.",
    "Quantities: 13812 kg, 138123 pcs; the year 2011; zip 10115.",
    "password: short",  # too short to be a secret
    "Visit https://example.com/path?q=1 and user@ (no domain).",
]


@pytest.mark.parametrize("kind, text, value", POSITIVES)
def test_true_positives(kind, text, value):
    spans = find_pii(text)
    assert [(k, v) for _, _, k, v in spans] == [(kind, value)]
    scrubbed, counts = scrub_text(text)
    assert value not in scrubbed and f"<{kind}>" in scrubbed
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", NEGATIVES)
def test_true_negatives(text):
    assert find_pii(text) == []
    assert scrub_text(text)[0] == text


def test_consistent_within_a_row():
    scrub = RowScrubber()
    a = scrub("Mail a@x.com and b@y.org")
    b = scrub("Again: b@y.org, then a@x.com")
    assert a == "Mail <EMAIL> and <EMAIL_2>"
    assert b == "Again: <EMAIL_2>, then <EMAIL>"
    assert scrub.counts == {"EMAIL": 4}


def test_only_selected_types():
    text, counts = scrub_text("a@x.com 13812345678", kinds=["PHONE"])
    assert text == "a@x.com <PHONE>" and counts == {"PHONE": 1}


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")


def test_allow_list_keeps_business_contacts():
    text = "Email help@quillon.example or call +32 9 555 0142; my own is me@home.org"
    scrubbed, counts = scrub_text(text, allow=["HELP@quillon.example", "+3295550142"])
    assert scrubbed == "Email help@quillon.example or call +32 9 555 0142; my own is <EMAIL>"
    assert counts == {"EMAIL": 1}


def test_national_phone_formats_with_regions():
    text = "Ring 020 7946 0958 or 030 901820 please; order 2024-05-17, €129."
    assert find_pii(text) == []
    spans = find_pii(text, phone_regions=["GB", "DE"])
    assert [(k, v) for _, _, k, v in spans] == [("PHONE", "020 7946 0958"), ("PHONE", "030 901820")]

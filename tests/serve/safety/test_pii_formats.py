"""Card and phone formats the output guard must catch (short issuer ranges, national phones), and the
ordinary numbers it must leave alone; streamed at every split point like the other PII."""

import pytest

from tuneforge.core.pii import card_ok, find_pii, luhn_ok
from tuneforge.core.safety_config import InjectionGuardConfig, PiiGuardConfig, SafetyConfig
from tuneforge.serve.safety import OutputGuard


def with_check_digit(body: str) -> str:
    """`body` plus the digit that makes it pass Luhn."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


CARDS = {
    "visa-13": "4222222222222",
    "maestro-12": with_check_digit("67590000000"),
    "maestro-15": with_check_digit("50180000000000"),
    "jcb-15": with_check_digit("18000000000000"),
    "diners-14": "30569309025904",
    "new-range-16": with_check_digit("355000000000000"),  # a 16-digit range outside today's JCB table
    "grouped-16": "6011 0009 9013 9424",
}
NOT_CARDS = {
    "luhn-13-no-issuer": with_check_digit("202312310000"),  # an order number that happens to pass Luhn
    "luhn-12-no-issuer": with_check_digit("12345678901"),
    "luhn-fails-13": "4222222222223",
    "too-short": with_check_digit("6759000000"),
    "no-industry-16": with_check_digit("999999999999999"),
}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_numbers_found(name):
    value = CARDS[name]
    assert card_ok(value)
    assert [(k, v) for _, _, k, v in find_pii(f"Card on file: {value}.")] == [("CREDIT_CARD", value)]


@pytest.mark.parametrize("name", sorted(NOT_CARDS))
def test_ordinary_numbers_are_not_cards(name):
    value = NOT_CARDS[name]
    assert not card_ok(value)
    assert [k for _, _, k, _ in find_pii(f"Reference {value} ships today.")] == []


PHONES = [
    ("GB", "(0115) 496 0151"),      # Ofcom's fiction range: possible, not assigned
    ("GB", "028 9018382"),
    ("DE", "(03239) 691937"),
    ("US", "4655943904"),           # ten bare digits in the North American plan
    ("US", "(460)648-7647"),
]
NOT_PHONES = [
    ("US", "Open 09:00 - 15:00 on 2023-11-22."),
    ("US", "Order 1234567890 ships."),  # area code 123 does not exist in the North American plan
    ("GB", "Order QA-01154960151 ships."),  # glued to a code: an id
    ("DE", "We sold 12000 units at 14:30."),
]


@pytest.mark.parametrize("region, value", PHONES)
def test_national_phones_found_for_configured_regions(region, value):
    text = f"Call {value} tomorrow."
    assert [(k, v) for _, _, k, v in find_pii(text, phone_regions=[region])] == [("PHONE", value)]


@pytest.mark.parametrize("region, text", NOT_PHONES)
def test_ordinary_numbers_are_not_phones(region, text):
    assert find_pii(text, phone_regions=[region]) == []


@pytest.mark.parametrize("value", [CARDS["maestro-12"], CARDS["visa-13"], "(0115) 496 0151", "4655943904"])
def test_streamed_at_every_split(value):
    cfg = SafetyConfig(injection=InjectionGuardConfig(enabled=False),
                       pii=PiiGuardConfig(phone_regions=["GB", "US"]))
    text = f"The other customer's number is {value}, noted."
    whole = OutputGuard(cfg).check(text)
    assert value not in whole
    for cut in range(1, len(text)):
        guard = OutputGuard(cfg)
        assert guard.feed(text[:cut]) + guard.feed(text[cut:]) + guard.finish() == whole

"""De-sensitize personal data: find PII spans, check them, replace them with typed placeholders.

In `core` because two layers use it: the data pipeline scrubs training rows (`data.pii` re-exports
this module) and the serving guards (`serve.safety`) redact requests and responses; `serve` may not
import `data`, and both may import `core`.

Each detector is a regex for candidates plus, where the format has one, a validator (Luhn for
cards, mod-97 for IBANs, the GB 11643 checksum and a real birth date for mainland-China ID
numbers, `ipaddress` for IPs, libphonenumber for international phones). Candidates that fail
validation are left alone: ordinary numbers (prices, quantities, dates, order numbers) survive.

Digit patterns use explicit look-arounds instead of `\\b`, because in Chinese text a digit run is
glued to the characters around it (`电话13812345678。`) and `\\b` sees no boundary there.

Replacement is consistent within a row: the same value gets the same placeholder everywhere in
the row (`<EMAIL>`), a second distinct value of the same type gets `<EMAIL_2>`, and so on.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tuneforge.core.config import ALL_PII

PII_TYPES: tuple[str, ...] = ALL_PII

_NO_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NO_ALNUM_AFTER = r"(?![0-9A-Za-z])"
_NO_DIGIT_BEFORE = r"(?<![0-9])"
_NO_DIGIT_AFTER = r"(?![0-9])"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check."""
    iban = re.sub(r"\s", "", text).upper()
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"


def cn_id_ok(text: str) -> bool:
    """GB 11643-1999: 6-digit region, a real birth date, sequence, and the mod-11 check character."""
    value = text.upper()
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        birth = _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not _dt.date(1900, 1, 1) <= birth <= _dt.date.today():
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _CN_WEIGHTS, strict=True))
    return _CN_CHECK[total % 11] == value[17]


def ssn_ok(text: str) -> bool:
    """US SSN structure: area not 000/666/9xx, group not 00, serial not 0000."""
    area, group, serial = re.split(r"[- ]", text)
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


# Issuer ranges (ISO/IEC 7812 IINs) of card numbers shorter than 16 digits, each with its lengths: a 12-15 digit
# run that passes Luhn is a card only inside one of these (order and account numbers of those lengths abound).
_SHORT_ISSUERS = (
    (re.compile(r"4"), (13,)),                                  # Visa, 13-digit (still issued in some ranges)
    (re.compile(r"3[47]"), (15,)),                              # American Express
    (re.compile(r"3(?:0[0-59]|[689])"), (14, 15)),             # Diners Club International
    (re.compile(r"1800|2131"), (15,)),                          # JCB's 15-digit ranges
    (re.compile(r"1"), (15,)),                                  # UATP (airline cards)
    (re.compile(r"50|5[6-9]|6"), (12, 13, 14, 15)),             # Maestro (50, 56-69)
)
_LONG_CARD = re.compile(r"[1-6]")  # 16-19 digits: every card scheme's major industry identifier (1-6)


def card_ok(text: str) -> bool:
    """A payment card number: the Luhn checksum, and 16-19 digits from a card industry (first digit 1-6) or a
    shorter issuer range of its length (`_SHORT_ISSUERS`).

    Long numbers are not tied to today's issuer table: schemes open new ranges (8-digit BINs since 2022),
    and a Luhn-valid 16-19 digit run in text is a card far more often than anything else.
    """
    digits = re.sub(r"[ -]", "", text)
    if not 12 <= len(digits) <= 19 or not luhn_ok(digits):
        return False
    if len(digits) >= 16:
        return _LONG_CARD.match(digits) is not None
    return any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _SHORT_ISSUERS)


def ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def intl_phone_ok(text: str) -> bool:
    """A +country number of a length that country's numbering plan allows (libphonenumber).

    "Possible" rather than "valid": new or unlisted number ranges are still somebody's phone.
    """
    import phonenumbers

    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(number)


def _allow_key(value: str) -> str:
    return "".join(value.split()).casefold()


@dataclass(frozen=True)
class Detector:
    """A PII type: candidate regex, optional validator, and the group that is replaced."""

    kind: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    group: int = 0
    gate: Callable[[str], bool] | None = None  # a cheap necessary condition, checked first for speed


_SECRET_SHAPES = re.compile(r"sk-|gh[pousr]_|github_pat_|glpat-|AKIA|ASIA|AIza|xox|_live_|_test_|hf_|eyJ")
_SECRET_WORDS = re.compile(r"(?i)key|secret|token|passw|pwd")
_DIGIT_RUN = re.compile(r"\d[\d ().+-]{5,}\d")  # every digit-shaped PII has 7+ characters like this


def _has_secret_shape(text: str) -> bool:
    return _SECRET_SHAPES.search(text) is not None


def _has_secret_word(text: str) -> bool:
    return _SECRET_WORDS.search(text) is not None


def _has_digit_run(text: str) -> bool:
    return _DIGIT_RUN.search(text) is not None


DETECTORS: tuple[Detector, ...] = (
    Detector("SECRET", re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----")),
    Detector("SECRET", re.compile(
        r"(?<![A-Za-z0-9_-])(?:"
        r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"            # OpenAI / Anthropic style
        r"|(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}"       # GitHub tokens
        r"|github_pat_[A-Za-z0-9_]{22,}"
        r"|glpat-[A-Za-z0-9_-]{20,}"                       # GitLab
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}"                      # AWS access key id
        r"|AIza[0-9A-Za-z_-]{35}"                          # Google API key
        r"|xox[abposr]-[A-Za-z0-9-]{10,}"                  # Slack
        r"|(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"    # Stripe
        r"|hf_[A-Za-z0-9]{30,}"                            # Hugging Face
        r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
        r")(?![A-Za-z0-9_-])"), gate=_has_secret_shape),
    Detector("SECRET", re.compile(
        r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|pwd)"
        r"\s*[:=]\s*[\"']?([^\s\"',;]{6,})"), group=1, gate=_has_secret_word),
    Detector("CREDENTIALS", re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^\s/:@]+:[^\s/@]+)@"), group=1,
             gate=lambda t: "://" in t and "@" in t),
    Detector("EMAIL", re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"),
        gate=lambda t: "@" in t),
    Detector("IBAN", re.compile(
        _NO_ALNUM_BEFORE + r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?" + _NO_ALNUM_AFTER), iban_ok,
             gate=_has_digit_run),
    Detector("CN_ID", re.compile(_NO_DIGIT_BEFORE + r"\d{17}[\dXx]" + _NO_ALNUM_AFTER), cn_id_ok, gate=_has_digit_run),
    Detector("CREDIT_CARD", re.compile(_NO_DIGIT_BEFORE + r"\d(?:[ -]?\d){11,18}" + _NO_DIGIT_AFTER), card_ok,
             gate=_has_digit_run),
    Detector("SSN", re.compile(_NO_DIGIT_BEFORE + r"\d{3}-\d{2}-\d{4}" + _NO_DIGIT_AFTER), ssn_ok, gate=_has_digit_run),
    # Mainland-China mobile: 1[3-9] + 9 digits, optionally +86.
    Detector("PHONE", re.compile(r"(?<![0-9+])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}" + _NO_DIGIT_AFTER),
             gate=_has_digit_run),
    # International with a + prefix, validated by libphonenumber.
    Detector("PHONE", re.compile(r"(?<![0-9+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}" + _NO_DIGIT_AFTER),
             intl_phone_ok, gate=_has_digit_run),
    # North American formats with separators: (415) 555-0132, 415-555-0132, 415.555.0132.
    Detector("PHONE", re.compile(_NO_DIGIT_BEFORE + r"(?:\(\d{3}\) ?|\d{3}[-.])\d{3}[-.]\d{4}" + _NO_DIGIT_AFTER),
             gate=_has_digit_run),
    Detector("IP_ADDRESS", re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9]|\.\d)"), ip_ok, gate=_has_digit_run),
    Detector("IP_ADDRESS", re.compile(
        r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])"),
        lambda s: s.count(":") >= 2 and any(c.isalpha() or c == ":" for c in s) and ip_ok(s)
        and not re.fullmatch(r"\d{1,2}:\d{2}(?::\d{2})?", s), gate=lambda t: t.count(":") >= 2),
)


_NANP = re.compile(r"1?[2-9]\d\d[2-9]\d{6}")  # North American plan: area code and exchange never start 0 or 1


def national_phones(text: str, regions: Iterable[str]) -> Iterable[tuple[int, int, str]]:
    """Phone numbers written in a region's national format (`020 7946 0958` for GB), via libphonenumber.

    "Possible" numbers (a length the region's plan allows), not only "valid" ones (a range assigned today):
    new, unlisted and fiction ranges (Ofcom's 0115 496 0xxx) are still phone-shaped personal data. What keeps
    ordinary numbers out is the shape: a national number starts with the trunk prefix 0, or, in the North
    American plan (no trunk 0), is ten digits whose area code and exchange start 2-9.
    """
    import phonenumbers

    for region in regions:
        nanp = phonenumbers.country_code_for_region(region.upper()) == 1
        for match in phonenumbers.PhoneNumberMatcher(text, region.upper(), leniency=phonenumbers.Leniency.POSSIBLE):
            raw = match.raw_string
            before = text[match.start - 1] if match.start else " "
            if (before.isascii() and before.isalnum()) or before in "-_/":
                continue  # a digit run glued to a code (QA-0544…) is an id
            digits = re.sub(r"\D", "", raw)
            if len(digits) < 7:  # a time (09:00) or a short code: no plan's subscriber numbers are this short
                continue
            if raw.lstrip("(").startswith("0") or (nanp and not raw.startswith("+") and _NANP.fullmatch(digits)):
                yield match.start, match.end, raw


def find_pii(text: str, kinds: Iterable[str] = PII_TYPES, allow: Iterable[str] = (),
             phone_regions: Iterable[str] = ()) -> list[tuple[int, int, str, str]]:
    """Non-overlapping (start, end, kind, value) spans, earlier detectors winning overlaps.

    Values in `allow` (compared case-insensitively, ignoring spaces) are not PII: a company's own
    support address or hotline is a fact to learn, not a person's data. `phone_regions` (ISO
    country codes) adds national-format phone numbers of those countries.
    """
    wanted = set(kinds)
    allowed = {_allow_key(a) for a in allow}
    spans: list[tuple[int, int, str, str]] = []
    for det in DETECTORS:
        if det.kind not in wanted or (det.gate is not None and not det.gate(text)):
            continue
        for match in det.pattern.finditer(text):
            start, end = match.span(det.group)
            value = match.group(det.group)
            if det.validate is not None and not det.validate(value):
                continue
            if allowed and _allow_key(value) in allowed:
                continue
            if any(start < e and s < end for s, e, _, _ in spans):
                continue
            spans.append((start, end, det.kind, value))
    if "PHONE" in wanted and phone_regions and _has_digit_run(text):
        for start, end, value in national_phones(text, phone_regions):
            if (not allowed or _allow_key(value) not in allowed) and not any(start < e and s < end
                                                                               for s, e, _, _ in spans):
                spans.append((start, end, "PHONE", value))
    return sorted(spans)


class RowScrubber:
    """Replaces PII in all the texts of one row with placeholders that are consistent across the row."""

    def __init__(self, kinds: Iterable[str] = PII_TYPES, allow: Iterable[str] = (),
                 phone_regions: Iterable[str] = ()) -> None:
        self.kinds = tuple(kinds)
        self.allow = tuple(allow)
        self.phone_regions = tuple(phone_regions)
        self.mapping: dict[tuple[str, str], str] = {}
        self.per_kind: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self.mapping:
            self.per_kind[kind] += 1
            n = self.per_kind[kind]
            self.mapping[key] = f"<{kind}>" if n == 1 else f"<{kind}_{n}>"
        return self.mapping[key]

    def __call__(self, text: str) -> str:
        spans = find_pii(text, self.kinds, self.allow, self.phone_regions)
        if not spans:
            return text
        out, last = [], 0
        for start, end, kind, value in spans:
            out.append(text[last:start])
            out.append(self.placeholder(kind, value))
            self.counts[kind] += 1
            last = end
        out.append(text[last:])
        return "".join(out)


def scrub_text(text: str, kinds: Iterable[str] = PII_TYPES, allow: Iterable[str] = ()) -> tuple[str, Counter[str]]:
    """Scrub one text on its own; returns the text and counts per type."""
    scrubber = RowScrubber(kinds, allow)
    return scrubber(text), scrubber.counts

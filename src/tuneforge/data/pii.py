"""The data pipeline's PII scrubbing: the detectors live in `core.pii` (the serving guards use them too)."""

from tuneforge.core.pii import (
    DETECTORS,
    PII_TYPES,
    Detector,
    RowScrubber,
    card_ok,
    cn_id_ok,
    find_pii,
    iban_ok,
    intl_phone_ok,
    ip_ok,
    luhn_ok,
    national_phones,
    scrub_text,
    ssn_ok,
)

__all__ = ["DETECTORS", "PII_TYPES", "Detector", "RowScrubber", "card_ok", "cn_id_ok", "find_pii", "iban_ok",
           "intl_phone_ok", "ip_ok", "luhn_ok", "national_phones", "scrub_text", "ssn_ok"]

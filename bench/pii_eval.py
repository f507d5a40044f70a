"""PII precision and recall on a generated, labelled test set (English and Chinese sentences).

Valid values are generated with their real checksums (Luhn cards, mod-97 IBANs, GB 11643 IDs);
hard negatives are generated too: non-Luhn 16-digit numbers, IDs with a wrong check character,
prices, dates, times, order numbers, quantities, versions. A prediction counts as a true positive
when its type and value equal a labelled span. Usage: python bench/pii_eval.py --n 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import string
from collections import Counter

from tuneforge.data.pii import find_pii, luhn_ok

FIRST = ["alice", "bob", "chen.wei", "maria", "li_na", "j.smith", "omar", "sofia"]
DOMAINS = ["example.com", "mail.example.org", "company.co.uk", "163.com", "qq.com", "firma.de"]


def card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "55", "37", "6011"])
    length = 15 if prefix == "37" else 16
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = next(d for d in string.digits if luhn_ok(digits + d))
    full = digits + check
    return " ".join(full[i : i + 4] for i in range(0, len(full), 4)) if rng.random() < 0.5 else full


def not_luhn(rng: random.Random) -> str:
    while True:
        digits = "4" + "".join(rng.choice(string.digits) for _ in range(15))
        if not luhn_ok(digits):
            return digits


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("FR", 23), ("NL", 14), ("BE", 12), ("GB", 18)])
    bban = ("".join(rng.choice(string.ascii_uppercase) for _ in range(4)) if country in ("GB", "NL") else "") + \
        "".join(rng.choice(string.digits) for _ in range(length - (4 if country in ("GB", "NL") else 0)))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw


_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id(rng: random.Random, valid: bool = True) -> str:
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000))
    body = f"{rng.choice(['110105', '310101', '440305', '510104'])}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]
    if not valid:
        check = next(c for c in "0123456789X" if c != check)
    return body + check


def cn_mobile(rng: random.Random) -> str:
    number = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    return rng.choice([number, f"+86 {number[:3]} {number[3:7]} {number[7:]}", f"{number[:3]}-{number[3:7]}-{number[7:]}"])


def intl_phone(rng: random.Random) -> str:
    return rng.choice(["+44 20 7946 0{:03d}", "+49 30 9018{:04d}", "+33 1 42 68 {:02d} 00", "+1 415 555 0{:03d}",
                       "+32 9 555 0{:03d}"]).format(rng.randrange(100))


def national_phone(rng: random.Random) -> str:
    """Numbers written without a country code outside China/North America: hard, often missed."""
    return rng.choice(["020 7946 0{:03d}", "030 9018 2{:03d}", "01 42 68 5{:01d} 00", "09 555 01 {:02d}"]).format(
        rng.randrange(10))


def ssn(rng: random.Random) -> str:
    return f"{rng.randrange(1, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}"


def ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


def ipv6(rng: random.Random) -> str:
    return f"2001:db8:{rng.randrange(65535):x}::{rng.randrange(65535):x}"


def secret(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    return rng.choice([
        "sk-proj-" + "".join(rng.choice(alnum) for _ in range(32)),
        "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "xoxb-" + "".join(rng.choice(string.digits) for _ in range(12)) + "-" + "".join(rng.choice(alnum) for _ in range(24)),
    ])


POSITIVE_TEMPLATES = {
    "EMAIL": ["Please reply to {} today.", "请发送到{}，谢谢。", "Contact: {}"],
    "CREDIT_CARD": ["My card {} was charged twice.", "卡号{}已冻结。", "Use card number {} for the order."],
    "IBAN": ["Refund to IBAN {} please.", "我的账户是{}。"],
    "CN_ID": ["身份证号{}，请核对。", "ID number {} on file."],
    "PHONE": ["Call me at {} after 5pm.", "我的电话是{}。", "Phone: {}"],
    "SSN": ["My SSN is {} for the form.", "SSN {} on the application."],
    "IP_ADDRESS": ["The server at {} is down.", "服务器{}无法访问。"],
    "SECRET": ["I pasted my key {} by mistake.", "token: {} 泄露了"],
}
GENERATORS = {"EMAIL": lambda r: f"{r.choice(FIRST)}{r.randrange(100)}@{r.choice(DOMAINS)}", "CREDIT_CARD": card,
              "IBAN": iban, "CN_ID": cn_id, "PHONE": lambda r: (cn_mobile(r) if (x := r.random()) < 0.5 else intl_phone(r) if x < 0.8
                                    else national_phone(r)),
              "SSN": ssn, "IP_ADDRESS": lambda r: ipv4(r) if r.random() < 0.7 else ipv6(r), "SECRET": secret}
NEGATIVES = [
    lambda r: f"The kettle costs €{r.randrange(20, 900)}.{r.randrange(100):02d} and ships in {r.randrange(2, 9)} days.",
    lambda r: f"Order QA-{r.randrange(10**8):08d} of {r.randrange(1, 50)} units was placed on "
              f"{2020 + r.randrange(6)}-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d} at {r.randrange(24)}:{r.randrange(60):02d}.",
    lambda r: f"订单号{r.randrange(10**12, 10**13)}，数量{r.randrange(1, 20)}件，价格¥{r.randrange(10, 999)}.00。",
    lambda r: f"Reference number {not_luhn(r)} is not a card.",
    lambda r: f"身份证号{cn_id(r, valid=False)}校验位错误。",
    lambda r: f"Version {r.randrange(1, 9)}.{r.randrange(20)}.{r.randrange(20)} fixed {r.randrange(100, 5000)} bugs in {r.randrange(1990, 2026)}.",
    lambda r: f"Room {r.randrange(100, 2000)}, floor {r.randrange(1, 30)}, extension {r.randrange(1000, 9999)}.",
    lambda r: f"ISBN 978-{r.randrange(10)}-{r.randrange(10, 99)}-{r.randrange(100000, 999999)}-{r.randrange(10)} costs ${r.randrange(5, 80)}.99.",
]


def build(n: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    rng = random.Random(seed)
    cases = []
    kinds = list(POSITIVE_TEMPLATES)
    for i in range(n):
        if i % 3 == 2:
            cases.append((rng.choice(NEGATIVES)(rng), []))
            continue
        kind = kinds[i % len(kinds)]
        value = GENERATORS[kind](rng)
        cases.append((rng.choice(POSITIVE_TEMPLATES[kind]).format(value), [(kind, value)]))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show-errors", type=int, default=5)
    parser.add_argument("--phone-regions", nargs="*", default=[], help="e.g. GB DE FR BE")
    args = parser.parse_args()
    tp, fp, fn = Counter(), Counter(), Counter()
    errors = []
    for text, gold in build(args.n, args.seed):
        predicted = {(kind, value) for _, _, kind, value in find_pii(text, phone_regions=args.phone_regions)}
        expected = set(gold)
        for item in predicted & expected:
            tp[item[0]] += 1
        for item in predicted - expected:
            fp[item[0]] += 1
            errors.append(("FP", item, text))
        for item in expected - predicted:
            fn[item[0]] += 1
            errors.append(("FN", item, text))
    print(f"{'type':12s} {'precision':>9s} {'recall':>7s} {'tp':>5s} {'fp':>4s} {'fn':>4s}")
    for kind in [*POSITIVE_TEMPLATES, *sorted(set(fp) - set(POSITIVE_TEMPLATES))]:
        p = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
        r = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 1.0
        print(f"{kind:12s} {p:9.3f} {r:7.3f} {tp[kind]:5d} {fp[kind]:4d} {fn[kind]:4d}")
    all_tp, all_fp, all_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    print(f"{'overall':12s} {all_tp / (all_tp + all_fp):9.3f} {all_tp / (all_tp + all_fn):7.3f} "
          f"{all_tp:5d} {all_fp:4d} {all_fn:4d}")
    for kind, item, text in errors[: args.show_errors]:
        print(f"  {kind} {item}: {text}")


if __name__ == "__main__":
    main()

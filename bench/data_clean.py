"""Benchmark: normalize + exact/near dedup + PII on synthetic support rows (~200 tokens each).

Runs tuneforge's steps and a textbook baseline (per-shingle `MinHash.update`, PII regexes applied
one pattern at a time over the text with no validation) in one process and prints rows/minute and
the ratio. Usage: python bench/data_clean.py --rows 100000
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import time

from tuneforge.data.clean import dedup_rows, normalize_rows, scrub_rows, shingles
from tuneforge.data.pii import PII_TYPES

WORDS = ("order delivery refund warranty kettle grinder blender return policy customer support payment "
         "invoice address shipping express package damaged replacement filter descale temperature app "
         "account password voucher discount student loyalty points battery cable display error reset").split()


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(120)]
        if i % 10 == 0:
            words.insert(rng.randrange(len(words)), f"user{i}@example.com")
        if i % 15 == 0:
            words.insert(rng.randrange(len(words)), "+44 20 7946 0958")
        question = " ".join(words[:30]).capitalize() + "?"
        answer = " ".join(words[30:]).capitalize() + f". Costs €{rng.randint(5, 500)}.99, order QA-{i:08d}."
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}], "source": f"synthetic:{i}"})
        if i % 20 == 0 and rows:  # some exact duplicates
            rows.append(dict(rows[rng.randrange(len(rows))]))
    return rows[:n]


def ours(rows):
    rows, _ = normalize_rows(rows)
    rows, _ = dedup_rows(rows)
    rows, _ = scrub_rows(rows, list(PII_TYPES))
    return rows


def baseline(rows):
    """What a hand-glued script typically does: per-shingle MinHash updates, naive regex scrubbing."""
    import unicodedata

    from datasketch import MinHash, MinHashLSH

    email = re.compile(r"\S+@\S+")
    phone = re.compile(r"\+?\d[\d ()-]{7,}\d")
    lsh = MinHashLSH(threshold=0.85, num_perm=128)
    out = []
    for i, row in enumerate(rows):
        text = " ".join(unicodedata.normalize("NFKC", m["content"]) for m in row["messages"])
        sketch = MinHash(num_perm=128)
        for gram in shingles(text):
            sketch.update(gram)
        if lsh.query(sketch):
            continue
        lsh.insert(str(i), sketch)
        out.append(phone.sub("<PHONE>", email.sub("<EMAIL>", text)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=None, help="rows for the slower baseline")
    args = parser.parse_args()
    rows = synthetic_rows(args.rows)
    results = {}
    for name, fn, n in (("tuneforge", ours, args.rows), ("baseline", baseline, args.baseline_rows or args.rows)):
        start = time.perf_counter()
        fn(rows[:n])
        seconds = time.perf_counter() - start
        results[name] = n / seconds * 60
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{name:10s} {n:>8d} rows in {seconds:7.1f} s = {results[name]:10,.0f} rows/min "
              f"(peak RSS so far {peak_gib:.1f} GiB)")
    print(f"ratio tuneforge/baseline: {results['tuneforge'] / results['baseline']:.2f}x")


if __name__ == "__main__":
    main()

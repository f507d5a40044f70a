"""Cleaning steps on plain rows: normalize, de-duplicate (exact + MinHash LSH), filter, scrub PII.

A row is `{"messages": [{"role", "content"}, ...], "source": "file:line", ...}`. Each step takes a
list of rows and returns the rows it keeps plus a `StepStats` saying how many it kept, changed
and dropped (and why), so the report can show a funnel.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuneforge.core.config import DedupConfig, FilterConfig, NormalizeConfig, settings
from tuneforge.core.language import detect_language
from tuneforge.data.pii import RowScrubber

Row = dict[str, Any]


@dataclass
class StepStats:
    """What one step did."""

    step: str
    rows_in: int = 0
    kept: int = 0
    changed: int = 0
    dropped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rows_in": self.rows_in, "kept": self.kept, "changed": self.changed,
                "dropped": self.dropped, "reasons": dict(self.reasons), **self.details}


def row_texts(row: Row) -> list[str]:
    """Every text of a row, in order."""
    if "messages" not in row:
        return [row["text"]]
    return [m["content"] for m in row["messages"]]


def map_contents(row: Row, fn: Callable[[str], str]) -> Row:
    """A copy of the row with `fn` applied to every message content (or to its text)."""
    if "messages" not in row:
        return {**row, "text": fn(row["text"])}
    return {**row, "messages": [{**m, "content": fn(m["content"])} for m in row["messages"]]}


def _messages(row: Row) -> list[dict[str, str]]:
    return row["messages"] if "messages" in row else [{"role": "text", "content": row["text"]}]


# ---------------------------------------------------------------- normalize

# Full-width punctuation is how Chinese text is written; NFKC would turn "，" into ",". Keep it,
# and NFKC everything else (full-width letters and digits, ligatures, compatibility forms).
_KEEP_FULLWIDTH = re.compile(r"([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u3000-\u303f])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u2060\ufeff]")
_TAG = re.compile(r"<(?:script|style)\b[^>]*>[\s\S]*?</(?:script|style)>|<!--[\s\S]*?-->|</?[A-Za-z][^<>]*>")
_BLOCK_TAG = re.compile(r"<(?:br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# a fenced code block, to its closing fence or to the end of the text (an answer cut off inside its code)
_FENCED = re.compile(r"^[ \t]*(?:```|~~~).*?(?:^[ \t]*(?:```|~~~)[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def nfkc_keep_cjk_punctuation(text: str) -> str:
    parts = _KEEP_FULLWIDTH.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def strip_html(text: str) -> str:
    """Drop tags (block tags become newlines), scripts, styles and comments; unescape entities."""
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def normalize_text(text: str, nfkc: bool | None = None, html_strip: bool | None = None) -> str:
    """NFKC (keeping CJK punctuation), no control characters, collapsed spaces, at most one blank line —
    except inside fenced code blocks (``` or ~~~), whose indentation is the code's meaning (trailing spaces go).

    Unset options take `data.normalize`'s defaults (`nfkc`, `strip_html`)."""
    if nfkc is None or html_strip is None:
        opts = settings(NormalizeConfig, nfkc=nfkc, strip_html=html_strip)
        nfkc, html_strip = opts.nfkc, opts.strip_html
    if html_strip:
        text = strip_html(text)
    if nfkc:
        text = nfkc_keep_cjk_punctuation(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    parts, start = [], 0
    for block in _FENCED.finditer(text):  # fenced code keeps its indentation and inner spacing
        parts += [_prose(text[start:block.start()]), "\n".join(line.rstrip() for line in block.group().split("\n"))]
        start = block.end()
    parts.append(_prose(text[start:]))
    return "".join(parts).strip()


def _prose(text: str) -> str:
    """Spaces collapsed and stripped per line, at most one blank line (text outside fenced code)."""
    return _BLANK_LINES.sub("\n\n", "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")))


def normalize_rows(rows: list[Row], nfkc: bool | None = None, html_strip: bool | None = None,
                   cfg: NormalizeConfig | None = None) -> tuple[list[Row], StepStats]:
    """Normalize every text of every row (`normalize_text`); unset options from `cfg` or its defaults."""
    opts = settings(NormalizeConfig, cfg, nfkc=nfkc, strip_html=html_strip)
    stats = StepStats("normalize", rows_in=len(rows))
    out = []
    for row in rows:
        new = map_contents(row, lambda t: normalize_text(t, opts.nfkc, opts.strip_html))
        stats.changed += new != row
        out.append(new)
    stats.kept = len(out)
    return out, stats


# ---------------------------------------------------------------- de-duplicate

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def dedup_key(row: Row) -> str:
    """Exact-duplicate key: role-tagged, case-folded, whitespace-collapsed text of the whole row."""
    joined = "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].casefold().split())}" for m in _messages(row))
    return hashlib.sha1(joined.encode()).hexdigest()


def shingles(text: str, n: int = 3) -> set[bytes]:
    """Word n-grams, where each CJK character counts as a word (Chinese has no spaces)."""
    tokens = _TOKEN.findall(text.casefold())
    if len(tokens) < n:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1)}


def dedup_rows(rows: list[Row], exact: bool | None = None, near: bool | None = None, threshold: float | None = None,
               num_perm: int | None = None, ngram: int | None = None,
               cfg: DedupConfig | None = None) -> tuple[list[Row], StepStats]:
    """Keep the first of each exact duplicate group and of each near-duplicate (MinHash LSH) group.

    Unset options take `cfg`'s values, or `data.dedup`'s defaults."""
    opts = settings(DedupConfig, cfg, exact=exact, near=near, threshold=threshold, num_perm=num_perm, ngram=ngram)
    exact, near, num_perm, ngram = opts.exact, opts.near, opts.num_perm, opts.ngram
    stats = StepStats("dedup", rows_in=len(rows))
    seen: set[str] = set()
    lsh = minhash_cls = None
    if near:
        from datasketch import MinHash, MinHashLSH

        lsh, minhash_cls = MinHashLSH(threshold=opts.threshold, num_perm=num_perm), MinHash
    out = []
    for i, row in enumerate(rows):
        if exact:
            key = dedup_key(row)
            if key in seen:
                stats.reasons["exact_duplicate"] += 1
                continue
            seen.add(key)
        if lsh is not None and minhash_cls is not None:
            grams = shingles(" ".join(row_texts(row)), ngram)
            if grams:
                sketch = minhash_cls(num_perm=num_perm)
                sketch.update_batch(list(grams))
                if lsh.query(sketch):
                    stats.reasons["near_duplicate"] += 1
                    continue
                lsh.insert(str(i), sketch)
        out.append(row)
    stats.kept = len(out)
    stats.dropped = len(rows) - len(out)
    return out, stats


# ---------------------------------------------------------------- filter

_WORDISH = re.compile(r"[\w\s\u3000-\u303f\uff01-\uff65.,;:!?'\"()\-–—/%€$£¥@#&+*=<>\[\]]")


def repetition_ratio(text: str, n: int = 3) -> float:
    """Share of repeated word n-grams: 0 for varied text, near 1 for 'the the the the'."""
    tokens = _TOKEN.findall(text.casefold())
    total = len(tokens) - n + 1
    if total < 4:
        return 0.0
    unique = len({tuple(tokens[i : i + n]) for i in range(total)})
    return 1.0 - unique / total


def symbol_ratio(text: str) -> float:
    """Share of characters that are neither word characters, whitespace nor ordinary punctuation."""
    if not text:
        return 0.0
    return sum(1 for ch in text if not _WORDISH.match(ch)) / len(text)


def filter_rows(rows: list[Row], count_tokens: Callable[[list[Row]], list[int]] | None = None,
                min_tokens: int | None = None, max_tokens: int | None = None, max_repetition: float | None = None,
                max_symbol_ratio: float | None = None, languages: list[str] | None = None,
                cfg: FilterConfig | None = None) -> tuple[list[Row], StepStats]:
    """Drop rows with an empty answer, too few/many tokens, heavy repetition, mostly symbols, or another language.

    Rows too short for language detection are kept. Unset options take `cfg`'s values, or `data.filter`'s
    defaults.
    """
    opts = settings(FilterConfig, cfg, min_tokens=min_tokens, max_tokens=max_tokens, max_repetition=max_repetition,
                    max_symbol_ratio=max_symbol_ratio, languages=languages)
    min_tokens, max_tokens, languages = opts.min_tokens, opts.max_tokens, opts.languages
    max_repetition, max_symbol_ratio = opts.max_repetition, opts.max_symbol_ratio
    stats = StepStats("filter", rows_in=len(rows))
    lengths = count_tokens(rows) if count_tokens else [None] * len(rows)
    out = []
    for row, n_tokens in zip(rows, lengths, strict=True):
        answers = [m["content"] for m in _messages(row) if m["role"] in ("assistant", "text")]
        text = "\n".join(row_texts(row))
        reason = None
        if not any(a.strip() for a in answers):
            reason = "empty_answer"
        elif n_tokens is not None and n_tokens < min_tokens:
            reason = "too_short"
        elif n_tokens is not None and max_tokens is not None and n_tokens > max_tokens:
            reason = "too_long"
        elif repetition_ratio(text) > max_repetition:
            reason = "repetitive"
        elif symbol_ratio(text) > max_symbol_ratio:
            reason = "symbols"
        elif languages and (lang := detect_language(text)) is not None and lang not in languages:
            reason = f"language:{lang}"
        if reason:
            stats.reasons[reason] += 1
            continue
        out.append(row)
    stats.kept = len(out)
    stats.dropped = len(rows) - len(out)
    return out, stats


# ---------------------------------------------------------------- PII

def scrub_rows(rows: list[Row], kinds: list[str], allow: list[str] | None = None,
               phone_regions: list[str] | None = None) -> tuple[list[Row], StepStats]:
    """Replace PII with typed placeholders, consistently within each row; count per type.

    Also counted: the distinct answers (last assistant turns) that now hold a placeholder, and their
    placeholder types: a fact whose phone number was replaced teaches the model to answer `<PHONE>`
    (the post-run diagnosis names them; a public hotline belongs in `data.pii.allow`)."""
    stats = StepStats("pii", rows_in=len(rows))
    totals: Counter[str] = Counter()
    scrubbed_answers: dict[str, Counter[str]] = {}
    out = []
    for row in rows:
        scrubber = RowScrubber(kinds, allow or (), phone_regions or ())
        new = map_contents(row, scrubber)
        if scrubber.counts:
            stats.changed += 1
            totals.update(scrubber.counts)
            before, after = _last_answer(row), _last_answer(new)
            if after is not None and after != before:
                answer_scrubber = RowScrubber(kinds, allow or (), phone_regions or ())
                answer_scrubber(before or "")
                scrubbed_answers.setdefault(after.strip(), Counter()).update(answer_scrubber.counts)
        out.append(new)
    stats.kept = len(out)
    stats.details["found"] = dict(sorted(totals.items()))
    answer_kinds: Counter[str] = Counter()
    for counts in scrubbed_answers.values():
        answer_kinds.update(set(counts))
    stats.details["answers_with_placeholders"] = len(scrubbed_answers)
    stats.details["answer_placeholder_types"] = dict(sorted(answer_kinds.items()))
    return out, stats


def _last_answer(row: Row) -> str | None:
    """The last assistant turn of a chat row (None for text rows and rows without one)."""
    replies = [m["content"] for m in row.get("messages") or [] if m.get("role") == "assistant"]
    return replies[-1] if replies else None

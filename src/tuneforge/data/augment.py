"""Augmentation of training rows: entity swap, synonym replacement, paraphrase / back-translation.

Two kinds of back-translation: `paraphrase.mode: back_translation` round-trips the user turns through a pivot
language (a paraphrase); `back_translation` turns target-language text into rows synthetic source → real
target (machine translation's back-translation, the rows a translation model learns from).

Only the training split is augmented (an augmented copy of a training row in validation would be a
leak). Every generated row carries `meta.augmented` (the method) and `meta.augmented_from` (the
source row), and the total is capped by `max_new_rows`. Synonyms and paraphrases change the user's
wording only; answers keep their facts. Entity swap changes every turn consistently.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.core.errors import ConfigError
from tuneforge.data.clean import StepStats

Row = dict[str, Any]

# A small built-in list for customer-service English and Chinese; extend it with augment.synonyms.
BUILTIN_SYNONYMS: dict[str, list[str]] = {
    "buy": ["purchase", "order"], "purchase": ["buy"], "order": ["purchase"],
    "return": ["send back"], "refund": ["reimbursement", "money back"], "help": ["assist", "support"],
    "problem": ["issue", "trouble"], "issue": ["problem"], "broken": ["damaged", "faulty"],
    "damaged": ["broken"], "fast": ["quick"], "quick": ["fast"], "cost": ["price"], "price": ["cost"],
    "cheap": ["inexpensive"], "start": ["begin"], "fix": ["repair"], "repair": ["fix"],
    "tell me": ["let me know"], "how long": ["how much time"], "can i": ["am i able to"],
    "delivery": ["shipping"], "shipping": ["delivery"], "contact": ["reach"], "phone": ["call"],
    "item": ["product"], "product": ["item"], "want": ["would like"], "need": ["require"],
    "购买": ["买"], "退货": ["退回商品"], "问题": ["疑问"], "价格": ["费用"], "帮助": ["协助"],
    "快递": ["物流"], "多久": ["多长时间"], "坏了": ["损坏了"],
}


def _sub_phrase(text: str, phrase: str, replacement: str) -> str:
    ascii_phrase = phrase.isascii()
    pattern = rf"(?<![\w]){re.escape(phrase)}(?![\w])" if ascii_phrase else re.escape(phrase)
    flags = re.IGNORECASE if ascii_phrase else 0

    def keep_case(match: re.Match[str]) -> str:
        word = match.group(0)
        return replacement[:1].upper() + replacement[1:] if word[:1].isupper() else replacement

    return re.sub(pattern, keep_case, text, count=1, flags=flags)


def synonym_variant(row: Row, synonyms: dict[str, list[str]], rng: random.Random) -> Row | None:
    """Replace one or two phrases of the user turns with synonyms; None when nothing matched."""
    changed = False
    messages = []
    for message in row["messages"]:
        content = message["content"]
        if message["role"] == "user":
            lowered = content.casefold()
            candidates = [p for p in synonyms if p.casefold() in lowered]
            rng.shuffle(candidates)
            for phrase in candidates[:2]:
                new = _sub_phrase(content, phrase, rng.choice(synonyms[phrase]))
                changed |= new != content
                content = new
        messages.append({**message, "content": content})
    return {**row, "messages": messages} if changed else None


def entity_variant(row: Row, groups: list[list[str]], rng: random.Random) -> Row | None:
    """Swap each entity found with another member of its group, consistently across all turns."""
    text = "\n".join(m["content"] for m in row["messages"])
    mapping = {}
    for group in groups:
        present = [e for e in group if e in text]
        for entity in present:
            others = [e for e in group if e != entity]
            if others:
                mapping[entity] = rng.choice(others)
    if not mapping:
        return None
    pattern = re.compile("|".join(re.escape(e) for e in sorted(mapping, key=len, reverse=True)))
    return {**row, "messages": [{**m, "content": pattern.sub(lambda x: mapping[x.group(0)], m["content"])}
                                for m in row["messages"]]}


PARAPHRASE_PROMPT = 'Rewrite this question in other words: "{text}"'
TRANSLATE_PROMPT = "Translate the following text into {language}. Reply with the translation only.\n\n{text}"


def make_rewriter(model: str | None, base_url: str | None, api_model: str | None, api_key_env: str,
                  max_tokens: int, temperature: float,
                  where: str = "data.augment.paraphrase") -> Callable[[list[str]], list[str]]:
    """A function prompts → answers, through a local tuneforge model or an OpenAI-compatible endpoint."""
    if base_url:
        from openai import OpenAI

        client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env, "not-needed"))
        name = api_model or client.models.list().data[0].id

        def remote(prompts: list[str]) -> list[str]:
            answers = []
            for prompt in prompts:
                reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                                       max_tokens=max_tokens, temperature=temperature)
                answers.append(reply.choices[0].message.content or "")
            return answers

        return remote
    if not model:
        raise ConfigError(f"{where}: set `model` (a tuneforge model) or `base_url` (an endpoint)")
    from tuneforge.models import load
    from tuneforge.models.generate import SamplingParams, generate_chat

    loaded = load(model)
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, seed=0)

    def local(prompts: list[str]) -> list[str]:
        out = []
        for start in range(0, len(prompts), 16):
            convs = [[{"role": "user", "content": p}] for p in prompts[start : start + 16]]
            out += [g.text for g in generate_chat(loaded, convs, params)]
        return out

    return local


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def clean_rewrite(text: str) -> str:
    """A model's rewrite without surrounding whitespace and quotes."""
    return text.strip().strip('"“”„«»「」').strip()


def acceptable_rewrite(original: str, rewrite: str) -> bool:
    """A usable paraphrase: non-empty, different, similar length, same numbers, still a question if it was one.

    Small models often answer the question instead of rewriting it; these checks reject that.
    """
    rewrite = clean_rewrite(rewrite)
    if not rewrite or rewrite.casefold() == original.strip().casefold():
        return False
    if not 0.5 * len(original) <= len(rewrite) <= 2 * len(original) + 20:
        return False
    if sorted(_NUMBER.findall(original)) != sorted(_NUMBER.findall(rewrite)):
        return False
    asks = original.rstrip().endswith(("?", "？"))
    return not asks or rewrite.endswith(("?", "？"))


def same_language(original: str, rewrite: str) -> bool:
    """False when both texts are long enough to judge and are detected in different languages."""
    from tuneforge.core.language import detect_language

    before, after = detect_language(original, min_letters=10), detect_language(rewrite, min_letters=10)
    return before is None or after is None or before == after


def paraphrase_rows(rows: list[Row], rewrite: Callable[[list[str]], list[str]], mode: str,
                    pivot_language: str, source_language: str) -> list[tuple[Row, Row]]:
    """(source, variant) pairs: the last user turn paraphrased or back-translated; unusable rewrites are skipped."""
    originals = []
    for row in rows:
        users = [i for i, m in enumerate(row["messages"]) if m["role"] == "user"]
        originals.append(users[-1] if users else None)
    texts = [row["messages"][i]["content"] for row, i in zip(rows, originals, strict=True) if i is not None]
    if mode == "back_translation":
        pivot = rewrite([TRANSLATE_PROMPT.format(language=pivot_language, text=t) for t in texts])
        rewritten = rewrite([TRANSLATE_PROMPT.format(language=source_language, text=p) for p in pivot])
    else:
        rewritten = rewrite([PARAPHRASE_PROMPT.format(text=t) for t in texts])
    out = []
    answers = iter(rewritten)
    for row, index in zip(rows, originals, strict=True):
        if index is None:
            continue
        new_text = clean_rewrite(next(answers))
        original = row["messages"][index]["content"]
        if not acceptable_rewrite(original, new_text):
            continue
        if mode == "back_translation" and not same_language(original, new_text):
            continue  # the way back never left the pivot language (a small model answers in French)
        messages = [dict(m) for m in row["messages"]]
        messages[index]["content"] = new_text
        out.append((row, {**row, "messages": messages}))
    return out


def read_texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) of each non-empty line of a .txt file, or of each JSONL row's `text`."""
    from tuneforge.core.errors import DataError
    from tuneforge.data.formats import read_jsonl

    if not path.is_file():
        raise DataError(f"data.augment.back_translation.files: {path} does not exist")
    if path.suffix == ".jsonl":
        out = []
        for number, item in read_jsonl(path):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise DataError(f"{path}:{number}: expected an object with a string 'text'")
            if item["text"].strip():
                out.append((f"{path}:{number}", item["text"].strip()))
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(f"{path}:{number}", line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def acceptable_back_translation(target: str, source: str, require_language: str | None) -> str | None:
    """Why a synthetic source is unusable (None: usable): empty, a copy of the target, far off in length,
    other numbers, or detected in another language than `require_language`."""
    if not source:
        return "empty"
    if source.casefold() == target.casefold():
        return "copied"
    if not 0.4 * len(target) <= len(source) <= 2.5 * len(target) + 10:
        return "length"
    if sorted(_NUMBER.findall(target)) != sorted(_NUMBER.findall(source)):
        return "numbers"
    if require_language:
        from tuneforge.core.language import detect_language

        code = detect_language(source, min_letters=10)
        if code is not None and code != require_language:
            return "language"
    return None


def back_translation_rows(texts: list[tuple[str, str]], translate: Callable[[list[str]], list[str]],
                          cfg: Any) -> tuple[list[tuple[Row, Row]], Counter[str]]:
    """(source, row) pairs — user: prefix + the text translated into `cfg.source_language`, assistant: the
    text itself — and the count of rejected translations by reason."""
    template = cfg.prompt or TRANSLATE_PROMPT
    prompts = [template.replace("{language}", cfg.source_language).replace("{text}", text) for _, text in texts]
    rejected: Counter[str] = Counter()
    out = []
    for (where, target), answer in zip(texts, translate(prompts), strict=True):
        source = clean_rewrite(answer.split("\n\n")[0])  # small models add an explanation after a blank line
        reason = acceptable_back_translation(target, source, cfg.require_language)
        if reason:
            rejected[reason] += 1
            continue
        row = {"messages": [{"role": "user", "content": cfg.prefix + source},
                            {"role": "assistant", "content": target}]}
        out.append(({"source": where}, row))
    return out, rejected


def augment_rows(rows: list[Row], cfg: Any, seed: int) -> tuple[list[Row], StepStats]:
    """Original rows plus capped, marked variants from each enabled method."""
    stats = StepStats("augment", rows_in=len(rows))
    rng = random.Random(seed)
    chat_rows = [r for r in rows if "messages" in r]
    generated: list[Row] = []
    budget = cfg.max_new_rows

    def add(variant: Row | None, method: str, source: Row) -> None:
        nonlocal budget
        if variant is None or budget <= 0:
            return
        meta = {**source.get("meta", {}), "augmented": method, "augmented_from": source.get("source")}
        generated.append({**variant, "meta": meta, "source": f"{source.get('source')}#{method}"})
        stats.reasons[method] += 1
        budget -= 1

    if cfg.entity_groups:
        for row in chat_rows:
            for _ in range(cfg.per_row):
                add(entity_variant(row, cfg.entity_groups, rng), "entity_swap", row)
    synonyms = {**(BUILTIN_SYNONYMS if cfg.builtin_synonyms else {}), **cfg.synonyms}
    if synonyms:
        for row in chat_rows:
            for _ in range(cfg.per_row):
                add(synonym_variant(row, synonyms, rng), "synonym", row)
    if cfg.paraphrase is not None and budget > 0:
        p = cfg.paraphrase
        rewrite = make_rewriter(p.model, p.base_url, p.api_model, p.api_key_env, p.max_tokens, p.temperature)
        picked = rng.sample(chat_rows, min(len(chat_rows), budget))
        for source, variant in paraphrase_rows(picked, rewrite, p.mode, p.pivot_language, p.source_language):
            add(variant, p.mode, source)
    if cfg.back_translation is not None and budget > 0:
        b = cfg.back_translation
        texts = [t for path in b.files for t in read_texts(Path(path))]
        texts = rng.sample(texts, min(len(texts), budget))
        translate = make_rewriter(b.model, b.base_url, b.api_model, b.api_key_env, b.max_tokens, b.temperature,
                                  "data.augment.back_translation")
        made, rejected = back_translation_rows(texts, translate, b)
        for source, row in made:
            add(row, "back_translation", source)
        stats.details["back_translation_rejected"] = dict(rejected)
    stats.changed = len(generated)
    stats.kept = len(rows) + len(generated)
    stats.details["generated"] = len(generated)
    return rows + generated, stats

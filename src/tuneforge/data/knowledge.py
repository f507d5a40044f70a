"""Knowledge augmentation by rule, offline: more ways to ask for each fact of the training split.

A fact is one distinct assistant answer of a single-turn row; its phrasings are the user turns that
lead to it. A 135M model tuned on three phrasings of a fact learns those phrasings, not the fact
(#23). Three levers, each measured by `tuneforge bench recipe`:

- `rewrites`: each training question rewritten by rule: a framing template ("Quick question: …",
  "请问…"), the question cut down to its content words ("Kestrel X4 flight time?"), a built-in
  synonym swapped in;
- `cloze`: a question made from the answer itself, the span that carries the fact (numbers, amounts,
  names the questions do not mention) replaced by a question word: "The Kestrel X4 flies for up to
  what on one battery?" — the answer's own words become a way in to it;
- `statements`: the answer as a plain-text row (loss on every token), the fact stated once more.

Generated rows carry `meta.augmented` (the lever) and `meta.augmented_from` (the source row).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any

from tuneforge.core.config import KnowledgeConfig
from tuneforge.data.augment import BUILTIN_SYNONYMS, synonym_variant
from tuneforge.data.clean import StepStats

Row = dict[str, Any]

_CJK = re.compile(r"[\u3400-\u9fff]")
MAX_PHRASINGS = 20  # more rows per answer: a label or a canned reply, not a fact
_EN_TEMPLATES = ("Quick question: {q}", "{q} Please answer briefly.", "I'd like to know: {q}", "Hi! {q}",
                 "{q} Thanks.", "Can you help? {q}")
_ZH_TEMPLATES = ("请问{q}", "{q}谢谢。", "我想了解一下：{q}", "你好，{q}", "麻烦问一下，{q}")
_EN_QUESTION_WORDS = {"what", "which", "who", "when", "where", "why", "how", "is", "are", "do", "does", "can",
                      "could", "will", "would", "should", "may", "if", "after", "once", "until", "from"}
_EN_STOP = set("""a an the is are was were be been do does did i me my we our you your it its of to in on at for
with by from and or can could would should will shall may might must please tell what which who whom whose when
where why how much many long there this that these those am have has had any some if about into after before than
then so just still get got""".split())
# Cut as substrings, so 需要 → 需, 不能 → 不, 了解 → 解: whole-word cutting and unit-keeping cloze
# questions (八点 → 几点) were tried and measured worse on qinghe-clinic (4 → 1 of 24, #23).
_ZH_STOP = ("请问", "吗", "呢", "吧", "啊", "的", "了", "一下", "我", "要", "想", "能", "可以", "怎么", "什么", "多少")
# Spans that carry a fact: numbers with their unit-ish neighbours, amounts, codes.
_EN_FACT = re.compile(r"[€$£]\d[\d.,]*\d|[€$£]\d|(?<![\w-])\d[\d.,:×x%-]*(?:\s?(?:%|[A-Za-z]{1,12}(?:/[a-z]+)?))?")
_ZH_UNIT = r"(?:小时|分钟|工作日|[天元点号楼次年月日岁度周层])"
_ZH_FACT = re.compile(r"[€$¥]?[\d零一二三四五六七八九十百千万两.:\-]{1,12}(?:个)?" + _ZH_UNIT)
_NAME = re.compile(r"(?:[A-Z][\w-]*(?:\s[A-Z][\w-]*)*)")
_ZH_QUOTED = re.compile(r"[“\"「]([^”\"」]+)[”\"」]")


def is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def facts_of(rows: list[Row]) -> dict[str, list[Row]]:
    """Single-turn chat rows grouped by their answer: answer text → the rows that ask for it."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        messages = row.get("messages") or []
        turns = [m for m in messages if m["role"] in ("user", "assistant")]
        if len(turns) == 2 and turns[0]["role"] == "user" and turns[1]["role"] == "assistant":
            groups[turns[1]["content"].strip()].append(row)
    return {answer: rows for answer, rows in groups.items() if _is_fact(answer, len(rows))}


def _is_fact(answer: str, phrasings: int) -> bool:
    """A statement a few questions lead to, not a label that hundreds of rows share ("positive")."""
    size = len(_CJK.findall(answer)) if is_chinese(answer) else len(answer.split())
    return phrasings <= MAX_PHRASINGS and size >= (6 if is_chinese(answer) else 4)


def _question(row: Row) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def _with_question(row: Row, question: str) -> Row:
    messages = [dict(m, content=question) if m["role"] == "user" else dict(m) for m in row["messages"]]
    return {**row, "messages": messages}


def template_rewrite(question: str, rng: random.Random) -> str:
    """The question inside a framing template of its language."""
    if is_chinese(question):
        return rng.choice(_ZH_TEMPLATES).format(q=question)
    template = rng.choice(_EN_TEMPLATES)
    first = question.split(" ", 1)[0].casefold()
    keep_capital = template.startswith("{q}") or first not in _EN_QUESTION_WORDS
    return template.format(q=question if keep_capital else question[:1].lower() + question[1:])


def keyword_rewrite(question: str) -> str | None:
    """The question cut down to its content words ("Kestrel X4 flight time?"); None when nothing is cut."""
    if is_chinese(question):
        short = question
        for word in _ZH_STOP:
            short = short.replace(word, "")
        short = short.strip("？?，,。 ")
        return short + "？" if short and len(short) < len(question.strip("？?")) else None
    words = re.findall(r"[\w€$£%.,:'-]+", question)
    kept = [w.strip(".,:") for w in words if w.strip(".,:").casefold() not in _EN_STOP]
    kept = [w for w in kept if w]
    if not kept or len(kept) == len(words):
        return None
    return " ".join(kept) + "?"


def cloze_question(answer: str, questions: list[str]) -> str | None:
    """A question made from the answer: its fact-carrying spans replaced by a question word; None if it has none."""
    asked = " ".join(questions).casefold()
    if is_chinese(answer):
        words = [m.group(0) for m in _ZH_FACT.finditer(answer) if m.group(0) not in asked]
        words += [m.group(1) for m in _ZH_QUOTED.finditer(answer) if m.group(1) not in asked]
        if not words:
            return None
        text = answer.rstrip("。.!！")
        for span in words:
            text = text.replace(span, "多少" if re.search(r"\d|[零一二三四五六七八九十百千万两]", span) else "什么", 1)
        return text + "？"
    spans = [(m.start(), m.end()) for m in _EN_FACT.finditer(answer) if m.group(0).casefold() not in asked]
    spans += [(m.start(), m.end()) for m in _NAME.finditer(answer)
              if m.start() > 0 and not any(w.casefold() in asked for w in m.group(0).split())]
    if not spans:
        return None
    text, end = "", 0
    for start, stop in sorted(spans):
        if start < end:
            continue
        text += answer[end:start] + "what"
        end = stop
    text = (text + answer[end:]).rstrip(".! ")
    text = re.sub(r"\bwhat(?:\W+what)+\b", "what", text)
    return text[:1].upper() + text[1:] + "?"


def knowledge_rows(rows: list[Row], cfg: KnowledgeConfig, seed: int) -> tuple[list[Row], StepStats]:
    """The training rows plus the rule-based variants of each fact `cfg` asks for (capped by max_new_rows)."""
    stats = StepStats("knowledge", rows_in=len(rows))
    rng = random.Random(seed)
    generated: list[Row] = []
    seen = {_question(r).casefold() for r in rows if r.get("messages")}

    def add(variant: Row | None, lever: str, source: Row) -> None:
        if variant is None or len(generated) >= cfg.max_new_rows:
            return
        if "messages" in variant:
            asked = _question(variant).casefold()
            if asked in seen:
                return
            seen.add(asked)
        meta = {**source.get("meta", {}), "augmented": lever, "augmented_from": source.get("source")}
        generated.append({**variant, "meta": meta, "source": f"{source.get('source')}#{lever}"})
        stats.reasons[lever] += 1

    groups = facts_of(rows)
    for answer, sources in groups.items():
        questions = [_question(r) for r in sources]
        if cfg.rewrites:
            for row, question in zip(sources, questions, strict=True):
                for _ in range(cfg.rewrites):
                    add(_with_question(row, template_rewrite(question, rng)), "template", row)
                short = keyword_rewrite(question)
                add(_with_question(row, short) if short else None, "keywords", row)
                add(synonym_variant(row, BUILTIN_SYNONYMS, rng), "synonym", row)
        if cfg.cloze:
            cloze = cloze_question(answer, questions)
            if cloze is not None:
                add(_with_question(sources[0], cloze), "cloze", sources[0])
                for _ in range(cfg.cloze - 1):
                    add(_with_question(sources[0], template_rewrite(cloze, rng)), "cloze", sources[0])
        if cfg.statements:
            add({"text": answer}, "statement", sources[0])
    stats.changed = len(generated)
    stats.kept = len(rows) + len(generated)
    stats.details.update({"generated": len(generated), "facts": len(groups)})
    return rows + generated, stats
